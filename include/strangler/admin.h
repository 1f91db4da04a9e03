/* The admin port (main thread): GET /metrics /ready /live /config, POST /reload. */
#ifndef STRANGLER_ADMIN_H
#define STRANGLER_ADMIN_H

#include <stddef.h>

#include "strangler/config.h"

struct event_base;
struct sg_server;
struct sg_admin;

/* Binds and serves; writes the bound "HOST:PORT" into bound. NULL on error. */
struct sg_admin *sg_admin_start(struct event_base *base, struct sg_server *srv, const struct sg_hostport *addr,
                                char *bound, size_t bound_len, char *errbuf, size_t errlen);
void sg_admin_free(struct sg_admin *a);

#endif
