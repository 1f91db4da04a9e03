#include "strangler/tls.h"

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ALPN protocols in wire format (length-prefixed), in our preference. */
struct alpn {
    unsigned char wire[64];
    unsigned len;
};

static void openssl_error(char *errbuf, size_t errlen, const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    snprintf(errbuf, errlen, "%s %s: %s", what, path ? path : "", reason);
}

/* RFC 7301 3.2: the server picks; we prefer our own order (h2 first by
 * default), and a client offering nothing we speak gets no ALPN rather
 * than a failed handshake (curl without ALPN still gets HTTP/1.1). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    const struct alpn *ours = arg;
    unsigned char *sel = NULL;
    unsigned char sel_len = 0;
    if (SSL_select_next_proto(&sel, &sel_len, ours->wire, ours->len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    *outlen = sel_len;
    return SSL_TLSEXT_ERR_OK;
}

static void alpn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

static int alpn_index(void)
{
    static int idx = -1;
    /* First call happens on the main thread before workers start. */
    if (idx < 0)
        idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, alpn_free);
    return idx;
}

static bool set_alpn(SSL_CTX *ctx, const struct sg_tls_server *cfg, bool h2_ok)
{
    struct alpn *a = calloc(1, sizeof *a);
    if (!a)
        return false;
    for (size_t i = 0; i < cfg->n_alpn; i++) {
        size_t n = strlen(cfg->alpn[i]);
        if ((!h2_ok && strcmp(cfg->alpn[i], "h2") == 0) || n == 0 || a->len + 1 + n > sizeof a->wire)
            continue;
        a->wire[a->len++] = (unsigned char)n;
        memcpy(a->wire + a->len, cfg->alpn[i], n);
        a->len += (unsigned)n;
    }
    SSL_CTX_set_ex_data(ctx, alpn_index(), a);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, a);
    return true;
}

static bool set_client_ca(SSL_CTX *ctx, const char *ca, char *errbuf, size_t errlen)
{
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        openssl_error(errbuf, errlen, "cannot load client_ca", ca);
        return false;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
    if (names)
        SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return true;
}

SSL_CTX *sg_tls_server_ctx(const struct sg_tls_server *cfg, bool h2_ok, char *errbuf, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_error(errbuf, errlen, "cannot create TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Server cipher preference, no renegotiation, no compression: the
     * usual hardening; ciphers are OpenSSL 3's defaults. */
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->certificate) != 1) {
        openssl_error(errbuf, errlen, "cannot load certificate", cfg->certificate);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->private_key, SSL_FILETYPE_PEM) != 1) {
        openssl_error(errbuf, errlen, "cannot load private key", cfg->private_key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_error(errbuf, errlen, "private key does not match certificate", cfg->private_key);
        goto fail;
    }
    if (cfg->client_ca && !set_client_ca(ctx, cfg->client_ca, errbuf, errlen))
        goto fail;
    if (!set_alpn(ctx, cfg, h2_ok)) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

bool sg_tls_alpn_is_h2(SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return len == 2 && memcmp(p, "h2", 2) == 0;
}

static void tls_set_free(void *arg)
{
    struct sg_tls_set *t = arg;
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        SSL_CTX_free(t->ctx[i]);
    for (size_t i = 0; i < t->n_upstreams; i++)
        SSL_CTX_free(t->upstream[i]);
    free(t->upstream);
    free(t);
}

SSL_CTX *sg_tls_client_ctx(const struct sg_upstream_tls *t, bool h2, char *errbuf, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        openssl_error(errbuf, errlen, "cannot create TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (t->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = t->ca ? SSL_CTX_load_verify_locations(ctx, t->ca, NULL) : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            openssl_error(errbuf, errlen, "cannot load ca", t->ca ? t->ca : "(system store)");
            goto fail;
        }
    }
    if (t->certificate && (SSL_CTX_use_certificate_chain_file(ctx, t->certificate) != 1 ||
                           SSL_CTX_use_PrivateKey_file(ctx, t->private_key, SSL_FILETYPE_PEM) != 1 ||
                           SSL_CTX_check_private_key(ctx) != 1)) {
        openssl_error(errbuf, errlen, "cannot load client certificate/key", t->certificate);
        goto fail;
    }
    static const unsigned char http11[] = "\x08http/1.1", h2_only[] = "\x02h2";
    if (h2)
        SSL_CTX_set_alpn_protos(ctx, h2_only, sizeof h2_only - 1);
    else
        SSL_CTX_set_alpn_protos(ctx, http11, sizeof http11 - 1);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL *sg_tls_client_ssl(SSL_CTX *ctx, const char *name, bool verify)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    unsigned char ip[16];
    bool literal = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    /* RFC 6066 3: SNI carries host names only, never addresses. */
    if (!literal)
        SSL_set_tlsext_host_name(ssl, name);
    if (verify) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        int ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(param, name) : SSL_set1_host(ssl, name);
        if (ok != 1) {
            SSL_free(ssl);
            return NULL;
        }
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

struct bufferevent *sg_tls_client_bev(struct event_base *base, SSL_CTX *ctx, const char *name, bool verify,
                                      int options)
{
    SSL *ssl = sg_tls_client_ssl(ctx, name, verify);
    if (!ssl)
        return NULL;
    struct bufferevent *bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, options);
    if (!bev) {
        SSL_free(ssl);
        return NULL;
    }
    /* Peers that close without close_notify are the norm, not an error. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

/* Upstream client contexts, for upstreams with TLS (http1 with a tls block, h2). */
static bool attach_upstreams(struct sg_tls_set *t, const struct sg_config *cfg, char *errbuf, size_t errlen)
{
    t->upstream = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof *t->upstream);
    if (!t->upstream) {
        snprintf(errbuf, errlen, "out of memory");
        return false;
    }
    t->n_upstreams = cfg->n_upstreams;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct sg_upstream *u = &cfg->upstreams[i];
        if (!u->tls)
            continue;
        char err[512];
        if (!(t->upstream[i] = sg_tls_client_ctx(u->tls, u->protocol == SG_PROTO_H2, err, sizeof err))) {
            snprintf(errbuf, errlen, "%s:%u:%u: upstream %s: %s", cfg->path, u->mark.line, u->mark.col, u->name, err);
            return false;
        }
    }
    return true;
}

bool sg_tls_attach(struct sg_config *cfg, bool h2_ok, char *errbuf, size_t errlen)
{
    struct sg_tls_set *t = calloc(1, sizeof *t + cfg->n_listeners * sizeof t->ctx[0]);
    if (!t) {
        snprintf(errbuf, errlen, "out of memory");
        return false;
    }
    t->n = cfg->n_listeners;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (!cfg->listeners[i].tls)
            continue;
        char err[512];
        if (!(t->ctx[i] = sg_tls_server_ctx(cfg->listeners[i].tls, h2_ok, err, sizeof err))) {
            const struct sg_listener *l = &cfg->listeners[i];
            snprintf(errbuf, errlen, "%s:%u:%u: listener %s: %s", cfg->path, l->tls_mark.line, l->tls_mark.col,
                     l->name, err);
            tls_set_free(t);
            return false;
        }
    }
    if (!attach_upstreams(t, cfg, errbuf, errlen)) {
        tls_set_free(t);
        return false;
    }
    cfg->runtime = t;
    cfg->runtime_free = tls_set_free;
    return true;
}

SSL_CTX *sg_tls_upstream_ctx(const struct sg_config *cfg, size_t upstream)
{
    const struct sg_tls_set *t = cfg->runtime;
    return t && upstream < t->n_upstreams ? t->upstream[upstream] : NULL;
}

SSL_CTX *sg_tls_ctx(const struct sg_config *cfg, size_t listener)
{
    const struct sg_tls_set *t = cfg->runtime;
    return t && listener < t->n ? t->ctx[listener] : NULL;
}
