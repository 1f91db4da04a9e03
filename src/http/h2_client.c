/* HTTP/2 client sessions to upstreams (see h2_client.h).
 *
 * A session is one pooled connection (it holds one max_connections slot
 * for its whole life) carrying up to the peer's SETTINGS_MAX_CONCURRENT_
 * STREAMS streams. Input is fed with nghttp2_session_mem_recv, output is
 * produced with nghttp2_session_mem_send while the socket's output buffer
 * is below a high watermark. Flow control is manual both ways: request
 * DATA is read from the stream's buffer by a data source that defers when
 * it is empty; response DATA is consumed (window given back) only while
 * the exchange's client keeps up, so a slow client throttles its upstream
 * stream and nothing else. */
#include "strangler/h2_client.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/log.h"
#include "strangler/mem.h"
#include "strangler/pool.h"
#include "strangler/worker.h"

#define SESS_OUT_HIGH (256u * 1024u)
#define STREAM_BODY_HIGH (256u * 1024u)
#define MAX_HEAD (64u * 1024u)
#define DEFAULT_MAX_STREAMS 100u

static void sess_close(struct sg_h2c_sess *s, const char *err);
static void sess_flush(struct sg_h2c_sess *s);
static nghttp2_nv *nv_list(struct evbuffer *pairs, size_t reserve, size_t *count);

static struct sg_h2c_stream *stream_of(struct sg_h2c_sess *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s->ng, id);
}

/* ---- stream events ---------------------------------------------------------- */

static void stream_leave(struct sg_h2c_stream *st)
{
    struct sg_h2c_sess *s = st->sess;
    if (!s)
        return;
    if (st->id > 0 && s->ng)
        nghttp2_session_set_stream_user_data(s->ng, st->id, NULL);
    TAILQ_REMOVE(&s->streams, st, link);
    st->sess = NULL;
    st->gen++;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct sg_h2c_stream *st = stream_of(ud, f->hd.stream_id);
    if (st && st->head_done)
        sg_h1_head_reset(&st->trailers);
    else if (st)
        sg_h1_head_reset(&st->head);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    struct sg_h2c_stream *st = stream_of(ud, f->hd.stream_id);
    if (!st)
        return 0;
    st->got_bytes = true;
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
        st->status = 0;
        for (size_t i = 0; i < vlen; i++)
            st->status = st->status * 10 + (value[i] - '0');
        return 0;
    }
    if (nlen && name[0] == ':')
        return 0;
    struct sg_h1_head *h = st->head_done ? &st->trailers : &st->head;
    if (!sg_h1_head_add_field(h, (const char *)name, nlen, (const char *)value, vlen))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* too large: reset the stream */
    return 0;
}

static int64_t content_length(const struct sg_headers *h)
{
    const struct sg_header *cl = sg_headers_get(h, SG_STR_LIT("content-length"));
    if (!cl || cl->value.len == 0 || cl->value.len > 18)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < cl->value.len; i++) {
        if (cl->value.p[i] < '0' || cl->value.p[i] > '9')
            return -1;
        v = v * 10 + (cl->value.p[i] - '0');
    }
    return v;
}

static void deliver_head(struct sg_h2c_stream *st)
{
    sg_h1_head_finish(&st->head);
    if (st->status >= 100 && st->status < 200) {
        st->ops->interim(st->owner, st->status, &st->head.headers);
        return;
    }
    st->head_done = true;
    st->content_length = content_length(&st->head.headers);
    st->ops->head(st->owner, st->status, &st->head.headers, st->content_length);
}

static void deliver_end(struct sg_h2c_stream *st)
{
    st->done = true;
    bool trailers = st->trailers.n_fields > 0 && sg_h1_head_finish(&st->trailers);
    st->ops->end(st->owner, trailers ? &st->trailers.headers : NULL);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct sg_h2c_sess *s = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        s->goaway = true; /* no new streams; the ones below last_stream_id finish */
        return 0;
    }
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        uint32_t max = nghttp2_session_get_remote_settings(ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        s->max_streams = max < DEFAULT_MAX_STREAMS ? max : DEFAULT_MAX_STREAMS;
        return 0;
    }
    struct sg_h2c_stream *st = f->hd.stream_id ? stream_of(s, f->hd.stream_id) : NULL;
    if (!st)
        return 0;
    unsigned gen = st->gen;
    if (f->hd.type == NGHTTP2_HEADERS && !st->head_done)
        deliver_head(st);
    if (st->gen == gen && (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->head_done && !st->done)
        deliver_end(st);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    struct sg_h2c_stream *st = stream_of(ud, id);
    if (!st) {
        nghttp2_session_consume(ng, id, len); /* nobody wants it: keep the connection window open */
        return 0;
    }
    st->ops->body(st->owner, (const char *)data, len);
    /* The owner may have paused us (its client is slow) or detached. */
    if (st->sess && st->paused)
        st->unconsumed += len;
    else
        nghttp2_session_consume(ng, id, len);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    struct sg_h2c_sess *s = ud;
    struct sg_h2c_stream *st = stream_of(s, id);
    if (!st)
        return 0;
    if (!st->done) {
        /* Reset or closed early. REFUSED_STREAM means it was never
         * processed: safe to retry like a connection failure. */
        const char *err = error_code == NGHTTP2_REFUSED_STREAM ? sg_err_connect : sg_err_reset;
        stream_leave(st);
        st->ops->error(st->owner, err);
        return 0;
    }
    stream_leave(st);
    return 0;
}

/* ---- request DATA ---------------------------------------------------------- */

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    struct sg_h2c_stream *st = src->ptr;
    size_t n = evbuffer_remove(st->body, buf, len);
    if (n == 0 && !st->body_eof) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (st->body_eof && evbuffer_get_length(st->body) == 0) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        size_t k;
        nghttp2_nv *v = evbuffer_get_length(st->req_trailers) ? nv_list(st->req_trailers, 0, &k) : NULL;
        /* Trailers end the stream instead of this DATA frame (gRPC). */
        if (v && nghttp2_submit_trailer(ng, id, v, k) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        free(v);
    }
    return (ssize_t)n;
}

/* ---- I/O ------------------------------------------------------------------- */

static void sess_flush(struct sg_h2c_sess *s)
{
    if (s->state != SG_H2S_READY)
        return;
    struct evbuffer *out = bufferevent_get_output(s->uc->bev);
    while (evbuffer_get_length(out) < SESS_OUT_HIGH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(s->ng, &data);
        if (n < 0) {
            sess_close(s, sg_err_reset);
            return;
        }
        if (n == 0)
            break;
        evbuffer_add(out, data, (size_t)n);
    }
    if (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng) &&
        evbuffer_get_length(out) == 0)
        sess_close(s, sg_err_reset);
}

static void idle_check(struct sg_h2c_sess *s)
{
    if (s->state != SG_H2S_READY || !TAILQ_EMPTY(&s->streams))
        return;
    if (s->goaway) {
        sess_close(s, NULL);
        return;
    }
    struct timeval tv = { (time_t)(s->pool->idle_timeout_ms / 1000),
                          (suseconds_t)(s->pool->idle_timeout_ms % 1000 * 1000) };
    event_add(s->idle_timer, &tv);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct sg_h2c_sess *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    s->in_recv = true;
    ssize_t n = nghttp2_session_mem_recv(s->ng, evbuffer_pullup(in, -1), len);
    s->in_recv = false;
    if (s->state == SG_H2S_CLOSED)
        return;
    if (n < 0) {
        sg_warn("upstream %s: HTTP/2 session error: %s", s->pool->upstream_name, nghttp2_strerror((int)n));
        sess_close(s, sg_err_invalid_response);
        return;
    }
    evbuffer_drain(in, (size_t)n);
    sess_flush(s);
    idle_check(s);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct sg_h2c_sess *s = arg;
    sess_flush(s);
    /* Streams whose request body drained can take more from their clients. */
    struct sg_h2c_stream *st, *next;
    for (st = TAILQ_FIRST(&s->streams); st && s->state == SG_H2S_READY; st = next) {
        next = TAILQ_NEXT(st, link);
        if (!sg_h2c_congested(st))
            st->ops->writable(st->owner);
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    sess_close(arg, sg_err_reset);
}

static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_h2c_sess *s = arg;
    if (TAILQ_EMPTY(&s->streams))
        sess_close(s, NULL);
}

/* ---- session life ------------------------------------------------------------ */

static void sess_free(void *arg)
{
    struct sg_h2c_sess *s = arg;
    if (s->ng)
        nghttp2_session_del(s->ng);
    if (s->idle_timer)
        event_free(s->idle_timer);
    free(s);
}

/* Tells the exchanges waiting for this session that it is ready (err
 * NULL) or failed. A copy of the list: a callback may queue a new waiter. */
static void wake_waiters(struct sg_h2c_sess *s, const char *err)
{
    unsigned n = s->n_waiters;
    struct sg_acquire *w[16];
    memcpy(w, s->waiters, sizeof w);
    s->n_waiters = 0;
    for (unsigned i = 0; i < n; i++) {
        w[i]->session = err ? NULL : s;
        w[i]->cb(w[i]->arg, NULL, err);
    }
}

/* One exit for a session: its streams fail (their exchanges may retry),
 * its connection closes, the memory goes after the callbacks return. */
static void sess_close(struct sg_h2c_sess *s, const char *err)
{
    if (s->state == SG_H2S_CLOSED)
        return;
    enum sg_h2c_state was = s->state;
    s->state = SG_H2S_CLOSED;
    struct sg_pool *p = s->pool;
    TAILQ_REMOVE(&p->h2_sessions, s, link);
    if (s->idle_timer)
        event_del(s->idle_timer);
    if (was == SG_H2S_CONNECTING)
        sg_acquire_cancel(&s->acq);
    wake_waiters(s, err ? err : sg_err_reset);
    struct sg_h2c_stream *st;
    while ((st = TAILQ_FIRST(&s->streams)) != NULL) {
        stream_leave(st);
        st->ops->error(st->owner, err ? err : sg_err_reset);
    }
    if (s->uc) {
        bufferevent_setcb(s->uc->bev, NULL, NULL, NULL, NULL);
        sg_uconn_release(s->uc, false);
        s->uc = NULL;
    }
    sg_worker_defer(p->worker, sess_free, s);
}

static bool sess_init_ng(struct sg_h2c_sess *s)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return false;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rc = nghttp2_session_client_new3(&s->ng, cbs, s, opt, sg_mem_nghttp2());
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0)
        return false;
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 256 * 1024 },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEAD },
    };
    nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    /* A larger connection window: many streams share it. */
    nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, 16 * 1024 * 1024);
    return true;
}

static void sess_connected(void *arg, struct sg_uconn *uc, const char *err)
{
    struct sg_h2c_sess *s = arg;
    if (!uc) {
        s->acq.conn = NULL;
        sess_close(s, err);
        return;
    }
    s->uc = uc;
    if (!sess_init_ng(s)) {
        sess_close(s, sg_err_connect);
        return;
    }
    s->state = SG_H2S_READY;
    bufferevent_setcb(uc->bev, read_cb, write_cb, event_cb, s);
    bufferevent_setwatermark(uc->bev, EV_WRITE, SESS_OUT_HIGH / 4, 0);
    bufferevent_enable(uc->bev, EV_READ | EV_WRITE);
    sess_flush(s);
    wake_waiters(s, NULL);
}

static unsigned load(const struct sg_h2c_sess *s)
{
    unsigned n = s->n_waiters;
    const struct sg_h2c_stream *st;
    TAILQ_FOREACH(st, &s->streams, link)
        n++;
    return n;
}

enum sg_acquire_result sg_h2c_acquire(struct sg_pool *p, struct sg_acquire *a, struct sg_h2c_sess **out,
                                      const char **err)
{
    struct sg_h2c_sess *s;
    TAILQ_FOREACH(s, &p->h2_sessions, link) {
        if (s->goaway || load(s) >= s->max_streams)
            continue;
        if (s->state == SG_H2S_READY) {
            event_del(s->idle_timer);
            *out = s;
            return SG_ACQ_READY;
        }
        if (s->n_waiters < sizeof s->waiters / sizeof s->waiters[0]) {
            s->waiters[s->n_waiters++] = a;
            a->session = s;
            return SG_ACQ_PENDING;
        }
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        *err = sg_err_connect;
        return SG_ACQ_FAILED;
    }
    s->pool = p;
    s->max_streams = DEFAULT_MAX_STREAMS;
    s->state = SG_H2S_CONNECTING;
    TAILQ_INIT(&s->streams);
    s->idle_timer = evtimer_new(p->worker->base, idle_cb, s);
    s->acq = (struct sg_acquire){ sess_connected, s, NULL, NULL };
    struct sg_uconn *uc = NULL;
    switch (sg_pool_acquire(p, &s->acq, true, &uc, err)) {
    case SG_ACQ_FAILED:
        event_free(s->idle_timer);
        free(s);
        return SG_ACQ_FAILED;
    case SG_ACQ_READY: /* fresh connections are never ready at once */
    case SG_ACQ_PENDING:
        break;
    }
    TAILQ_INSERT_TAIL(&p->h2_sessions, s, link);
    s->waiters[s->n_waiters++] = a;
    a->session = s;
    return SG_ACQ_PENDING;
}

void sg_h2c_cancel(struct sg_acquire *a)
{
    struct sg_h2c_sess *s = a->session;
    a->session = NULL;
    for (unsigned i = 0; s && i < s->n_waiters; i++)
        if (s->waiters[i] == a) {
            s->waiters[i] = s->waiters[--s->n_waiters];
            break;
        }
}

void sg_h2c_close_all(struct sg_pool *p)
{
    struct sg_h2c_sess *s;
    while ((s = TAILQ_FIRST(&p->h2_sessions)) != NULL)
        sess_close(s, sg_err_reset);
}

/* ---- streams ------------------------------------------------------------------ */

void sg_h2c_begin(struct sg_h2c_stream *st, struct sg_h2c_sess *s, const struct sg_h1c_owner_ops *ops, void *owner)
{
    if (!st->head.max) {
        sg_h1_head_init(&st->head, MAX_HEAD);
        sg_h1_head_init(&st->trailers, MAX_HEAD);
    }
    if (!st->hdrs)
        st->hdrs = evbuffer_new();
    if (!st->body)
        st->body = evbuffer_new();
    if (!st->req_trailers)
        st->req_trailers = evbuffer_new();
    evbuffer_drain(st->req_trailers, evbuffer_get_length(st->req_trailers));
    evbuffer_drain(st->hdrs, evbuffer_get_length(st->hdrs));
    evbuffer_drain(st->body, evbuffer_get_length(st->body));
    sg_h1_head_reset(&st->head);
    sg_h1_head_reset(&st->trailers);
    st->sess = s;
    st->id = 0;
    st->ops = ops;
    st->owner = owner;
    st->gen++;
    st->body_eof = st->has_body = st->deferred = false;
    st->head_done = st->done = st->got_bytes = st->paused = false;
    st->status = 0;
    st->unconsumed = 0;
    st->content_length = -1;
    TAILQ_INSERT_TAIL(&s->streams, st, link);
    event_del(s->idle_timer);
}

/* Pairs are kept as name\0value\0 until they become an nghttp2_nv list.
 * Field names go lower-case on the wire (RFC 9113 8.2.1): nghttp2 folds
 * them as it copies the list at submit (nghttp2_nv_array_copy). */
static void emit_pair(void *ctx, struct sg_str name, struct sg_str value)
{
    struct evbuffer *b = ctx;
    evbuffer_add(b, name.p, name.len);
    evbuffer_add(b, "", 1);
    evbuffer_add(b, value.p, value.len);
    evbuffer_add(b, "", 1);
}

void sg_h2c_emit(void *ctx, struct sg_str name, struct sg_str value)
{
    emit_pair(((struct sg_h2c_stream *)ctx)->hdrs, name, value);
}

static nghttp2_nv nv(struct sg_str name, struct sg_str value)
{
    return (nghttp2_nv){ (uint8_t *)(uintptr_t)name.p, (uint8_t *)(uintptr_t)value.p, name.len, value.len,
                         NGHTTP2_NV_FLAG_NONE };
}

/* An nv list from name\0value\0 pairs, after `reserve` free slots at the
 * front (for pseudo-headers). The strings stay in `pairs`. */
static nghttp2_nv *nv_list(struct evbuffer *pairs, size_t reserve, size_t *count)
{
    size_t len = evbuffer_get_length(pairs);
    char *p = (char *)evbuffer_pullup(pairs, -1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += p[i] == '\0';
    nghttp2_nv *v = calloc(n / 2 + reserve + 1, sizeof *v);
    if (!v)
        return NULL;
    size_t k = reserve;
    for (size_t i = 0; i < len;) {
        struct sg_str name = sg_str_c(p + i);
        i += name.len + 1;
        struct sg_str value = sg_str_c(p + i);
        i += value.len + 1;
        v[k++] = nv(name, value);
    }
    *count = k;
    return v;
}

bool sg_h2c_submit(struct sg_h2c_stream *st, struct sg_str method, struct sg_str scheme, struct sg_str authority,
                   struct sg_str path, bool has_body)
{
    struct sg_h2c_sess *s = st->sess;
    size_t k;
    nghttp2_nv *v = nv_list(st->hdrs, 4, &k);
    if (!v)
        return false;
    v[0] = nv(SG_STR_LIT(":method"), method);
    v[1] = nv(SG_STR_LIT(":scheme"), scheme);
    v[2] = nv(SG_STR_LIT(":authority"), authority);
    v[3] = nv(SG_STR_LIT(":path"), path);
    st->has_body = has_body;
    nghttp2_data_provider dp = { .source.ptr = st, .read_callback = read_body };
    int32_t id = nghttp2_submit_request(s->ng, NULL, v, k, has_body ? &dp : NULL, st);
    free(v); /* nghttp2 copies the header block */
    if (id < 0)
        return false;
    st->id = id;
    if (!s->in_recv)
        sess_flush(s);
    return true;
}

void sg_h2c_body(struct sg_h2c_stream *st, const char *p, size_t n)
{
    if (!st->sess)
        return;
    evbuffer_add(st->body, p, n);
    if (st->deferred && st->id > 0) {
        st->deferred = false;
        nghttp2_session_resume_data(st->sess->ng, st->id);
    }
    if (!st->sess->in_recv)
        sess_flush(st->sess);
}

void sg_h2c_end(struct sg_h2c_stream *st, const struct sg_headers *trailers)
{
    if (st->sess)
        sg_headers_forward_trailers(trailers, emit_pair, st->req_trailers);
    st->body_eof = true;
    sg_h2c_body(st, NULL, 0);
}

bool sg_h2c_congested(const struct sg_h2c_stream *st)
{
    return st->sess && (evbuffer_get_length(st->body) > STREAM_BODY_HIGH ||
                        evbuffer_get_length(bufferevent_get_output(st->sess->uc->bev)) > SESS_OUT_HIGH);
}

void sg_h2c_pause(struct sg_h2c_stream *st, bool pause)
{
    if (!st->sess || st->paused == pause)
        return;
    st->paused = pause;
    if (!pause && st->unconsumed) {
        nghttp2_session_consume(st->sess->ng, st->id, st->unconsumed);
        st->unconsumed = 0;
        if (!st->sess->in_recv)
            sess_flush(st->sess);
    }
}

void sg_h2c_detach(struct sg_h2c_stream *st)
{
    struct sg_h2c_sess *s = st->sess;
    if (!s)
        return;
    bool open = st->id > 0 && !st->done;
    int32_t id = st->id;
    if (st->unconsumed && id > 0)
        nghttp2_session_consume(s->ng, id, st->unconsumed);
    st->unconsumed = 0;
    stream_leave(st);
    if (open)
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    if (!s->in_recv) {
        sess_flush(s);
        idle_check(s);
    }
}

void sg_h2c_free(struct sg_h2c_stream *st)
{
    sg_h2c_detach(st);
    if (st->hdrs)
        evbuffer_free(st->hdrs);
    if (st->body)
        evbuffer_free(st->body);
    if (st->req_trailers)
        evbuffer_free(st->req_trailers);
    sg_h1_head_free(&st->head);
    sg_h1_head_free(&st->trailers);
}
