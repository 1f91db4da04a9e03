/* HTTP/2 to upstreams (protocol: h2c | h2): one multiplexed nghttp2
 * client session per pooled connection, many exchanges' streams on it.
 * A stream is embedded in its exchange (like sg_h1c) and reports through
 * the same owner ops, so the exchange drives both protocols alike. */
#ifndef STRANGLER_H2_CLIENT_H
#define STRANGLER_H2_CLIENT_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "strangler/h1.h"
#include "strangler/h1_client.h"
#include "strangler/pool.h"

struct evbuffer;
struct event;

struct sg_h2c_stream {
    struct sg_h2c_sess *sess; /* NULL when detached */
    int32_t id; /* 0 until submitted */
    const struct sg_h1c_owner_ops *ops;
    void *owner;
    unsigned gen; /* bumped on begin/detach, like sg_h1c */
    /* request */
    struct evbuffer *hdrs; /* name\0value\0 ... as emitted */
    struct evbuffer *body; /* DATA not yet handed to nghttp2 */
    struct evbuffer *req_trailers; /* name\0value\0 ..., sent after the DATA */
    bool body_eof, has_body, deferred;
    /* response */
    struct sg_h1_head head, trailers;
    int status;
    int64_t content_length;
    bool head_done, done, got_bytes, paused;
    size_t unconsumed; /* DATA delivered while paused, not yet consumed */
    TAILQ_ENTRY(sg_h2c_stream) link;
};

TAILQ_HEAD(sg_h2c_stream_list, sg_h2c_stream);

enum sg_h2c_state { SG_H2S_CONNECTING, SG_H2S_READY, SG_H2S_CLOSED };

/* One upstream HTTP/2 connection. */
struct sg_h2c_sess {
    struct sg_pool *pool;
    struct sg_uconn *uc;
    nghttp2_session *ng;
    enum sg_h2c_state state;
    bool goaway, in_recv;
    uint32_t max_streams;
    struct sg_h2c_stream_list streams;
    struct sg_acquire *waiters[16]; /* exchanges waiting for this connection */
    unsigned n_waiters;
    struct sg_acquire acq; /* the pool's connect on our behalf */
    struct event *idle_timer;
    TAILQ_ENTRY(sg_h2c_sess) link;
};

TAILQ_HEAD(sg_h2c_sess_list, sg_h2c_sess);

/* A session with room for one more stream, existing or new. READY: *out is
 * usable now. PENDING: a->cb(a->arg, NULL, err) runs later; without err the
 * session is in a->session. FAILED: *err. */
enum sg_acquire_result sg_h2c_acquire(struct sg_pool *p, struct sg_acquire *a, struct sg_h2c_sess **out,
                                      const char **err);
/* Withdraws a waiting acquire (called by sg_acquire_cancel). */
void sg_h2c_cancel(struct sg_acquire *a);

void sg_h2c_begin(struct sg_h2c_stream *st, struct sg_h2c_sess *s, const struct sg_h1c_owner_ops *ops, void *owner);
/* sg_header_emit_fn collecting the request's regular fields (ctx = stream). */
void sg_h2c_emit(void *ctx, struct sg_str name, struct sg_str value);
/* Submits HEADERS (pseudo-headers first) and, with a body, a data source. */
bool sg_h2c_submit(struct sg_h2c_stream *st, struct sg_str method, struct sg_str scheme, struct sg_str authority,
                   struct sg_str path, bool has_body);
void sg_h2c_body(struct sg_h2c_stream *st, const char *p, size_t n);
void sg_h2c_end(struct sg_h2c_stream *st, const struct sg_headers *trailers);
bool sg_h2c_congested(const struct sg_h2c_stream *st);
void sg_h2c_pause(struct sg_h2c_stream *st, bool pause);
/* Leaves the session; an unfinished stream is reset (CANCEL). */
void sg_h2c_detach(struct sg_h2c_stream *st);
void sg_h2c_free(struct sg_h2c_stream *st);

/* Pool teardown. */
void sg_h2c_close_all(struct sg_pool *p);

#endif
