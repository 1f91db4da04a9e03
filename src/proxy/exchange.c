/* The life of one proxied request.
 *
 *   start -> route -> attempt -> (acquire) -> attach: head + body out
 *         -> response head -> body ... -> end -> ex_finish
 *   any failure before the response head: ex_upstream_failed -> retry
 *         (ex_attempt) or a local 502/503/504 -> ex_finish
 *   any failure after it: the client side is aborted -> ex_finish
 *
 * ex_finish is the only exit: it logs, counts, gives the upstream
 * connection back and tells the downstream; the memory goes after the
 * current callbacks have returned (sg_worker_defer). */
#include "strangler/exchange.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/access_log.h"
#include "strangler/clock.h"
#include "strangler/deadline.h"
#include "strangler/h1.h"
#include "strangler/h1_client.h"
#include "strangler/h2_client.h"
#include "strangler/health.h"
#include "strangler/retry_budget.h"
#include "strangler/ustream.h"
#include "strangler/log.h"
#include "strangler/mem.h"
#include "strangler/mirror.h"
#include "strangler/pool.h"
#include "strangler/router.h"
#include "strangler/worker.h"

/* A body up to this size is held so that the request can be replayed on a
 * retry; beyond it, a request whose body has started upstream is final. */
#define REPLAY_MAX (64u * 1024u)
/* Body bytes waiting for an upstream connection before the client is paused. */
#define PENDING_HIGH (256u * 1024u)
#define REQUEST_ID_MAX 200

struct sg_exchange {
    struct sg_worker *w;
    struct sg_wsnap *snap;
    const struct sg_downstream_ops *ops;
    void *ds;
    struct sg_request req;
    const struct sg_route *route;
    const struct sg_destination *dest;
    struct sg_upstream_rt *ups;
    struct sg_pool *pool;
    /* Endpoints this request tried (the last EX_TRIED), avoided by retries. */
#define EX_TRIED 8
    struct sg_pool *tried[EX_TRIED];
    unsigned n_tried;
    struct sg_acquire acq;
    struct sg_ustream up; /* HTTP/1.1 connection or HTTP/2 stream */
    bool acquiring, attached, fresh;
    bool sent; /* the request head went to an upstream connection (idempotency rule) */
    unsigned tries; /* attempts started */
    bool stale_retry_used;
    struct evbuffer *pending; /* body not yet handed to a connection */
    struct evbuffer *replay; /* the whole body so far, while <= REPLAY_MAX */
    bool replay_lost;
    uint64_t body_sent; /* body bytes handed to the current/last connection */
    uint64_t bytes_in, bytes_out;
    bool req_done, resp_started, resp_done, finished, ds_gone;
    int status;
    const char *error;
    /* The route's timeout, kept lazily (deadline.h): the timer stays on the
     * event base across the exchanges that reuse this struct (ex_alloc),
     * so a request that finishes in time adds nothing to libevent's timer
     * heap and deletes nothing from it. Assigned on first use
     * (event_initialized tells). */
    struct event route_timer;
    struct sg_deadline route_due;
    struct event try_timer;
    bool try_timer_on;
    uint64_t start_mono_us, start_wall_us;
    char request_id[REQUEST_ID_MAX + 1];
    size_t request_id_len;
    char *target; /* rewritten path + query sent upstream */
    size_t target_len;
    /* Shadows being fed this request's body (and the response's summary,
     * for compare): a slot is cleared by the shadow if it ends first
     * (mirror.h). Slot i is mirror i's shadow, slot n_mirrors + i its noise
     * probe, if any. */
    struct sg_shadow **shadows;
    size_t n_shadows;
    const struct sg_headers *req_trailers; /* the client's, owned by the downstream */
    struct sg_str *mirrored; /* mirror upstream names, for the access log */
    size_t n_mirrored;
};

static void ex_finish(struct sg_exchange *ex, bool close);
static void ex_local(struct sg_exchange *ex, int status, const char *text);
static const struct sg_h1c_owner_ops primary_ops;

/* Lets go of the upstream side (see sg_ustream_detach). */
static void up_detach(struct sg_exchange *ex)
{
    sg_ustream_detach(&ex->up);
    ex->attached = false;
}

static void ex_attempt(struct sg_exchange *ex);
static void ex_upstream_failed(struct sg_exchange *ex, const char *err, bool stale);

/* An exchange (1.8 KB) is the largest allocation of every request, past
 * malloc's per-thread cache: with many requests in flight (160 HTTP/2
 * streams in the benchmark) each one went through malloc's bins, which
 * perf put at a tenth of the proxy's CPU. Each worker thread keeps up to
 * EX_CACHE finished exchanges for the next ones. Not under AddressSanitizer,
 * so that a use after free of an exchange is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define EX_CACHE 0
#else
#define EX_CACHE 128
#endif
/* A cached exchange keeps the buffers of its HTTP/1.1 client's response
 * head and trailers too: the next exchange parses into them. */
struct ex_cached {
    struct sg_exchange *ex;
    struct sg_h1_head head, trailers;
};
static _Thread_local struct {
    struct ex_cached v[EX_CACHE + 1];
    unsigned n;
} ex_cache;

static bool ex_cache_room(void)
{
#if EX_CACHE > 0
    return ex_cache.n < EX_CACHE;
#else
    return false;
#endif
}

static struct sg_exchange *ex_alloc(void)
{
    if (ex_cache.n) {
        struct ex_cached *c = &ex_cache.v[--ex_cache.n];
        struct sg_exchange *ex = c->ex;
        /* The route timer may still be on the event base: its bytes stay. */
        struct event timer = ex->route_timer;
        uint64_t fires_ms = ex->route_due.fires_ms;
        memset(ex, 0, sizeof *ex);
        ex->route_timer = timer;
        ex->route_due.fires_ms = fires_ms;
        ex->up.h1c.head = c->head;
        ex->up.h1c.trailers = c->trailers;
        return ex;
    }
    return calloc(1, sizeof(struct sg_exchange));
}

/* Frees the exchange's upstream side (first, as before anything else of
 * it goes), keeping its client's head buffers aside when the exchange
 * itself will be kept. */
static void ex_free_upstream(struct sg_exchange *ex, struct ex_cached *keep)
{
    if (ex_cache_room()) { /* taken out, so that the client's free leaves them */
        keep->ex = ex;
        keep->head = ex->up.h1c.head;
        keep->trailers = ex->up.h1c.trailers;
        sg_h1_head_reset(&keep->head);
        sg_h1_head_reset(&keep->trailers);
        ex->up.h1c.head = ex->up.h1c.trailers = (struct sg_h1_head){ 0 };
    }
    sg_ustream_free(&ex->up);
}

/* Before the memory of an exchange goes: its route timer may still be on
 * the event base (it stays there across reuses, see ex_alloc). */
static void route_timer_off(struct sg_exchange *ex)
{
    if (event_initialized(&ex->route_timer))
        event_del(&ex->route_timer);
}

/* The exchange itself: kept for the next one when ex_free_upstream set it
 * aside (there was room then, and nothing since has used the cache),
 * freed otherwise. */
static void ex_dealloc(struct sg_exchange *ex, const struct ex_cached *keep)
{
    if (keep->ex) {
        ex_cache.v[ex_cache.n++] = *keep;
        return;
    }
    route_timer_off(ex);
    free(ex);
}

void sg_exchange_thread_exit(void)
{
    while (ex_cache.n) {
        struct ex_cached *c = &ex_cache.v[--ex_cache.n];
        sg_h1_head_free(&c->head);
        sg_h1_head_free(&c->trailers);
        route_timer_off(c->ex);
        free(c->ex);
    }
}

struct sg_exchange *sg_exchange_new(struct sg_worker *w, const struct sg_downstream_ops *ops, void *ds,
                                    const struct sg_request *req)
{
    struct sg_exchange *ex = ex_alloc();
    if (!ex)
        return NULL;
    ex->w = w;
    ex->snap = sg_wsnap_pin(w);
    ex->ops = ops;
    ex->ds = ds;
    ex->req = *req;
    ex->start_mono_us = sg_mono_us();
    ex->start_wall_us = sg_wall_us();
    return ex;
}

static void ex_free(void *arg)
{
    struct sg_exchange *ex = arg;
    struct ex_cached keep = { 0 };
    ex_free_upstream(ex, &keep);
    if (ex->pending)
        evbuffer_free(ex->pending);
    if (ex->replay)
        evbuffer_free(ex->replay);
    sg_mem_free(ex->target);
    sg_mem_free(ex->shadows);
    sg_mem_free(ex->mirrored);
    sg_wsnap_unpin(ex->snap);
    ex_dealloc(ex, &keep);
}

/* ---- timers ------------------------------------------------------------ */

static void timer_stop(struct event *ev, bool *on)
{
    if (*on) {
        event_del(ev);
        *on = false;
    }
}

static void route_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_exchange *ex = arg;
    if (!sg_deadline_due(&ex->route_due, &ex->route_timer))
        return; /* finished in time (or not yet due): nothing to do */
    ex->error = sg_err_timeout;
    if (ex->resp_started) {
        ex->ops->abort(ex->ds);
        ex_finish(ex, true);
        return;
    }
    sg_outlier_report(ex->w, ex->ups, ex->pool, SG_OUTCOME_FAIL);
    ex_local(ex, 504, "upstream timed out\n");
}

static void try_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_exchange *ex = arg;
    ex->try_timer_on = false;
    sg_acquire_cancel(&ex->acq);
    ex->acquiring = false;
    up_detach(ex);
    ex_upstream_failed(ex, sg_err_timeout, false);
}

static void timer_start(struct sg_exchange *ex, struct event *ev, bool *on, uint64_t ms,
                        void (*cb)(evutil_socket_t, short, void *))
{
    if (ms == 0)
        return;
    if (!*on)
        event_assign(ev, ex->w->base, -1, 0, cb, ex);
    struct timeval tv = sg_tv_ms(ms);
    event_add(ev, &tv);
    *on = true;
}

/* ---- local answers ----------------------------------------------------- */

static bool is_grpc(const struct sg_exchange *ex)
{
    const struct sg_header *ct = sg_headers_get(ex->req.headers, SG_STR_LIT("content-type"));
    return ct && sg_str_has_prefix(ct->value, SG_STR_LIT("application/grpc"));
}

/* gRPC status codes for the proxy's own answers (grpc/doc/statuscodes.md,
 * and the HTTP-to-gRPC mapping of grpc/doc/http-grpc-status-mapping.md). */
static int grpc_code(int status)
{
    switch (status) {
    case 404: return 12; /* UNIMPLEMENTED */
    case 413: case 431: return 8; /* RESOURCE_EXHAUSTED */
    case 502: case 503: return 14; /* UNAVAILABLE */
    case 504: return 4; /* DEADLINE_EXCEEDED */
    default: return 13; /* INTERNAL */
    }
}

/* A gRPC client expects HTTP 200 with the outcome in grpc-status: answer
 * with an empty message stream and the status as trailers. */
static void answer_grpc(struct sg_exchange *ex, int status, const char *text)
{
    char code[8], msg[160];
    snprintf(code, sizeof code, "%d", grpc_code(status));
    size_t n = 0;
    for (const char *t = text; *t && *t != '\n' && n + 1 < sizeof msg; t++)
        msg[n++] = *t; /* ASCII without controls: nothing to percent-encode */
    msg[n] = '\0';
    struct sg_headers head, trailers;
    sg_headers_init(&head);
    sg_headers_init(&trailers);
    sg_headers_add(&head, SG_STR_LIT("content-type"), SG_STR_LIT("application/grpc"));
    sg_headers_add(&trailers, SG_STR_LIT("grpc-status"), sg_str_c(code));
    sg_headers_add(&trailers, SG_STR_LIT("grpc-message"), sg_str_c(msg));
    ex->ops->head(ex->ds, 200, &head, NULL, -1, false);
    ex->ops->end(ex->ds, &trailers);
    sg_headers_free(&head);
    sg_headers_free(&trailers);
}

/* The proxy's own answer. ex->status keeps the HTTP status it stands for
 * (also for gRPC), so logs and error ratios count it. */
static void ex_answer(struct sg_exchange *ex, int status, const char *text, bool close)
{
    ex->status = status;
    if (is_grpc(ex))
        answer_grpc(ex, status, text);
    else
        ex->ops->local(ex->ds, status, text, close);
}

static void ex_local(struct sg_exchange *ex, int status, const char *text)
{
    /* A body still arriving cannot be skipped reliably: close after. */
    bool close = !ex->req_done;
    ex_answer(ex, status, text, close);
    ex_finish(ex, close);
}

/* ---- start ------------------------------------------------------------- */

static void ex_request_id(struct sg_exchange *ex)
{
    const struct sg_header *h = sg_headers_get(ex->req.headers, SG_STR_LIT("x-request-id"));
    if (h && sg_request_id_valid(h->value) && h->value.len <= REQUEST_ID_MAX) {
        memcpy(ex->request_id, h->value.p, h->value.len);
        ex->request_id_len = h->value.len;
    } else {
        sg_worker_request_id(ex->w, ex->request_id);
        ex->request_id_len = 36;
    }
}

static bool ex_rewrite(struct sg_exchange *ex)
{
    const struct sg_route *r = ex->route;
    size_t cap = ex->req.path.len + (r->rewrite_prefix ? strlen(r->rewrite_prefix) : 0) + ex->req.query.len + 2;
    ex->target = sg_mem_malloc(cap);
    if (!ex->target)
        return false;
    size_t n = sg_route_rewrite(r, ex->req.path, ex->target, cap);
    if (n == SIZE_MAX)
        return false;
    if (ex->req.query.len) {
        ex->target[n++] = '?';
        memcpy(ex->target + n, ex->req.query.p, ex->req.query.len);
        n += ex->req.query.len;
    }
    ex->target_len = n;
    return true;
}

static void ex_start_shadows(struct sg_exchange *ex)
{
    const struct sg_route *r = ex->route;
    ex->shadows = sg_mem_calloc(2 * r->n_mirrors, sizeof *ex->shadows);
    ex->mirrored = sg_mem_calloc(r->n_mirrors, sizeof *ex->mirrored);
    if (!ex->shadows || !ex->mirrored)
        return;
    ex->n_shadows = 2 * r->n_mirrors;
    struct sg_forward_request_opts fwd = {
        .client_addr = ex->req.client_addr,
        .proto = ex->req.scheme,
        .request_id = { ex->request_id, ex->request_id_len },
        .edits = &r->request_headers,
    };
    for (size_t i = 0; i < r->n_mirrors; i++) {
        const struct sg_mirror *m = &r->mirrors[i];
        if (!sg_mirror_selects(m, ex->req.method, sg_worker_random(ex->w)))
            continue;
        struct sg_shadow_request sr = {
            .route = r,
            .mirror = m,
            .method = ex->req.method,
            .target = { ex->target, ex->target_len },
            .host = ex->req.host,
            .protocol = ex->req.protocol,
            .headers = ex->req.headers,
            .forward = &fwd,
            .content_length = ex->req.content_length,
        };
        if (sg_shadow_start(ex->w, ex->snap, &sr, &ex->shadows[i])) {
            ex->mirrored[ex->n_mirrored++] = sg_str_c(m->upstream->name);
            if (m->compare)
                sg_shadow_probe_start(ex->w, ex->snap, &sr, ex->dest->upstream, &ex->shadows[r->n_mirrors + i]);
        }
    }
}

static const struct sg_destination *ex_pick(struct sg_exchange *ex)
{
    struct sg_str key;
    uint64_t point = sg_sticky_key(ex->route, ex->req.headers, &key) ? sg_sticky_hash(key)
                                                                     : sg_worker_random(ex->w);
    return sg_split_pick(ex->route, point);
}

void sg_exchange_start(struct sg_exchange *ex)
{
    const struct sg_config *cfg = ex->snap->cfg;
    ex->req_done = ex->req.content_length == 0;
    ex_request_id(ex);
    struct sg_request_view view = { ex->req.method, ex->req.path, ex->req.host, ex->req.headers };
    ex->route = sg_route_match(cfg, &view);
    if (!ex->route) {
        ex_local(ex, 404, "no route matches this request\n");
        return;
    }
    if (cfg->limits.max_request_body_bytes && ex->req.content_length > 0 &&
        (uint64_t)ex->req.content_length > cfg->limits.max_request_body_bytes) {
        ex_local(ex, 413, "request body too large\n");
        return;
    }
    ex->dest = ex_pick(ex);
    if (!ex->dest || !ex_rewrite(ex)) {
        ex_local(ex, 503, "no destination available\n");
        return;
    }
    ex->ups = &ex->snap->ups[ex->dest->upstream->index];
    ex->up.h2 = ex->dest->upstream->protocol != SG_PROTO_HTTP1;
    sg_retry_note_request(ex->w, ex->snap, ex->route);
    if (ex->route->n_mirrors)
        ex_start_shadows(ex);
    if (ex->route->timeout_ms) {
        if (!event_initialized(&ex->route_timer))
            event_assign(&ex->route_timer, ex->w->base, -1, 0, route_timeout_cb, ex);
        sg_deadline_set(&ex->route_due, &ex->route_timer, ex->route->timeout_ms);
    }
    if (ex->req.expect_continue && !ex->req_done)
        ex->ops->expect_continue(ex->ds);
    ex_attempt(ex);
}

/* ---- attempts ---------------------------------------------------------- */

static void send_buffer(struct sg_exchange *ex, struct evbuffer *buf, bool drain)
{
    struct evbuffer_ptr pos;
    struct evbuffer_iovec v;
    evbuffer_ptr_set(buf, &pos, 0, EVBUFFER_PTR_SET);
    while (evbuffer_peek(buf, -1, &pos, &v, 1) > 0) {
        sg_ustream_body(&ex->up, v.iov_base, v.iov_len);
        ex->body_sent += v.iov_len;
        if (evbuffer_ptr_set(buf, &pos, v.iov_len, EVBUFFER_PTR_ADD) < 0)
            break;
    }
    if (drain)
        evbuffer_drain(buf, evbuffer_get_length(buf));
}

static struct sg_forward_request_opts forward_opts(const struct sg_exchange *ex)
{
    return (struct sg_forward_request_opts){
        .client_addr = ex->req.client_addr,
        .proto = ex->req.scheme,
        .request_id = { ex->request_id, ex->request_id_len },
        .upgrade = ex->req.upgrade,
        .edits = &ex->route->request_headers,
    };
}

/* The Host / :authority the upstream sees: the client's, or for an
 * HTTP/1.0 request without Host the endpoint's. */
static struct sg_str upstream_host(const struct sg_exchange *ex, char *buf, size_t len)
{
    if (ex->req.host.len)
        return ex->req.host;
    int n = snprintf(buf, len, "%s:%u", ex->pool->host, ex->pool->port);
    return (struct sg_str){ buf, n > 0 ? (size_t)n : 0 };
}

/* After the head: the body so far (or its replay), the end if known. */
static void ex_attached(struct sg_exchange *ex)
{
    bool replaying = ex->body_sent > 0;
    ex->body_sent = 0;
    ex->sent = true;
    if (replaying) {
        send_buffer(ex, ex->replay, false);
        if (ex->pending)
            evbuffer_drain(ex->pending, evbuffer_get_length(ex->pending));
    } else if (ex->pending) {
        send_buffer(ex, ex->pending, true);
    }
    if (ex->req_done)
        sg_ustream_end(&ex->up, ex->req_trailers);
    timer_start(ex, &ex->try_timer, &ex->try_timer_on, ex->route->retries.per_try_timeout_ms, try_timeout_cb);
    if (!sg_exchange_request_congested(ex))
        ex->ops->pause_request(ex->ds, false);
}

static void ex_attach(struct sg_exchange *ex, struct sg_uconn *uc)
{
    char hostbuf[300];
    struct sg_str host = upstream_host(ex, hostbuf, sizeof hostbuf);
    struct sg_h1c_request r = { ex->req.method, { ex->target, ex->target_len }, host, ex->req.content_length,
                                ex->req.head_method, ex->req.upgrade };
    ex->attached = true;
    struct sg_wbuf wb;
    sg_h1c_begin(&ex->up.h1c, uc, &primary_ops, ex, &r, &wb);
    struct sg_forward_request_opts o = forward_opts(ex);
    sg_headers_forward_request(ex->req.headers, &o, sg_wbuf_field, &wb);
    sg_h1c_head_done(&ex->up.h1c, &wb);
    ex_attached(ex);
}

/* HTTP/2 upstream: pseudo-headers from the request, the same forwarded
 * fields (lower-cased), Host carried as :authority (RFC 9113 8.3.1). */
static void ex_attach_h2(struct sg_exchange *ex, struct sg_h2c_sess *s)
{
    char hostbuf[300];
    struct sg_str host = upstream_host(ex, hostbuf, sizeof hostbuf);
    ex->attached = true;
    sg_h2c_begin(&ex->up.h2s, s, &primary_ops, ex);
    struct sg_forward_request_opts o = forward_opts(ex);
    o.upgrade = false;
    sg_headers_forward_request(ex->req.headers, &o, sg_h2c_emit, &ex->up.h2s);
    struct sg_str scheme = ex->ups->cfg->protocol == SG_PROTO_H2 ? SG_STR_LIT("https") : SG_STR_LIT("http");
    if (!sg_h2c_submit(&ex->up.h2s, ex->req.method, scheme, host, (struct sg_str){ ex->target, ex->target_len },
                       ex->req.content_length != 0)) {
        up_detach(ex);
        ex_upstream_failed(ex, sg_err_reset, false);
        return;
    }
    ex_attached(ex);
}

static void ex_connect(struct sg_exchange *ex, struct sg_ustream_conn c)
{
    if (ex->up.h2)
        ex_attach_h2(ex, c.sess);
    else
        ex_attach(ex, c.uc);
}

static void ex_acquired(void *arg, struct sg_uconn *uc, const char *err)
{
    struct sg_exchange *ex = arg;
    ex->acquiring = false;
    if (err)
        ex_upstream_failed(ex, err, false);
    else
        ex_connect(ex, sg_ustream_arrived(&ex->acq, uc));
}

static void ex_attempt(struct sg_exchange *ex)
{
    ex->tries++;
    size_t n_tried = ex->n_tried < EX_TRIED ? ex->n_tried : EX_TRIED;
    ex->pool = sg_upstream_pick(ex->ups, ex->w, (const struct sg_pool *const *)ex->tried, n_tried, false);
    if (!ex->pool) { /* every endpoint failed its health check or is ejected: 503 now */
        ex_upstream_failed(ex, sg_err_no_endpoint, false);
        return;
    }
    ex->pool->in_flight++;
    ex->acq = (struct sg_acquire){ ex_acquired, ex, NULL, NULL };
    struct sg_ustream_conn got;
    const char *err = NULL;
    bool fresh = ex->fresh;
    ex->fresh = false;
    switch (sg_ustream_acquire(&ex->up, ex->pool, &ex->acq, fresh, &got, &err)) {
    case SG_ACQ_READY:
        ex_connect(ex, got);
        break;
    case SG_ACQ_PENDING:
        ex->acquiring = true;
        timer_start(ex, &ex->try_timer, &ex->try_timer_on, ex->route->retries.per_try_timeout_ms,
                    try_timeout_cb);
        break;
    case SG_ACQ_FAILED:
        ex_upstream_failed(ex, err, false);
        break;
    }
}

static uint32_t retry_kind(const char *err)
{
    if (err == sg_err_connect || err == sg_err_connect_timeout || err == sg_err_resolve || err == sg_err_tls)
        return SG_RETRY_CONNECT_FAILURE;
    if (err == sg_err_reset || err == sg_err_invalid_response)
        return SG_RETRY_RESET;
    if (err == sg_err_timeout)
        return SG_RETRY_504;
    return 0;
}

/* A request can go again if nothing of its body reached an upstream, or
 * all of it is held in the replay buffer. */
static bool ex_replayable(const struct sg_exchange *ex)
{
    return ex->body_sent == 0 || !ex->replay_lost;
}

static bool ex_may_retry(struct sg_exchange *ex, uint32_t kind, bool stale)
{
    if (!ex_replayable(ex) || ex->finished)
        return false;
    /* Once a non-idempotent request (POST, PATCH, ...) has gone to an
     * upstream, it may have been acted on: it is never sent again, not
     * even after a stale pooled connection. Before that (connect failures)
     * it is as safe as any other. */
    if (ex->sent && !sg_retry_idempotent(ex->req.method, ex->req.headers))
        return false;
    /* A pooled connection the upstream had closed just as we reused it:
     * the request never reached the application. One free retry, on a new
     * connection, as nginx and Envoy do. */
    if (stale && !ex->stale_retry_used) {
        ex->stale_retry_used = true;
        ex->fresh = true;
        return true;
    }
    const struct sg_retry_policy *p = &ex->route->retries;
    unsigned used = ex->tries - (ex->stale_retry_used ? 1u : 0u);
    return (p->on & kind) && used <= p->attempts &&
           sg_retry_take(ex->w, ex->snap, ex->route, ex->dest->upstream->name);
}

static void ex_release_pool(struct sg_exchange *ex)
{
    if (ex->pool) {
        ex->pool->in_flight--;
        ex->tried[ex->n_tried++ % EX_TRIED] = ex->pool;
        ex->pool = NULL;
    }
}

static void ex_upstream_failed(struct sg_exchange *ex, const char *err, bool stale)
{
    timer_stop(&ex->try_timer, &ex->try_timer_on);
    if (!stale) /* a pooled connection the upstream closed says nothing against it */
        sg_outlier_report(ex->w, ex->ups, ex->pool, sg_outcome_of_error(err));
    ex_release_pool(ex);
    ex->error = err;
    if (ex->resp_started) {
        ex->ops->abort(ex->ds);
        ex_finish(ex, true);
        return;
    }
    if (ex_may_retry(ex, retry_kind(err), stale)) {
        sg_debug("retrying %.*s after: %s", (int)ex->request_id_len, ex->request_id, err);
        ex_attempt(ex);
        return;
    }
    int status = err == sg_err_timeout                                                          ? 504
                 : err == sg_err_overloaded || err == sg_err_no_endpoint || err == sg_err_no_fd ? 503
                                                                                                : 502;
    char text[128];
    snprintf(text, sizeof text, "%s\n", err);
    ex_local(ex, status, text);
}

/* ---- request body ------------------------------------------------------ */

static void hold_for_replay(struct sg_exchange *ex, const char *p, size_t n)
{
    if (ex->replay_lost)
        return;
    if (!ex->replay && !(ex->replay = evbuffer_new())) {
        ex->replay_lost = true;
        return;
    }
    if (evbuffer_get_length(ex->replay) + n > REPLAY_MAX) {
        ex->replay_lost = true;
        evbuffer_free(ex->replay);
        ex->replay = NULL;
        return;
    }
    evbuffer_add(ex->replay, p, n);
}

void sg_exchange_request_body(struct sg_exchange *ex, const char *p, size_t n)
{
    ex->bytes_in += n;
    for (size_t i = 0; i < ex->n_shadows; i++)
        if (ex->shadows[i])
            sg_shadow_body(ex->shadows[i], p, n);
    if (ex->finished || ex->resp_done)
        return;
    const struct sg_config *cfg = ex->snap->cfg;
    if (cfg->limits.max_request_body_bytes && ex->bytes_in > cfg->limits.max_request_body_bytes) {
        sg_exchange_reject(ex, 413, "request body too large\n");
        return;
    }
    if (!ex->resp_started)
        hold_for_replay(ex, p, n);
    if (ex->attached) {
        sg_ustream_body(&ex->up, p, n);
        ex->body_sent += n;
        return;
    }
    if (!ex->pending && !(ex->pending = evbuffer_new()))
        return;
    evbuffer_add(ex->pending, p, n);
}

void sg_exchange_request_end(struct sg_exchange *ex, const struct sg_headers *trailers)
{
    ex->req_done = true;
    ex->req_trailers = trailers && trailers->n ? trailers : NULL;
    for (size_t i = 0; i < ex->n_shadows; i++)
        if (ex->shadows[i])
            sg_shadow_body_end(ex->shadows[i]);
    if (ex->finished)
        return;
    if (ex->attached)
        sg_ustream_end(&ex->up, ex->req_trailers);
    if (ex->resp_done)
        ex_finish(ex, false);
}

bool sg_exchange_request_congested(const struct sg_exchange *ex)
{
    if (ex->finished)
        return false;
    if (ex->attached)
        return sg_ustream_congested(&ex->up);
    return ex->pending && evbuffer_get_length(ex->pending) > PENDING_HIGH;
}

static void up_writable(void *owner)
{
    struct sg_exchange *ex = owner;
    if ( !ex->finished && !sg_exchange_request_congested(ex))
        ex->ops->pause_request(ex->ds, false);
}

void sg_exchange_reject(struct sg_exchange *ex, int status, const char *text)
{
    if (ex->finished)
        return;
    sg_acquire_cancel(&ex->acq);
    ex->acquiring = false;
    up_detach(ex);
    if (ex->resp_started) {
        ex->ops->abort(ex->ds);
        ex_finish(ex, true);
        return;
    }
    ex_answer(ex, status, text, true);
    ex_finish(ex, true);
}

/* ---- response ---------------------------------------------------------- */

static uint32_t status_retry_bit(int status)
{
    return status == 502 ? SG_RETRY_502 : status == 503 ? SG_RETRY_503 : status == 504 ? SG_RETRY_504 : 0;
}

static void up_interim(void *owner, int status, const struct sg_headers *h)
{
    struct sg_exchange *ex = owner;
    /* 100 Continue was answered by the proxy itself (Expect is not forwarded). */
    if (status != 100)
        ex->ops->interim(ex->ds, status, h);
}

static void up_head(void *owner, int status, const struct sg_headers *h, int64_t content_length)
{
    struct sg_exchange *ex = owner;
    timer_stop(&ex->try_timer, &ex->try_timer_on);
    sg_outlier_report(ex->w, ex->ups, ex->pool, status >= 500 ? SG_OUTCOME_FAIL : SG_OUTCOME_OK);
    uint32_t bit = status_retry_bit(status);
    if (bit && (ex->route->retries.on & bit) && ex_may_retry(ex, bit, false)) {
        up_detach(ex);
        ex_release_pool(ex);
        ex_attempt(ex);
        return;
    }
    ex->resp_started = true;
    ex->status = status;
    if (ex->replay) {
        evbuffer_free(ex->replay);
        ex->replay = NULL;
        ex->replay_lost = true;
    }
    ex->ops->head(ex->ds, status, h, &ex->route->response_headers, content_length, false);
    for (size_t i = 0; i < ex->n_shadows; i++)
        if (ex->shadows[i])
            sg_shadow_primary_head(ex->shadows[i], status, h);
}

static void up_body(void *owner, const char *p, size_t n)
{
    struct sg_exchange *ex = owner;
    ex->bytes_out += n;
    ex->ops->body(ex->ds, p, n);
    for (size_t i = 0; i < ex->n_shadows; i++)
        if (ex->shadows[i])
            sg_shadow_primary_body(ex->shadows[i], p, n);
    if (ex->ops->congested(ex->ds))
        sg_ustream_pause(&ex->up, true);
}

void sg_exchange_downstream_writable(struct sg_exchange *ex)
{
    if (ex->attached && !ex->finished)
        sg_ustream_pause(&ex->up, false);
}

static void up_end(void *owner, const struct sg_headers *trailers)
{
    struct sg_exchange *ex = owner;
    ex->resp_done = true;
    ex->ops->end(ex->ds, trailers);
    up_detach(ex);
    /* A response that ends before the request body: the rest of the body
     * cannot be skipped safely, so the client connection closes. */
    ex_finish(ex, !ex->req_done);
}

static void up_error(void *owner, const char *err)
{
    struct sg_exchange *ex = owner;
    bool stale = !ex->up.h2 && ex->up.h1c.uc && ex->up.h1c.uc->requests > 1 && !ex->up.h1c.got_bytes;
    up_detach(ex);
    ex_upstream_failed(ex, err, stale);
}

static void up_upgrade(void *owner, const struct sg_headers *h)
{
    struct sg_exchange *ex = owner;
    timer_stop(&ex->try_timer, &ex->try_timer_on);
    sg_deadline_set(&ex->route_due, &ex->route_timer, 0);
    ex->resp_started = ex->resp_done = true;
    ex->status = 101;
    ex->ops->head(ex->ds, 101, h, &ex->route->response_headers, -1, true);
    struct bufferevent *up = sg_h1c_detach(&ex->up.h1c, true);
    ex->attached = false;
    ex->ops->tunnel(ex->ds, up);
    ex_finish(ex, false);
}

void sg_exchange_downstream_gone(struct sg_exchange *ex)
{
    ex->ds_gone = true;
    if (ex->finished)
        return;
    if (!ex->resp_started)
        ex->status = 499; /* as nginx logs it: the client closed first */
    ex->error = "client closed the connection";
    ex_finish(ex, true);
}

static const struct sg_h1c_owner_ops primary_ops = {
    .interim = up_interim,
    .head = up_head,
    .body = up_body,
    .end = up_end,
    .error = up_error,
    .writable = up_writable,
    .upgrade = up_upgrade,
};

/* ---- the one exit -------------------------------------------------------- */

static void ex_log(struct sg_exchange *ex, double duration_ms)
{
    struct sg_access_entry e = {
        .start_us = ex->start_wall_us,
        .request_id = { ex->request_id, ex->request_id_len },
        .method = ex->req.method,
        .path = ex->req.target,
        .protocol = ex->req.protocol,
        .status = ex->status,
        .duration_ms = duration_ms,
        .route = ex->route ? sg_str_c(ex->route->name) : SG_STR_NULL,
        .upstream = ex->dest ? sg_str_c(ex->dest->upstream->name) : SG_STR_NULL,
        .bytes_in = ex->bytes_in,
        .bytes_out = ex->bytes_out,
        .client = ex->req.client_addr,
        .mirrored = ex->mirrored,
        .n_mirrored = ex->n_mirrored,
        .error = ex->status >= 500 ? sg_str_c(ex->error) : SG_STR_NULL,
    };
    sg_access_log_format(ex->w->access_log, &e);
    sg_worker_log_commit(ex->w);
}

static void ex_count(struct sg_exchange *ex, double seconds)
{
    const char *route = ex->route ? ex->route->name : "";
    const char *upstream = ex->dest ? ex->dest->upstream->name : "";
    sg_metrics_add(ex->w->metrics, sg_worker_series_requests(ex->w, route, upstream, ex->status), 1);
    sg_metrics_observe(ex->w->metrics, sg_worker_series_duration(ex->w, route, upstream), seconds);
}

static void ex_finish(struct sg_exchange *ex, bool close)
{
    if (ex->finished)
        return;
    ex->finished = true;
    sg_deadline_set(&ex->route_due, &ex->route_timer, 0);
    timer_stop(&ex->try_timer, &ex->try_timer_on);
    sg_acquire_cancel(&ex->acq);
    up_detach(ex);
    ex_release_pool(ex);
    for (size_t i = 0; i < ex->n_shadows; i++)
        if (ex->shadows[i]) {
            struct sg_shadow *sh = ex->shadows[i];
            ex->shadows[i] = NULL;
            sg_shadow_release(sh, ex->resp_done);
        }
    double ms = (double)(sg_mono_us() - ex->start_mono_us) / 1000.0;
    if (ex->snap->cfg->access_log)
        ex_log(ex, ms);
    ex_count(ex, ms / 1000.0);
    if (ex->error && ex->status >= 500)
        sg_debug("request %.*s: %s", (int)ex->request_id_len, ex->request_id, ex->error);
    if (!ex->ds_gone)
        ex->ops->done(ex->ds, close);
    sg_worker_defer(ex->w, ex_free, ex);
}
