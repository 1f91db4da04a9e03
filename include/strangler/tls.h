/* TLS for listeners (OpenSSL 3). */
#ifndef STRANGLER_TLS_H
#define STRANGLER_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "strangler/config.h"

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
    size_t n;
    SSL_CTX *ctx[];
};

/* Builds and attaches the set; false with errbuf set as
 * "FILE:LINE:COLUMN: listener NAME: problem" (the listener's tls block). */
bool sg_tls_attach(struct sg_config *cfg, bool h2_ok, char *errbuf, size_t errlen);
/* The listener's context in this snapshot, or NULL. */
SSL_CTX *sg_tls_ctx(const struct sg_config *cfg, size_t listener);

/* True when the handshake chose "h2". */
bool sg_tls_alpn_is_h2(SSL *ssl);

#endif
