/* TLS for listeners (OpenSSL 3). */
#ifndef STRANGLER_TLS_H
#define STRANGLER_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "strangler/config.h"

struct bufferevent;
struct event_base;

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

/* A server context for one listener: certificate chain and key, TLS 1.2
 * and 1.3 with OpenSSL's modern defaults, ALPN from cfg->alpn (server
 * preference; "h2" only when `h2_ok`), and with client_ca: client
 * certificates required and verified (mTLS). NULL with errbuf set. */
SSL_CTX *sg_tls_server_ctx(const struct sg_tls_server *cfg, bool h2_ok, char *errbuf, size_t errlen);

/* The contexts of every TLS listener of a snapshot, indexed like
 * cfg->listeners (NULL for plaintext ones). Built when a configuration is
 * installed, so certificate files are re-read on every reload; attached to
 * the snapshot (cfg->runtime). Connections hold their own reference
 * (SSL_new), so a context outlives the snapshot while they need it. */
struct sg_tls_set {
    size_t n; /* listeners */
    SSL_CTX **upstream; /* per upstream (cfg->upstreams order), NULL: plaintext */
    size_t n_upstreams;
    SSL_CTX *ctx[];
};

/* Builds and attaches the set; false with errbuf set as
 * "FILE:LINE:COLUMN: listener NAME: problem" (the listener's tls block). */
bool sg_tls_attach(struct sg_config *cfg, bool h2_ok, char *errbuf, size_t errlen);
/* The listener's context in this snapshot, or NULL. */
SSL_CTX *sg_tls_ctx(const struct sg_config *cfg, size_t listener);
/* The client context of an upstream with `tls`, or NULL. */
SSL_CTX *sg_tls_upstream_ctx(const struct sg_config *cfg, size_t upstream);

/* A client context for an upstream: TLS 1.2+, the peer verified against
 * `ca` (or the system store) unless verify is false, optional client
 * certificate, ALPN h2 (protocol h2) or http/1.1. */
SSL_CTX *sg_tls_client_ctx(const struct sg_upstream_tls *t, bool h2, char *errbuf, size_t errlen);

/* Prepares a client connection: SNI (unless the name is an IP literal)
 * and the name or address the certificate must match. */
SSL *sg_tls_client_ssl(SSL_CTX *ctx, const char *name, bool verify);
/* A bufferevent for such a connection, not connected yet (connect it with
 * bufferevent_socket_connect); dirty shutdowns allowed. */
struct bufferevent *sg_tls_client_bev(struct event_base *base, SSL_CTX *ctx, const char *name, bool verify,
                                      int options);

/* True when the handshake chose "h2". */
bool sg_tls_alpn_is_h2(SSL *ssl);

#endif
