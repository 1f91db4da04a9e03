/* Listening sockets, bound by the main thread before workers start. */
#ifndef STRANGLER_LISTEN_H
#define STRANGLER_LISTEN_H

#include <stddef.h>

#include "strangler/config.h"

/* Binds one SO_REUSEPORT socket per worker for `addr`. The first bind
 * resolves port 0; the others bind the port it got, so every worker
 * listens on the same port. fds[n_workers] receives them. Writes the bound
 * "HOST:PORT" to bound (IPv6 bracketed). Returns 0, or -1 with errbuf set. */
int sg_listen_bind(const struct sg_hostport *addr, size_t n_workers, int *fds, char *bound, size_t bound_len,
                   char *errbuf, size_t errlen);

/* "HOST:PORT" of a bound socket. */
void sg_sockname(int fd, char *out, size_t len);

#endif
