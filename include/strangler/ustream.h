/* The upstream side of one request, whatever the upstream speaks: an
 * HTTP/1.1 connection (sg_h1c) or a stream on an HTTP/2 session
 * (sg_h2c_stream). The primary exchange and shadows drive it alike; both
 * kinds report through the same sg_h1c_owner_ops. */
#ifndef STRANGLER_USTREAM_H
#define STRANGLER_USTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "strangler/h1_client.h"
#include "strangler/h2_client.h"

struct sg_ustream {
    bool h2; /* chosen from the upstream's protocol before use */
    struct sg_h1c h1c;
    struct sg_h2c_stream h2s;
};

/* What an acquire gives: an HTTP/1.1 connection, or an HTTP/2 session
 * with room for one more stream, as u->h2 says. */
struct sg_ustream_conn {
    struct sg_uconn *uc;
    struct sg_h2c_sess *sess;
};

/* Gets one from the pool for u's protocol. READY: *got is filled now;
 * PENDING: a->cb(a->arg, uc, err) runs later, and sg_ustream_arrived gives
 * what came; FAILED: *err. `fresh` (HTTP/1.1) skips idle connections. */
enum sg_acquire_result sg_ustream_acquire(const struct sg_ustream *u, struct sg_pool *p, struct sg_acquire *a,
                                          bool fresh, struct sg_ustream_conn *got, const char **err);
/* In the acquire callback (without error): what arrived for `a`. */
struct sg_ustream_conn sg_ustream_arrived(struct sg_acquire *a, struct sg_uconn *uc);

void sg_ustream_body(struct sg_ustream *u, const char *p, size_t n);
/* The request body is complete; trailers (may be NULL) follow it when the
 * framing can carry them (chunked HTTP/1.1, HTTP/2). */
void sg_ustream_end(struct sg_ustream *u, const struct sg_headers *trailers);
bool sg_ustream_congested(const struct sg_ustream *u);
void sg_ustream_pause(struct sg_ustream *u, bool pause);
/* Lets go: an HTTP/1.1 connection is reused only when clean, an unfinished
 * HTTP/2 stream is reset. */
void sg_ustream_detach(struct sg_ustream *u);
void sg_ustream_free(struct sg_ustream *u);

#endif
