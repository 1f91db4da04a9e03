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

/* True when the handshake chose "h2". */
bool sg_tls_alpn_is_h2(SSL *ssl);

#endif
