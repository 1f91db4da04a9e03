/* Shadow requests (see mirror.h).
 *
 *   start -> [dropped at once: cap, budget]
 *         -> acquire (shadow pool) -> attach: head, held body -> body ... ->
 *            body end: "sent" -> response read and discarded -> finish
 *   deadline (mirror timeout), connect failure, cap or budget exceeded:
 *            drop -> finish
 * shadow_finish is the only exit: one outcome per shadow in the metrics,
 * one log line, budgets given back. */
#include "strangler/mirror.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/access_log.h"
#include "strangler/clock.h"
#include "strangler/compare.h"
#include "strangler/h1.h"
#include "strangler/h1_client.h"
#include "strangler/h2_client.h"
#include "strangler/mem.h"
#include "strangler/ustream.h"
#include "strangler/pool.h"
#include "strangler/worker.h"

/* Drop reasons: label values of strangler_mirror_requests_total. */
static const char reason_body_too_large[] = "body_too_large";
static const char reason_overloaded[] = "overloaded";
static const char reason_connect_failed[] = "connect_failed";
static const char reason_timeout[] = "timeout";
static const char reason_upstream_error[] = "upstream_error"; /* reset/invalid before fully sent */
static const char reason_client_aborted[] = "client_aborted"; /* body never completed */

struct sg_shadow {
    struct sg_worker *w;
    struct sg_wsnap *snap; /* pinned: route, mirror and upstream names live in it */
    const struct sg_route *route;
    const struct sg_mirror *m;
    const struct sg_upstream *dest; /* m->upstream, or the primary's for a noise probe */
    struct sg_upstream_rt *ups;
    struct sg_pool *pool;
    struct sg_acquire acq;
    struct sg_ustream up; /* HTTP/1.1 connection or HTTP/2 stream to the mirror */
    struct sg_shadow **slot; /* the primary's pointer to us, cleared when we end first */
    char *strings; /* method, target, host, protocol, request id: one allocation */
    struct sg_str method, target, host, protocol, request_id, client;
    struct evbuffer *fields; /* forwarded header fields, serialised at start */
    struct evbuffer *pending; /* body bytes waiting for the connection */
    int64_t content_length;
    uint64_t body_in, bytes_out;
    uint64_t held; /* body bytes in our buffers, counted in w->shadow_bytes */
    size_t unsent_head; /* head bytes ahead of the body in the connection's output */
    struct evbuffer_cb_entry *drain_cb; /* releases `held` as the output drains */
    bool attached, body_done, sent, finished, released;
    /* Comparison (compare.h): both responses' summaries. A sent shadow that
     * ends before the primary lets go stays `waiting` (off the worker's
     * in-flight list, its slot kept) until sg_shadow_release hands over the
     * rest of the primary's summary; whichever ends last compares. */
    struct sg_cmp *cmp;
    bool probe; /* a noise probe: a second request to the primary's upstream */
    bool waiting, no_compare;    int status; /* the shadow's response status, 0 none */
    const char *drop_reason;
    const char *error;
    struct event timer;
    uint64_t start_mono_us, start_wall_us;
    struct sg_shadow *prev, *next; /* worker's list */
};

static void shadow_finish(struct sg_shadow *sh);
static const struct sg_h1c_owner_ops shadow_ops;

static struct sg_cmp_budget cmp_budget(struct sg_shadow *sh)
{
    return (struct sg_cmp_budget){ &sh->w->shadow_bytes, sh->snap->cfg->limits.shadow_max_buffered_bytes };
}

/* ---- accounting ------------------------------------------------------- */

static void count_request(struct sg_worker *w, const char *route, const char *up, const char *drop_reason)
{
    static const char sent[] = ",outcome=\"sent\"";
    const char *extra = sent;
    /* One static label fragment per reason, so the memo keys by pointer. */
    static const char *const reasons[][2] = {
        { reason_body_too_large, ",outcome=\"dropped\",reason=\"body_too_large\"" },
        { reason_overloaded, ",outcome=\"dropped\",reason=\"overloaded\"" },
        { reason_connect_failed, ",outcome=\"dropped\",reason=\"connect_failed\"" },
        { reason_timeout, ",outcome=\"dropped\",reason=\"timeout\"" },
        { reason_upstream_error, ",outcome=\"dropped\",reason=\"upstream_error\"" },
        { reason_client_aborted, ",outcome=\"dropped\",reason=\"client_aborted\"" },
    };
    for (size_t i = 0; drop_reason && i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i][0] == drop_reason)
            extra = reasons[i][1];
    sg_metrics_add(w->metrics, sg_worker_series(w, "strangler_mirror_requests_total", route, up, extra, -1), 1);
}

static void count_outcome(struct sg_worker *w, const struct sg_shadow *sh)
{
    const char *route = sh->route->name, *up = sh->m->upstream->name;
    count_request(w, route, up, sh->drop_reason);
    if (sh->drop_reason)
        return;
    static const char code_error[] = ",code=\"error\"";
    sg_series_t id = sh->status > 0
                         ? sg_worker_series(w, "strangler_mirror_responses_total", route, up, NULL, sh->status)
                         : sg_worker_series(w, "strangler_mirror_responses_total", route, up, code_error, -1);
    sg_metrics_add(w->metrics, id, 1);
}

/* Writes a shadow's access-log line: what every shadow line has in
 * common is filled in here, the rest by the caller. */
static void log_shadow(struct sg_worker *w, struct sg_access_entry *e, const char *route, const char *upstream)
{
    e->protocol = SG_STR_LIT("HTTP/1.1");
    e->route = sg_str_c(route);
    e->upstream = sg_str_c(upstream);
    e->shadow = true;
    sg_access_log_format(w->access_log, e);
    sg_worker_log_commit(w);
}

/* A shadow refused before it existed (over the in-flight budget, or a
 * declared body over max_body_bytes): counted and logged like any dropped
 * shadow, without allocating, copying or timing anything. Under a slow
 * mirror this is most shadows, and it must cost the primary next to
 * nothing. */
static void drop_early(struct sg_worker *w, struct sg_wsnap *snap, const struct sg_shadow_request *r,
                       const char *reason)
{
    count_request(w, r->route->name, r->mirror->upstream->name, reason);
    if (!snap->cfg->access_log)
        return;
    struct sg_access_entry e = {
        .start_us = sg_wall_us(),
        .request_id = r->forward->request_id,
        .method = r->method,
        .path = r->target,
        .client = r->forward->client_addr,
        .outcome = SG_STR_LIT("dropped"),
        .reason = sg_str_c(reason),
    };
    log_shadow(w, &e, r->route->name, r->mirror->upstream->name);
}

static void log_line(struct sg_shadow *sh)
{
    const char *outcome = sh->drop_reason ? "dropped" : "sent";
    struct sg_access_entry e = {
        .start_us = sh->start_wall_us,
        .request_id = sh->request_id,
        .method = sh->method,
        .path = sh->target,
        .status = sh->status,
        .duration_ms = (double)(sg_mono_us() - sh->start_mono_us) / 1000.0,
        .bytes_in = sh->body_in,
        .bytes_out = sh->bytes_out,
        .client = sh->client,
        .error = sg_str_c(sh->error),
        .outcome = sg_str_c(outcome),
        .reason = sg_str_c(sh->drop_reason),
    };
    log_shadow(sh->w, &e, sh->route->name, sh->m->upstream->name);
}

/* ---- the byte budget ------------------------------------------------------ */

/* The budget counts body bytes still in memory: in `pending`, or in the
 * connection's output buffer until the kernel takes them. A mirror that
 * reads promptly but answers slowly holds nothing. */
static void release_held(struct sg_shadow *sh, uint64_t n)
{
    if (n > sh->held)
        n = sh->held;
    sh->held -= n;
    sh->w->shadow_bytes -= n;
}

static void output_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct sg_shadow *sh = arg;
    size_t n = info->n_deleted;
    size_t head = n < sh->unsent_head ? n : sh->unsent_head;
    sh->unsent_head -= head;
    release_held(sh, n - head); /* chunk framing makes this an upper bound: clamped */
}

static void send_end(struct sg_shadow *sh)
{
    sg_ustream_end(&sh->up, NULL); /* shadows copy no trailers */
    sh->sent = true;
}

static void unhook_output(struct sg_shadow *sh)
{
    if (sh->drain_cb && sh->up.h1c.uc)
        evbuffer_remove_cb_entry(sg_h1c_output(&sh->up.h1c), sh->drain_cb);
    sh->drain_cb = NULL;
}

/* Gives the connection back: reused only when clean (complete response,
 * keep-alive, request fully written). */
static void detach(struct sg_shadow *sh)
{
    unhook_output(sh);
    sg_ustream_detach(&sh->up);
    sh->attached = false;
}

/* ---- life cycle --------------------------------------------------------- */

static void shadow_free(struct sg_shadow *sh)
{
    sg_cmp_free(sh->cmp, cmp_budget(sh));
    sg_ustream_free(&sh->up);
    if (sh->fields)
        evbuffer_free(sh->fields);
    if (sh->pending)
        evbuffer_free(sh->pending);
    sg_mem_free(sh->strings);
    sg_wsnap_unpin(sh->snap);
    sg_mem_free(sh);
}

/* Deferred: both sides are over (or the comparison is off). */
static void shadow_done(void *arg)
{
    struct sg_shadow *sh = arg;
    bool compared = false;
    if (sh->cmp && !sh->drop_reason && !sh->no_compare) {
        struct sg_cmp_request r = {
            .route = sh->route,
            .mirror = sh->m,
            .probe = sh->probe,
            .request_id = sh->request_id,
            .method = sh->method,
            .path = sh->target,
            .wall_us = sh->start_wall_us,
        };
        sg_compare_run(sh->w, sh->cmp, &r);
        compared = true;
    }
    if (sh->probe)
        sg_noise_probe_done(sh->w, sh->route, sh->m, !compared);
    shadow_free(sh);
}

static void shadow_drop(struct sg_shadow *sh, const char *reason)
{
    if (sh->finished)
        return;
    if (!sh->drop_reason)
        sh->drop_reason = reason;
    shadow_finish(sh);
}

/* The one exit. */
static void shadow_finish(struct sg_shadow *sh)
{
    if (sh->finished)
        return;
    sh->finished = true;
    struct sg_worker *w = sh->w;
    event_del(&sh->timer);
    sg_acquire_cancel(&sh->acq);
    detach(sh);
    if (sh->pool)
        sh->pool->in_flight--;
    sh->waiting = sh->cmp && sh->slot && !sh->drop_reason && !sh->no_compare;
    if (sh->slot && !sh->waiting) {
        *sh->slot = NULL;
        sh->slot = NULL;
    }
    release_held(sh, sh->held);
    w->n_shadows--;
    if (sh->prev)
        sh->prev->next = sh->next;
    else
        w->shadows = sh->next;
    if (sh->next)
        sh->next->prev = sh->prev;
    if (!sh->probe) { /* a probe is not a mirrored request */
        count_outcome(w, sh);
        if (sh->snap->cfg->access_log)
            log_line(sh);
    }
    if (!sh->waiting)
        sg_worker_defer(w, shadow_done, sh);
    sg_worker_maybe_exit(w);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_shadow *sh = arg;
    if (sh->sent) {
        sh->error = sg_err_timeout;
        sh->status = 0; /* sent, answered late or never: code="error" */
        shadow_finish(sh);
    } else {
        shadow_drop(sh, reason_timeout);
    }
}

/* ---- the request ---------------------------------------------------------- */

/* "api.example.com:8080" + "-shadow" -> "api.example.com-shadow:8080".
 * An IPv6 literal cannot take a suffix and stays as it is. */
static size_t host_with_suffix(struct sg_str host, const char *suffix, char *out)
{
    if (host.len && host.p[0] == '[')
        suffix = "";
    size_t port_at = host.len;
    for (size_t i = host.len; i > 0; i--) {
        if (host.p[i - 1] == ']')
            break;
        if (host.p[i - 1] == ':') {
            port_at = i - 1;
            break;
        }
    }
    size_t sl = strlen(suffix), n = 0;
    if (port_at)
        memcpy(out, host.p, port_at);
    n += port_at;
    if (sl)
        memcpy(out + n, suffix, sl);
    n += sl;
    if (host.len > port_at)
        memcpy(out + n, host.p + port_at, host.len - port_at);
    return n + host.len - port_at;
}

static struct sg_str keep(char **cursor, struct sg_str s)
{
    struct sg_str out = { *cursor, s.len };
    if (s.len)
        memcpy(*cursor, s.p, s.len);
    *cursor += s.len;
    return out;
}

static bool copy_request(struct sg_shadow *sh, const struct sg_shadow_request *r)
{
    const struct sg_forward_request_opts *f = r->forward;
    /* A probe goes to the primary's upstream as the primary did: no suffix. */
    const char *suffix = sh->probe || !sh->m->host_suffix ? "" : sh->m->host_suffix;
    /* HTTP/1.0 without Host: like the primary, name the endpoint. */
    char endpoint[300];
    struct sg_str host = r->host;
    if (host.len == 0) {
        const struct sg_hostport *ep = &sh->dest->endpoints[0];
        int n = snprintf(endpoint, sizeof endpoint, strchr(ep->host, ':') ? "[%s]:%u" : "%s:%u", ep->host, ep->port);
        host = (struct sg_str){ endpoint, n > 0 ? (size_t)n : 0 };
    }
    size_t need = r->method.len + r->target.len + host.len + strlen(suffix) + r->protocol.len +
                  f->request_id.len + f->client_addr.len + 1;
    sh->strings = sg_mem_malloc(need);
    sh->fields = evbuffer_new();
    if (!sh->strings || !sh->fields)
        return false;
    char *c = sh->strings;
    sh->method = keep(&c, r->method);
    sh->target = keep(&c, r->target);
    sh->host = (struct sg_str){ c, host_with_suffix(host, suffix, c) };
    c += sh->host.len;
    sh->protocol = keep(&c, r->protocol);
    sh->request_id = keep(&c, f->request_id);
    sh->client = keep(&c, f->client_addr);
    /* Serialised for the mirror's protocol: "name: value\r\n" lines, or
     * lower-cased NUL-separated pairs an HTTP/2 stream takes. */
    if (sh->up.h2) {
        struct sg_h2c_stream tmp = { .hdrs = sh->fields };
        sg_headers_forward_request(r->headers, f, sg_h2c_emit, &tmp);
    } else {
        struct sg_wbuf wb;
        sg_wbuf_init(&wb, sh->fields);
        sg_headers_forward_request(r->headers, f, sg_wbuf_field, &wb);
        sg_wbuf_flush(&wb);
    }
    return true;
}

/* The body that arrived before the connection, then the end if known. */
static void send_held(struct sg_shadow *sh)
{
    if (sh->pending) {
        struct evbuffer_iovec v[8];
        int n;
        while ((n = evbuffer_peek(sh->pending, -1, NULL, v, 8)) > 0) {
            size_t moved = 0;
            for (int i = 0; i < n && i < 8; i++) {
                sg_ustream_body(&sh->up, v[i].iov_base, v[i].iov_len);
                moved += v[i].iov_len;
            }
            evbuffer_drain(sh->pending, moved);
        }
    }
    if (sh->body_done)
        send_end(sh);
}

static void attach(struct sg_shadow *sh, struct sg_uconn *uc)
{
    bool head = sg_str_eq(sh->method, SG_STR_LIT("HEAD"));
    struct sg_h1c_request r = { sh->method, sh->target, sh->host, sh->content_length, head, false };
    sh->attached = true;
    struct sg_wbuf wb;
    sg_h1c_begin(&sh->up.h1c, uc, &shadow_ops, sh, &r, &wb);
    sg_wbuf_flush(&wb); /* the request line, then the fields kept at creation */
    struct evbuffer *out = sg_h1c_output(&sh->up.h1c);
    evbuffer_add_buffer(out, sh->fields);
    sg_h1c_head_done(&sh->up.h1c, &wb);
    sh->unsent_head = evbuffer_get_length(out);
    sh->drain_cb = evbuffer_add_cb(out, output_drained, sh);
    send_held(sh);
}

/* On an HTTP/2 mirror the held bytes are given back when the shadow ends:
 * the session's output mixes every stream's frames, so it cannot tell. */
static void attach_h2(struct sg_shadow *sh, struct sg_h2c_sess *s)
{
    sh->attached = true;
    sg_h2c_begin(&sh->up.h2s, s, &shadow_ops, sh);
    evbuffer_add_buffer(sh->up.h2s.hdrs, sh->fields);
    struct sg_str scheme = sh->dest->protocol == SG_PROTO_H2 ? SG_STR_LIT("https") : SG_STR_LIT("http");
    if (!sg_h2c_submit(&sh->up.h2s, sh->method, scheme, sh->host, sh->target, sh->content_length != 0)) {
        shadow_drop(sh, reason_upstream_error);
        return;
    }
    send_held(sh);
}

static void shadow_connect(struct sg_shadow *sh, struct sg_ustream_conn c)
{
    if (sh->up.h2)
        attach_h2(sh, c.sess);
    else
        attach(sh, c.uc);
}

static void acquired(void *arg, struct sg_uconn *uc, const char *err)
{
    struct sg_shadow *sh = arg;
    if (err) {
        sh->error = err;
        shadow_drop(sh, err == sg_err_overloaded ? reason_overloaded : reason_connect_failed);
        return;
    }
    shadow_connect(sh, sg_ustream_arrived(&sh->acq, uc));
}

static void begin(struct sg_shadow *sh)
{
    sh->pool = sg_upstream_pick(sh->ups, sh->w, NULL, 0, true);
    if (!sh->pool) { /* no endpoint in rotation (health checks): dropped like a failed connect */
        acquired(sh, NULL, sg_err_no_endpoint);
        return;
    }
    sh->pool->in_flight++;
    sh->acq = (struct sg_acquire){ acquired, sh, NULL, NULL };
    struct sg_ustream_conn got;
    const char *err = NULL;
    switch (sg_ustream_acquire(&sh->up, sh->pool, &sh->acq, false, &got, &err)) {
    case SG_ACQ_READY:
        shadow_connect(sh, got);
        break;
    case SG_ACQ_PENDING:
        break;
    case SG_ACQ_FAILED:
        acquired(sh, NULL, err);
        break;
    }
}

static bool shadow_new(struct sg_worker *w, struct sg_wsnap *snap, const struct sg_shadow_request *r,
                       const struct sg_upstream *dest, bool probe, struct sg_shadow **slot)
{
    *slot = NULL;
    const struct sg_limits *lim = &snap->cfg->limits;
    if (!probe && w->n_shadows >= lim->shadow_max_in_flight) {
        drop_early(w, snap, r, reason_overloaded);
        return false;
    }
    if (!probe && r->content_length > 0 && (uint64_t)r->content_length > r->mirror->max_body_bytes) {
        drop_early(w, snap, r, reason_body_too_large);
        return false;
    }
    /* From the worker's small-block cache, like the primary's exchange:
     * its own block all the same, never the primary's. */
    struct sg_shadow *sh = sg_mem_calloc(1, sizeof *sh);
    if (!sh) {
        if (probe)
            sg_noise_probe_done(w, r->route, r->mirror, true);
        return false;
    }
    sh->w = w;
    sh->snap = snap;
    snap->pins++;
    sh->route = r->route;
    sh->m = r->mirror;
    sh->dest = dest;
    sh->probe = probe;
    sh->ups = &snap->ups[dest->index];
    sh->up.h2 = dest->protocol != SG_PROTO_HTTP1;
    sh->content_length = r->content_length;
    sh->body_done = r->content_length == 0;
    sh->start_mono_us = sg_mono_us();
    sh->start_wall_us = sg_wall_us();
    event_assign(&sh->timer, w->base, -1, 0, timer_cb, sh);
    sh->next = w->shadows;
    if (w->shadows)
        w->shadows->prev = sh;
    w->shadows = sh;
    w->n_shadows++;
    if (!copy_request(sh, r)) {
        shadow_drop(sh, reason_overloaded);
        return false;
    }
    if (w->n_shadows > lim->shadow_max_in_flight) {
        shadow_drop(sh, reason_overloaded);
        return false;
    }
    if (r->content_length > 0 && (uint64_t)r->content_length > sh->m->max_body_bytes) {
        shadow_drop(sh, reason_body_too_large);
        return false;
    }
    /* Without memory for the summaries the shadow still goes; its
     * comparison is counted as an error. */
    if (sh->m->compare)
        sh->cmp = sg_cmp_new(sh->m->compare);
    struct timeval tv = sg_tv_ms(sh->m->timeout_ms);
    event_add(&sh->timer, &tv);
    sh->slot = slot;
    *slot = sh;
    begin(sh);
    return true;
}

bool sg_shadow_start(struct sg_worker *w, struct sg_wsnap *snap, const struct sg_shadow_request *r,
                     struct sg_shadow **slot)
{
    return shadow_new(w, snap, r, r->mirror->upstream, false, slot);
}

void sg_shadow_probe_start(struct sg_worker *w, struct sg_wsnap *snap, const struct sg_shadow_request *r,
                           const struct sg_upstream *primary, struct sg_shadow **slot)
{
    *slot = NULL;
    if (primary && sg_noise_probe_wanted(w, r->route, r->mirror, r->method))
        shadow_new(w, snap, r, primary, true, slot);
}

/* ---- body from the primary ---------------------------------------------------- */

void sg_shadow_body(struct sg_shadow *sh, const char *p, size_t n)
{
    if (sh->finished || n == 0)
        return;
    if (sh->body_in + n > sh->m->max_body_bytes) {
        shadow_drop(sh, reason_body_too_large);
        return;
    }
    if (sh->w->shadow_bytes + n > sh->snap->cfg->limits.shadow_max_buffered_bytes) {
        shadow_drop(sh, reason_overloaded);
        return;
    }
    sh->body_in += n;
    sh->held += n;
    sh->w->shadow_bytes += n;
    if (sh->attached) {
        sg_ustream_body(&sh->up, p, n);
        return;
    }
    if (!sh->pending && !(sh->pending = evbuffer_new())) {
        shadow_drop(sh, reason_overloaded);
        return;
    }
    evbuffer_add(sh->pending, p, n);
}

void sg_shadow_body_end(struct sg_shadow *sh)
{
    if (sh->finished || sh->body_done)
        return;
    sh->body_done = true;
    if (sh->attached)
        send_end(sh);
}

void sg_shadow_primary_head(struct sg_shadow *sh, int status, const struct sg_headers *h)
{
    if (sh->cmp && !sh->drop_reason)
        sg_cmp_head(sh->cmp, SG_CMP_PRIMARY, status, h, cmp_budget(sh));
}

void sg_shadow_primary_body(struct sg_shadow *sh, const char *p, size_t n)
{
    if (sh->cmp && !sh->drop_reason)
        sg_cmp_body(sh->cmp, SG_CMP_PRIMARY, p, n, cmp_budget(sh));
}

void sg_shadow_release(struct sg_shadow *sh, bool response_complete)
{
    sh->slot = NULL;
    if (sh->cmp && response_complete)
        sg_cmp_end(sh->cmp, SG_CMP_PRIMARY);
    if (sh->waiting) { /* the shadow ended first: compare now */
        sh->waiting = false;
        sg_worker_defer(sh->w, shadow_done, sh);
        return;
    }
    if (!sh->body_done)
        shadow_drop(sh, reason_client_aborted);
}

void sg_shadows_abort_all(struct sg_worker *w)
{
    while (w->shadows) {
        struct sg_shadow *sh = w->shadows;
        sh->error = "worker stopped";
        sh->no_compare = true;
        shadow_drop(sh, sh->sent ? NULL : reason_timeout);
    }
}

/* ---- the response: read to the end, discarded ------------------------------------- */

static void up_interim(void *owner, int status, const struct sg_headers *h)
{
}

static void up_head(void *owner, int status, const struct sg_headers *h, int64_t content_length)
{
    struct sg_shadow *sh = owner;
    sh->status = status;
    if (sh->cmp)
        sg_cmp_head(sh->cmp, SG_CMP_OTHER, status, h, cmp_budget(sh));
    if (!sh->body_done) {
        /* Answered before its body was complete: nothing more to send. */
        sh->sent = true;
    }
}

static void up_body(void *owner, const char *p, size_t n)
{
    struct sg_shadow *sh = owner;
    sh->bytes_out += n;
    if (sh->cmp)
        sg_cmp_body(sh->cmp, SG_CMP_OTHER, p, n, cmp_budget(sh));
}

static void up_end(void *owner, const struct sg_headers *trailers)
{
    struct sg_shadow *sh = owner;
    sh->sent = true;
    if (sh->cmp)
        sg_cmp_end(sh->cmp, SG_CMP_OTHER);
    detach(sh);
    shadow_finish(sh);
}

static void up_error(void *owner, const char *err)
{
    struct sg_shadow *sh = owner;
    sh->error = err;
    sh->status = 0;
    if (sh->sent)
        shadow_finish(sh);
    else
        shadow_drop(sh, reason_upstream_error);
}

static void up_writable(void *owner)
{
}

static void up_upgrade(void *owner, const struct sg_headers *h)
{
    up_error(owner, sg_err_invalid_response); /* a shadow never asks to upgrade */
}

static const struct sg_h1c_owner_ops shadow_ops = {
    .interim = up_interim,
    .head = up_head,
    .body = up_body,
    .end = up_end,
    .error = up_error,
    .writable = up_writable,
    .upgrade = up_upgrade,
};
