/* HTTP/2 server connections (RFC 9113) on nghttp2, the way its authors use
 * it with libevent (examples/libevent-server.c): input is fed with
 * nghttp2_session_mem_recv, output is taken with nghttp2_session_mem_send
 * into the bufferevent while that is below OUT_HIGH, and resumed from the
 * write callback.
 *
 * One request stream is one exchange (exchange.c); a stream is the
 * exchange's downstream (struct sg_downstream_ops below).
 *
 * Lifetimes:
 *  - a stream (struct h2s_stream) is created in on_begin_headers and freed
 *    only in on_stream_close, which nghttp2 calls from inside mem_recv or
 *    mem_send. The downstream ops never call those two: they only queue
 *    frames and schedule a flush (kick_ev), so a stream is never freed
 *    under an exchange that is calling it.
 *  - the connection is closed only from libevent callbacks at the top of
 *    the stack, and its memory (session, streams) goes through
 *    sg_worker_defer.
 *
 * Backpressure:
 *  - response: bytes for a stream wait in its own evbuffer until flow
 *    control lets nghttp2 take them; above STREAM_OUT_HIGH the exchange
 *    stops reading its upstream (congested). One slow stream never holds
 *    the others: their DATA goes out as their windows allow.
 *  - request: automatic WINDOW_UPDATE is off. The connection window is
 *    given back at once (so one stream cannot starve the others of it);
 *    a stream's window only once its exchange is not congested, so a slow
 *    upstream closes that stream's window (RFC 9113 5.2) and nothing else.
 *  - connection: the socket is not read while OUT_HIGH bytes wait to be
 *    written, so a client that does not read cannot make us queue frames
 *    without bound. */
#include "strangler/h2_server.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/h2_internal.h"
#include "strangler/clock.h"
#include "strangler/exchange.h"
#include "strangler/h1.h"
#include "strangler/io.h"
#include "strangler/log.h"
#include "strangler/mem.h"
#include "strangler/metrics.h"
#include "strangler/worker.h"

/* Socket output: nghttp2 produces frames until this much waits. */
#define OUT_HIGH (128u * 1024u)
#define OUT_LOW (32u * 1024u)
#define IN_HIGH (64u * 1024u)
/* Per-stream response bytes waiting for flow control. */
#define STREAM_OUT_HIGH (256u * 1024u)
#define STREAM_OUT_LOW (64u * 1024u)
/* SETTINGS (RFC 9113 6.5.2) and the connection window. */
#define MAX_STREAMS 128u
#define STREAM_WINDOW (128u * 1024u)
#define CONN_WINDOW (MAX_STREAMS * STREAM_WINDOW)
/* Graceful shutdown: the final GOAWAY goes when the PING sent with the
 * notice comes back, or after this long. */
#define DRAIN_GRACE_MS 1000u

static const uint8_t drain_ping[8] = { 's', 'g', '-', 'd', 'r', 'a', 'i', 'n' };

enum timer_mode { TM_NONE, TM_HEADER, TM_IDLE, TM_DRAIN };

struct h2s_stream {
    struct sg_h2s *c;
    int32_t id;
    struct sg_h2_head head;
    struct sg_request req;
    struct sg_exchange *ex; /* NULL once the exchange is done */
    struct evbuffer *body; /* response bytes not yet in DATA frames */
    struct sg_h2_nvlist trailers;
    struct sg_h1_head req_trailers; /* the client's trailer section, forwarded */
    size_t unconsumed; /* request DATA not yet given back as stream window */
    bool head_done; /* request head complete */
    bool req_ended; /* END_STREAM received */
    bool responded; /* final response HEADERS submitted */
    bool no_body; /* HEAD, 204, 304: body bytes are dropped */
    bool eof; /* the response body is complete */
    bool deferred; /* the data source is waiting for bytes */
    bool reset; /* RST_STREAM submitted */
    bool reset_after; /* request unfinished: RST_STREAM(NO_ERROR) after the response */
    bool resp_ended; /* our END_STREAM went out */
    bool notify_writable;
    struct h2s_stream *prev, *next;
};

struct sg_h2s {
    struct sg_worker *w;
    struct sg_listener_rt *l;
    struct bufferevent *bev;
    nghttp2_session *ngh;
    char client[64];
    struct h2s_stream *streams;
    size_t n_streams, n_heads_open;
    struct event timer, kick_ev, hold_ev;
    enum timer_mode timer_mode;
    bool closed, closing, broken, read_paused, got_request, holding;
    bool drain_sent, goaway_final;
    struct sg_h2s *prev_conn, *next_conn;
};

/* The worker's sessions. A worker is one thread, and drain_all/close_all
 * run on it, so a thread-local list is the worker's list. */
static _Thread_local struct sg_h2s *tl_conns;

static const struct sg_downstream_ops h2s_ops;
static void conn_settle(struct sg_h2s *c);

static const struct sg_limits *limits(const struct sg_h2s *c)
{
    return &c->w->snap->cfg->limits;
}

static struct evbuffer *conn_out(const struct sg_h2s *c)
{
    return bufferevent_get_output(c->bev);
}

/* Frames were queued from an exchange callback: send them from the top of
 * the stack, later in this loop turn. While other streams of the
 * connection are open, their responses are usually a loop turn away (the
 * upstreams answer one after the other): the frames then wait for the next
 * turn's callbacks (a timer of zero lets epoll_wait only look, never
 * sleep) and go out with whatever those add, in one segment where each
 * turn would send its own. nghttpx, which writes when epoll next reports
 * the socket writable, batches the same way. */
static void kick(struct sg_h2s *c)
{
    if (c->closed)
        return;
    if (c->n_streams > 1) {
        if (!c->holding) {
            static const struct timeval now = { 0, 0 };
            c->holding = true;
            event_add(&c->hold_ev, &now);
        }
        return;
    }
    event_active(&c->kick_ev, EV_WRITE, 0);
}

/* ---- streams -------------------------------------------------------------- */

static struct h2s_stream *stream_new(struct sg_h2s *c, int32_t id)
{
    struct h2s_stream *st = sg_mem_calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->body = evbuffer_new();
    if (!st->body) {
        sg_mem_free(st);
        return NULL;
    }
    st->c = c;
    st->id = id;
    sg_h2_head_init(&st->head, (size_t)limits(c)->max_header_bytes);
    sg_h2_nv_init(&st->trailers);
    sg_h1_head_init(&st->req_trailers, (size_t)limits(c)->max_header_bytes);
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    c->n_streams++;
    c->n_heads_open++;
    return st;
}

static void stream_free(struct h2s_stream *st)
{
    sg_h2_head_free(&st->head);
    sg_h2_nv_free(&st->trailers);
    sg_h1_head_free(&st->req_trailers);
    evbuffer_free(st->body);
    sg_mem_free(st);
}

static void stream_unlink(struct h2s_stream *st)
{
    struct sg_h2s *c = st->c;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    c->n_streams--;
    if (!st->head_done)
        c->n_heads_open--;
}

/* The exchange will never call this stream again. */
static void stream_detach(struct h2s_stream *st)
{
    if (st->ex) {
        struct sg_exchange *ex = st->ex;
        st->ex = NULL;
        sg_exchange_downstream_gone(ex);
    }
}

static void stream_reset(struct h2s_stream *st, uint32_t code)
{
    if (st->reset)
        return;
    st->reset = true;
    nghttp2_submit_rst_stream(st->c->ngh, NGHTTP2_FLAG_NONE, st->id, code);
    kick(st->c);
}

/* Gives the client back the window its DATA used, unless the exchange
 * wants the request body slower (RFC 9113 5.2.2: flow control is how a
 * receiver limits a sender). Without an exchange the bytes are dropped,
 * so they are given back at once. */
static void stream_window(struct h2s_stream *st)
{
    if (st->unconsumed == 0 || (st->ex && sg_exchange_request_congested(st->ex)))
        return;
    nghttp2_session_consume_stream(st->c->ngh, st->id, st->unconsumed);
    st->unconsumed = 0;
    kick(st->c);
}

/* ---- responses ------------------------------------------------------------ */

static void nv_status(struct sg_h2_nvlist *nv, int status)
{
    sg_h2_nv_num(nv, SG_STR_LIT(":status"), status > 0 ? (uint64_t)status : 0);
}

static void nv_length(struct sg_h2_nvlist *nv, int64_t len)
{
    sg_h2_nv_num(nv, SG_STR_LIT("content-length"), len > 0 ? (uint64_t)len : 0);
}

/* DATA frames come from the stream's evbuffer. An empty buffer before the
 * end defers the stream until body/end resume it. */
static ssize_t read_body(nghttp2_session *ngh, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    struct h2s_stream *st = src->ptr;
    size_t have = evbuffer_get_length(st->body);
    size_t n = have < length ? have : length;
    if (n)
        evbuffer_remove(st->body, buf, n);
    if (have > STREAM_OUT_LOW && have - n <= STREAM_OUT_LOW)
        st->notify_writable = true;
    if (n == have && st->eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        /* Trailers end the stream instead of this DATA (RFC 9113 8.1). */
        if (st->trailers.n && nghttp2_submit_trailer(ngh, id, st->trailers.v, st->trailers.n) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        return (ssize_t)n;
    }
    if (n == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* The final response: HEADERS, then DATA from the stream's buffer. Even a
 * response without content goes through the data source, so that the
 * stream only ends once the exchange has (an empty DATA with END_STREAM). */
static void submit_response(struct h2s_stream *st, struct sg_h2_nvlist *nv)
{
    nghttp2_data_provider prd = { .source.ptr = st, .read_callback = read_body };
    if (nv->failed || nghttp2_submit_response(st->c->ngh, st->id, nv->v, nv->n, &prd) != 0) {
        stream_reset(st, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    st->responded = true;
    kick(st->c);
}

static void resume(struct h2s_stream *st)
{
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(st->c->ngh, st->id);
    }
    kick(st->c);
}

/* A complete short text/plain answer from the proxy itself. */
static void stream_answer(struct h2s_stream *st, int status, const char *text)
{
    if (st->responded || st->reset)
        return;
    size_t len = strlen(text);
    struct sg_h2_nvlist nv;
    sg_h2_nv_init(&nv);
    nv_status(&nv, status);
    sg_h2_nv_ref(&nv, SG_STR_LIT("content-type"), SG_STR_LIT("text/plain; charset=utf-8"));
    nv_length(&nv, (int64_t)len);
    st->no_body = st->req.head_method;
    if (!st->no_body)
        evbuffer_add(st->body, text, len);
    st->eof = true;
    submit_response(st, &nv);
    sg_h2_nv_free(&nv);
}

/* ---- the downstream ops --------------------------------------------------- */

static void send_interim(struct h2s_stream *st, int status, const struct sg_headers *h)
{
    if (st->responded || st->reset)
        return;
    struct sg_h2_nvlist nv;
    sg_h2_nv_init(&nv);
    nv_status(&nv, status);
    if (h)
        sg_headers_forward_response(h, NULL, false, sg_h2_nv_emit_ref, &nv);
    if (!nv.failed)
        nghttp2_submit_headers(st->c->ngh, NGHTTP2_FLAG_NONE, st->id, NULL, nv.v, nv.n, NULL);
    sg_h2_nv_free(&nv);
    kick(st->c);
}

static void ds_expect_continue(void *ds)
{
    send_interim(ds, 100, NULL);
}

/* 1xx other than 101, which HTTP/2 does not have (RFC 9113 8.6). */
static void ds_interim(void *ds, int status, const struct sg_headers *h)
{
    if (status != 101)
        send_interim(ds, status, h);
}

static void ds_head(void *ds, int status, const struct sg_headers *h, const struct sg_header_edits *edits,
                    int64_t content_length, bool upgrade)
{
    struct h2s_stream *st = ds;
    if (st->responded || st->reset)
        return;
    if (upgrade || status == 101) { /* never asked for (8.6); cannot be relayed */
        stream_reset(st, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    st->no_body = st->req.head_method || status == 204 || status == 304;
    struct sg_h2_nvlist nv;
    sg_h2_nv_init(&nv);
    nv_status(&nv, status);
    /* Drops hop-by-hop and Connection-named fields (8.2.2), applies the
     * route's response_headers; nghttp2 lower-cases the names as it
     * copies the list. */
    sg_headers_forward_response(h, edits, false, sg_h2_nv_emit_ref, &nv);
    if (content_length >= 0 && status != 204)
        nv_length(&nv, content_length);
    submit_response(st, &nv);
    sg_h2_nv_free(&nv);
}

static void ds_body(void *ds, const char *p, size_t n)
{
    struct h2s_stream *st = ds;
    if (st->no_body || st->reset || n == 0)
        return;
    evbuffer_add(st->body, p, n);
    resume(st);
}

static void ds_end(void *ds, const struct sg_headers *trailers)
{
    struct h2s_stream *st = ds;
    if (st->reset)
        return;
    if (trailers && trailers->n && !st->no_body) {
        sg_h2_nv_add_trailers(&st->trailers, trailers);
        if (st->trailers.failed)
            sg_h2_nv_free(&st->trailers); /* better no trailers than a broken list */
    }
    st->eof = true;
    resume(st);
}

static void ds_local(void *ds, int status, const char *text, bool close)
{
    stream_answer(ds, status, text);
}

static bool ds_congested(void *ds)
{
    struct h2s_stream *st = ds;
    return evbuffer_get_length(st->body) > STREAM_OUT_HIGH;
}

static void ds_pause_request(void *ds, bool pause)
{
    if (!pause)
        stream_window(ds);
}

static void ds_abort(void *ds)
{
    stream_reset(ds, NGHTTP2_INTERNAL_ERROR);
}

/* `close` asks an HTTP/1.1 connection to close; here it only concerns
 * this stream: a request body still arriving is refused with
 * RST_STREAM(NO_ERROR) once the response is out (RFC 9113 8.1). */
static void ds_done(void *ds, bool close)
{
    struct h2s_stream *st = ds;
    st->ex = NULL;
    stream_window(st); /* the rest of the body is dropped */
    if (!st->responded && !st->reset)
        stream_reset(st, NGHTTP2_INTERNAL_ERROR);
    if (!st->req_ended) {
        st->reset_after = true;
        if (st->resp_ended)
            stream_reset(st, NGHTTP2_NO_ERROR);
    }
}

static void ds_tunnel(void *ds, struct bufferevent *up)
{
    bufferevent_free(up); /* no Upgrade in HTTP/2: ds_head reset the stream */
    stream_reset(ds, NGHTTP2_INTERNAL_ERROR);
}

static const struct sg_downstream_ops h2s_ops = {
    .expect_continue = ds_expect_continue,
    .interim = ds_interim,
    .head = ds_head,
    .body = ds_body,
    .end = ds_end,
    .local = ds_local,
    .congested = ds_congested,
    .pause_request = ds_pause_request,
    .abort = ds_abort,
    .done = ds_done,
    .tunnel = ds_tunnel,
};

/* ---- requests ------------------------------------------------------------- */

static void stream_request_end(struct h2s_stream *st)
{
    st->req_ended = true;
    bool trailers = st->req_trailers.n_fields && sg_h1_head_finish(&st->req_trailers);
    if (st->ex)
        sg_exchange_request_end(st->ex, trailers ? &st->req_trailers.headers : NULL);
}

static void stream_start(struct h2s_stream *st)
{
    struct sg_h2s *c = st->c;
    st->req.client_addr = sg_str_c(c->client);
    /* The connection's scheme, not the client's :scheme claim. */
    st->req.scheme = c->l->tls ? SG_STR_LIT("https") : SG_STR_LIT("http");
    st->ex = sg_exchange_new(c->w, &h2s_ops, st, &st->req);
    if (!st->ex) {
        stream_answer(st, 500, "out of memory\n");
        return;
    }
    /* May answer (and call ds_done) before it returns. */
    sg_exchange_start(st->ex);
}

/* The request head is complete: a malformed one is a stream error
 * (RFC 9113 8.1.1), others get an answer or an exchange. */
static void stream_head_complete(struct h2s_stream *st, bool end_stream)
{
    struct sg_h2s *c = st->c;
    int status = 0;
    const char *text = NULL;
    st->head_done = true;
    c->n_heads_open--;
    st->req_ended = end_stream;
    switch (sg_h2_head_finish(&st->head, end_stream, &st->req, &status, &text)) {
    case SG_H2_MALFORMED:
        sg_debug("h2 client %s stream %d: %s", c->client, (int)st->id, st->head.malformed);
        stream_reset(st, st->head.malformed == sg_h2_err_nomem ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_PROTOCOL_ERROR);
        return;
    case SG_H2_ANSWER:
        st->req.head_method = sg_str_eq(st->head.method, SG_STR_LIT("HEAD"));
        stream_answer(st, status, text);
        ds_done(st, !end_stream);
        return;
    case SG_H2_REQUEST:
        stream_start(st);
        if (end_stream && st->ex)
            sg_exchange_request_end(st->ex, NULL);
        return;
    }
}

/* ---- nghttp2 callbacks ---------------------------------------------------- */

static struct h2s_stream *stream_of(nghttp2_session *ngh, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ngh, id);
}

static int on_begin_headers(nghttp2_session *ngh, const nghttp2_frame *frame, void *user)
{
    struct sg_h2s *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2s_stream *st = stream_new(c, frame->hd.stream_id);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM(INTERNAL_ERROR) */
    c->got_request = true;
    nghttp2_session_set_stream_user_data(ngh, frame->hd.stream_id, st);
    return 0;
}

/* Request fields, and the trailer section after the body (nghttp2 has
 * checked it carries no pseudo-headers); trailers over the header limit
 * reset the stream. */
static int on_header(nghttp2_session *ngh, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2s_stream *st = stream_of(ngh, frame->hd.stream_id);
    if (!st)
        return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        sg_h2_head_field(&st->head, name, namelen, value, valuelen);
        return 0;
    }
    if (!sg_h1_head_add_field(&st->req_trailers, (const char *)name, namelen, (const char *)value, valuelen))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static void on_ping(struct sg_h2s *c, const nghttp2_frame *frame)
{
    if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && c->drain_sent && !c->goaway_final &&
        memcmp(frame->ping.opaque_data, drain_ping, sizeof drain_ping) == 0) {
        c->goaway_final = true; /* a round trip after the notice (RFC 9113 6.8) */
        nghttp2_submit_goaway(c->ngh, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ngh),
                              NGHTTP2_NO_ERROR, NULL, 0);
    }
}

static int on_frame_recv(nghttp2_session *ngh, const nghttp2_frame *frame, void *user)
{
    struct h2s_stream *st;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!(st = stream_of(ngh, frame->hd.stream_id)))
            break;
        if (!st->head_done)
            stream_head_complete(st, end);
        else if (end)
            stream_request_end(st); /* trailers */
        break;
    case NGHTTP2_DATA:
        if (end && (st = stream_of(ngh, frame->hd.stream_id)))
            stream_request_end(st);
        break;
    case NGHTTP2_PING:
        on_ping(user, frame);
        break;
    default:
        break;
    }
    return 0;
}

/* The connection window goes back at once; the stream's when the
 * exchange can take more (stream_window). */
static int on_data_chunk(nghttp2_session *ngh, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *user)
{
    nghttp2_session_consume_connection(ngh, len);
    struct h2s_stream *st = stream_of(ngh, id);
    if (!st) {
        nghttp2_session_consume_stream(ngh, id, len);
        return 0;
    }
    st->unconsumed += len;
    if (st->ex)
        sg_exchange_request_body(st->ex, (const char *)data, len);
    stream_window(st);
    return 0;
}

static int on_frame_send(nghttp2_session *ngh, const nghttp2_frame *frame, void *user)
{
    if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct h2s_stream *st = stream_of(ngh, frame->hd.stream_id);
    if (!st)
        return 0;
    st->resp_ended = true;
    if (st->reset_after && !st->req_ended)
        stream_reset(st, NGHTTP2_NO_ERROR);
    return 0;
}

/* Client RST_STREAM, our own, a normal end, or GOAWAY: the one place a
 * stream goes. */
static int on_stream_close(nghttp2_session *ngh, int32_t id, uint32_t code, void *user)
{
    struct h2s_stream *st = stream_of(ngh, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(ngh, id, NULL);
    stream_detach(st);
    stream_unlink(st);
    stream_free(st);
    return 0;
}

static int on_error(nghttp2_session *ngh, int code, const char *msg, size_t len, void *user)
{
    struct sg_h2s *c = user;
    sg_debug("h2 client %s: %.*s", c->client, (int)len, msg);
    return 0;
}

/* ---- the connection ------------------------------------------------------- */

static int session_new(struct sg_h2s *c)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(cb, on_error);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rv = nghttp2_session_server_new3(&c->ngh, cb, c, opt, sg_mem_nghttp2());
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    return rv == 0 ? 0 : -1;
}

/* Our SETTINGS go first (RFC 9113 3.4); they are documented in
 * docs/http2.md. */
static int session_settings(struct sg_h2s *c)
{
    uint64_t hdr = limits(c)->max_header_bytes;
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, hdr > UINT32_MAX ? UINT32_MAX : (uint32_t)hdr },
    };
    if (nghttp2_submit_settings(c->ngh, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0)
        return -1;
    return nghttp2_session_set_local_window_size(c->ngh, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) == 0 ? 0 : -1;
}

static void conn_free(void *arg)
{
    struct sg_h2s *c = arg;
    /* nghttp2_session_del calls no callbacks: the streams are ours to free. */
    if (c->ngh)
        nghttp2_session_del(c->ngh);
    for (struct h2s_stream *st = c->streams, *next; st; st = next) {
        next = st->next;
        stream_free(st);
    }
    free(c);
}

static void conn_unlink(struct sg_h2s *c)
{
    if (c->prev_conn)
        c->prev_conn->next_conn = c->next_conn;
    else
        tl_conns = c->next_conn;
    if (c->next_conn)
        c->next_conn->prev_conn = c->prev_conn;
}

/* Idempotent. Every live exchange learns the client is gone; the memory
 * goes after the current callbacks return. */
static void conn_close(struct sg_h2s *c)
{
    if (c->closed)
        return;
    c->closed = true;
    for (struct h2s_stream *st = c->streams; st; st = st->next)
        stream_detach(st);
    event_del(&c->timer);
    event_del(&c->kick_ev);
    event_del(&c->hold_ev);
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
    conn_unlink(c);
    struct sg_worker *w = c->w;
    sg_metrics_gauge_add(w->metrics, c->l->conn_gauge, -1);
    sg_worker_conn_closed(w);
    sg_worker_defer(w, conn_free, c);
}

/* nghttp2 hands out about one frame per mem_send call, and every
 * evbuffer_add runs the output buffer's callbacks (libevent's and the
 * write-through's): frames are gathered in a per-thread buffer and added
 * in one piece; a frame that does not fit in it is added by itself. */
#define SEND_STAGE (16u * 1024u)
static _Thread_local uint8_t send_stage[SEND_STAGE];

/* Moves frames from nghttp2 to the socket while below OUT_HIGH. */
static bool conn_send(struct sg_h2s *c)
{
    struct evbuffer *o = conn_out(c);
    size_t queued = evbuffer_get_length(o), staged = 0;
    bool ok = true;
    while (ok && queued + staged < OUT_HIGH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->ngh, &data);
        if (n < 0) {
            sg_debug("h2 client %s: send: %s", c->client, nghttp2_strerror((int)n));
            ok = false;
        } else if (n == 0) {
            break;
        } else if ((size_t)n <= SEND_STAGE - staged) {
            memcpy(send_stage + staged, data, (size_t)n);
            staged += (size_t)n;
        } else {
            /* What was staged goes first, then this frame by itself or
             * staged afresh. */
            ok = staged == 0 || evbuffer_add(o, send_stage, staged) == 0;
            queued += staged;
            staged = 0;
            if (ok && (size_t)n > SEND_STAGE) {
                ok = evbuffer_add(o, data, (size_t)n) == 0;
                queued += (size_t)n;
            } else if (ok) {
                memcpy(send_stage, data, (size_t)n);
                staged = (size_t)n;
            }
        }
    }
    /* Frames nghttp2 has handed out are sent even after an error (a
     * GOAWAY among them). */
    if (staged && evbuffer_add(o, send_stage, staged) != 0)
        ok = false;
    return ok;
}

/* Input is fed to nghttp2 only while the output has room: the answers to
 * it (SETTINGS ACK, PING ACK, WINDOW_UPDATE, responses) must be able to
 * leave. */
static bool recv_room(const struct sg_h2s *c)
{
    return !c->broken && evbuffer_get_length(conn_out(c)) < OUT_HIGH;
}

/* One contiguous piece through nghttp2, and what it answers out. Returns
 * what nghttp2 took, or -1 when the input is fatal (bad preface, flood,
 * out of memory): nghttp2 has queued a GOAWAY where one is due, and the
 * connection is broken (that GOAWAY is sent, then it closes). */
static ssize_t conn_feed(struct sg_h2s *c, const char *p, size_t n)
{
    ssize_t r = nghttp2_session_mem_recv(c->ngh, (const uint8_t *)p, n);
    if (r < 0) {
        sg_debug("h2 client %s: %s", c->client, nghttp2_strerror((int)r));
        c->broken = true;
        return -1;
    }
    if (!conn_send(c))
        c->broken = true;
    return r;
}

/* Feeds the input to nghttp2, a contiguous piece at a time. */
static void conn_recv(struct sg_h2s *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (recv_room(c) && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = conn_feed(c, v.iov_base, v.iov_len);
        evbuffer_drain(in, n < 0 ? evbuffer_get_length(in) : (size_t)n);
    }
}

static void notify_writable(struct sg_h2s *c)
{
    for (struct h2s_stream *st = c->streams; st; st = st->next)
        if (st->notify_writable) {
            st->notify_writable = false;
            if (st->ex)
                sg_exchange_downstream_writable(st->ex);
        }
}

static void arm_timer(struct sg_h2s *c)
{
    enum timer_mode mode = c->closing                        ? TM_NONE
                           : c->drain_sent && !c->goaway_final ? TM_DRAIN
                           : c->n_heads_open                   ? TM_HEADER
                           : c->n_streams                      ? TM_NONE
                           : c->got_request                    ? TM_IDLE
                                                               : TM_HEADER;
    if (mode == c->timer_mode)
        return;
    c->timer_mode = mode;
    uint64_t ms = mode == TM_DRAIN    ? DRAIN_GRACE_MS
                  : mode == TM_HEADER ? limits(c)->header_timeout_ms
                  : mode == TM_IDLE   ? limits(c)->idle_timeout_ms
                                      : 0;
    event_del(&c->timer);
    if (ms) {
        struct timeval tv = sg_tv_ms(ms);
        event_add(&c->timer, &tv);
    }
}

/* After any input or output: close when nghttp2 is done (both GOAWAYs
 * settled, or a fatal error) and the output is flushed; pause reading
 * while the output is full. */
static void conn_settle(struct sg_h2s *c)
{
    if (c->closed)
        return;
    if (!c->broken && !conn_send(c))
        c->broken = true;
    notify_writable(c);
    size_t pending = evbuffer_get_length(conn_out(c));
    if (c->broken || (!nghttp2_session_want_read(c->ngh) && !nghttp2_session_want_write(c->ngh))) {
        if (pending == 0) {
            conn_close(c);
            return;
        }
        c->closing = true;
        bufferevent_disable(c->bev, EV_READ);
        bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
        arm_timer(c);
        return;
    }
    bool full = pending >= OUT_HIGH;
    if (full != c->read_paused) {
        c->read_paused = full;
        if (full)
            bufferevent_disable(c->bev, EV_READ);
        else
            bufferevent_enable(c->bev, EV_READ);
    }
    arm_timer(c);
}

static void conn_run(struct sg_h2s *c)
{
    if (c->closed)
        return;
    if (!c->closing)
        conn_recv(c);
    conn_settle(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    conn_run(arg);
}

/* conn_run on bytes io.c has not added to the (empty) input yet
 * (sg_io_direct): nghttp2 reads them where they are; what it does not
 * take while the output is full goes into the input for read_cb. */
static size_t h2s_direct(struct bufferevent *bev, const char *p, size_t n, void *arg)
{
    struct sg_h2s *c = arg;
    if (c->closed || c->closing)
        return 0;
    size_t done = 0;
    while (recv_room(c) && done < n) {
        ssize_t r = conn_feed(c, p + done, n - done);
        done = r < 0 ? n : done + (size_t)r; /* as in conn_recv: after a fatal error, the rest goes nowhere */
    }
    conn_settle(c);
    return done;
}

void sg_h2s_io_register(void)
{
    sg_io_direct(read_cb, h2s_direct);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct sg_h2s *c = arg;
    if (c->closing) {
        if (evbuffer_get_length(conn_out(c)) == 0)
            conn_close(c);
        return;
    }
    conn_run(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    conn_close(arg);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_run(arg);
}

/* The next turn's timers run before the reads they polled (io.c batches
 * those into an event of its own, activated by the sockets' callbacks):
 * the kick goes behind them. */
static void hold_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_h2s *c = arg;
    c->holding = false;
    if (!c->closed)
        event_active(&c->kick_ev, EV_WRITE, 0);
}

static void conn_drain(struct sg_h2s *c);

/* header_timeout (no request yet, or a header block left open), idle
 * timeout (no stream open): GOAWAY and close. Drain grace: the final
 * GOAWAY without waiting for the PING any longer. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_h2s *c = arg;
    enum timer_mode mode = c->timer_mode;
    c->timer_mode = TM_NONE;
    if (c->closed || c->closing)
        return;
    if (mode == TM_DRAIN) {
        c->goaway_final = true;
        nghttp2_submit_goaway(c->ngh, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ngh),
                              NGHTTP2_NO_ERROR, NULL, 0);
    } else {
        sg_debug("h2 client %s: %s timeout", c->client, mode == TM_IDLE ? "idle" : "header");
        nghttp2_session_terminate_session(c->ngh, NGHTTP2_NO_ERROR);
    }
    conn_settle(c);
}

/* RFC 9113 6.8: a GOAWAY with the largest stream id first, so requests
 * already on the wire are not lost, and a PING to learn when a round trip
 * has passed; the final GOAWAY follows in on_ping (or timer_cb). */
static void conn_drain(struct sg_h2s *c)
{
    if (c->closed || c->drain_sent)
        return;
    c->drain_sent = true;
    nghttp2_submit_shutdown_notice(c->ngh);
    nghttp2_submit_ping(c->ngh, NGHTTP2_FLAG_NONE, drain_ping);
    conn_settle(c);
}

static void takeover_failed(struct sg_listener_rt *l, struct bufferevent *bev)
{
    bufferevent_free(bev);
    sg_metrics_gauge_add(l->worker->metrics, l->conn_gauge, -1);
    sg_worker_conn_closed(l->worker);
}

void sg_h2s_takeover(struct sg_listener_rt *l, struct bufferevent *bev, const char *client_addr)
{
    struct sg_worker *w = l->worker;
    struct sg_h2s *c = calloc(1, sizeof *c);
    if (c) {
        c->w = w;
        c->l = l;
        c->bev = bev;
    }
    if (!c || session_new(c) != 0 || session_settings(c) != 0) {
        if (c && c->ngh)
            nghttp2_session_del(c->ngh);
        free(c);
        takeover_failed(l, bev);
        return;
    }
    snprintf(c->client, sizeof c->client, "%s", client_addr);
    event_assign(&c->timer, w->base, -1, 0, timer_cb, c);
    event_assign(&c->kick_ev, w->base, -1, 0, kick_cb, c);
    event_assign(&c->hold_ev, w->base, -1, 0, hold_cb, c);
    bufferevent_setcb(bev, read_cb, write_cb, event_cb, c);
    sg_io_read_high(bev, IN_HIGH);
    bufferevent_setwatermark(bev, EV_WRITE, OUT_LOW, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    c->next_conn = tl_conns;
    if (tl_conns)
        tl_conns->prev_conn = c;
    tl_conns = c;
    arm_timer(c); /* header_timeout for the first request, as on HTTP/1.1 */
    if (w->draining)
        conn_drain(c);
    /* The preface (and whatever followed it) is already in the input. */
    kick(c);
}

void sg_h2s_drain_all(struct sg_worker *w)
{
    for (struct sg_h2s *c = tl_conns, *next; c; c = next) {
        next = c->next_conn;
        if (c->w == w)
            conn_drain(c);
    }
}

void sg_h2s_close_all(struct sg_worker *w)
{
    for (struct sg_h2s *c = tl_conns, *next; c; c = next) {
        next = c->next_conn;
        if (c->w == w)
            conn_close(c);
    }
}
