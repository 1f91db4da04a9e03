/* HTTP/1.1 server connections.
 *
 * States: HEAD (reading a request head; header_timeout armed) -> BODY
 * (exchange running, request body streaming) -> WAIT (request complete,
 * response streaming; input is not parsed, so pipelined requests wait
 * their turn in the input buffer) -> IDLE (idle_timeout armed) -> HEAD ...
 * A connection marked `closing` is closed once its output has drained. */
#include "strangler/h1_server.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "strangler/clock.h"
#include "strangler/deadline.h"
#include "strangler/exchange.h"
#include "strangler/h1.h"
#include "strangler/h1_reader.h"
#include "strangler/h2_server.h"
#include "strangler/io.h"
#include "strangler/log.h"
#include "strangler/tls.h"
#include "strangler/worker.h"

#define OUT_HIGH (256u * 1024u)
#define OUT_LOW (64u * 1024u)
/* Unparsed input held while a response is in progress (pipelining). */
#define IN_HIGH (128u * 1024u)

enum h1s_state { ST_IDLE, ST_HEAD, ST_BODY, ST_WAIT, ST_TUNNEL };

struct sg_h1s {
    /* What a parked connection keeps (see park()): every member up to
     * `rd`, and nothing else may be touched on a parked one. */
    struct sg_worker *w;
    struct sg_listener_rt *l;
    struct bufferevent *bev;
    struct sg_exchange *ex;
    enum h1s_state state;
    int parked_fd; /* >= 0 while parked: no bufferevent, the timer watches the socket */
    bool closed, handed_off; /* handed_off: socket given to h2_server.c */
    bool parked; /* this is the small copy: only the members above `rd` exist */
    uint64_t idle_left_ms; /* of the idle timeout, once parked */
    struct event timer;
    struct sg_h1s *prev_conn, *next_conn;
    char client[INET6_ADDRSTRLEN];
    /* ---- the rest exists while the connection is not parked */
    struct sg_h1_reader rd; /* the request side: parser, head, checks (h1_reader.h) */
    bool keep_alive, closing, in_parse, read_paused;
    bool proto_known; /* HTTP/1.1 vs h2c decided */
    bool resp_chunked, resp_no_body;
    bool park_armed; /* the timer parks the connection rather than ending it */
    struct sg_deadline deadline; /* of `timer`, kept lazily (deadline.h) */
};

#define H1S_PARKED_SIZE offsetof(struct sg_h1s, rd)

/* A keep-alive connection idle this long gives its bufferevent back (about
 * 900 bytes with its two buffers) and its request-side state, and waits as
 * a copy of its first members (248 bytes) with one event on its socket:
 * most of a proxy's connections are idle. Under load a client's requests
 * come far closer together than this, so busy connections never park; a
 * slower client pays a malloc round trip per request, a few microseconds.
 * Short, so that a burst of connections that each make one request and
 * then wait (health checkers, pools kept warm) never holds them all at
 * full size at once: with 100 ms, 5,000 such connections left 1,150 bytes
 * of RSS each behind, with 20 ms 570-660. */
#define PARK_AFTER_MS 20u

static void h1s_close(struct sg_h1s *s);
static void h1s_process(struct sg_h1s *s);
static void h1s_respond_error(struct sg_h1s *s, int status, const char *text);
static void go_idle(struct sg_h1s *s);

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static struct evbuffer *out(struct sg_h1s *s)
{
    return bufferevent_get_output(s->bev);
}

/* ---- timers ------------------------------------------------------------ */

/* Sets (ms > 0) or clears the connection's one deadline: the header
 * timeout, the idle timeout, the park delay, the drain bound. A busy
 * keep-alive connection sets three per request; kept lazily, the timer is
 * touched about once per PARK_AFTER_MS instead of five times per request. */
static void arm_timer(struct sg_h1s *s, uint64_t ms)
{
    sg_deadline_set(&s->deadline, &s->timer, ms);
}

static bool park(struct sg_h1s *s, uint64_t left_ms);

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_h1s *s = arg;
    if (!sg_deadline_due(&s->deadline, &s->timer))
        return; /* cleared, or moved later, since it was set */
    if (s->closing) { /* the last bytes did not drain in time */
        h1s_close(s);
        return;
    }
    if (s->state == ST_IDLE && s->park_armed) {
        s->park_armed = false;
        if (!park(s, s->idle_left_ms))
            arm_timer(s, s->idle_left_ms);
        return;
    }
    /* A partial head gets 408 (slowloris); a connection that never sent
     * a byte is simply closed, as nginx does. */
    bool partial = sg_h1_reader_partial(&s->rd);
    if (s->state == ST_HEAD && partial && !s->closing)
        h1s_respond_error(s, 408, "request head not received in time\n");
    else if (s->state == ST_IDLE || s->state == ST_HEAD)
        h1s_close(s);
}

static const struct sg_limits *limits(struct sg_h1s *s)
{
    return &s->w->snap->cfg->limits;
}

/* ---- the request side (h1_reader.h) ------------------------------------- */

static void rd_begin(void *owner)
{
    struct sg_h1s *s = owner;
    if (s->state == ST_IDLE) {
        s->state = ST_HEAD;
        arm_timer(s, limits(s)->header_timeout_ms);
    }
}

static const struct sg_downstream_ops h1s_ops;

static bool rd_head(void *owner, struct sg_request *req)
{
    struct sg_h1s *s = owner;
    arm_timer(s, 0);
    s->keep_alive = s->rd.keep_alive;
    req->client_addr = sg_str_c(s->client);
    req->scheme = s->l->tls ? SG_STR_LIT("https") : SG_STR_LIT("http");
    s->state = ST_BODY;
    s->ex = sg_exchange_new(s->w, &h1s_ops, s, req);
    if (!s->ex) {
        sg_h1_reader_reject(&s->rd, 500, "out of memory\n");
        return false;
    }
    sg_exchange_start(s->ex);
    return true;
}

static void rd_body(void *owner, const char *p, size_t n)
{
    struct sg_h1s *s = owner;
    if (s->ex)
        sg_exchange_request_body(s->ex, p, n);
}

/* The request is complete (and its trailers, if any, are valid). */
static void rd_end(void *owner, const struct sg_headers *trailers)
{
    struct sg_h1s *s = owner;
    if (s->state == ST_BODY)
        s->state = ST_WAIT;
    if (s->ex)
        sg_exchange_request_end(s->ex, trailers);
    else if (!s->closing && !s->closed && s->state == ST_WAIT)
        go_idle(s); /* answered already */
}

/* A bad request: the exchange answers it if there is one (its head was
 * accepted), else the connection does; either way the connection ends. A
 * chunked request refused at its end is complete, not still arriving. */
static void rd_refuse(void *owner, int status, const char *why, enum sg_h1_refusal where)
{
    struct sg_h1s *s = owner;
    sg_debug("client %s: bad request: %d %s", s->client, status, why);
    if (where == SG_H1_BAD_END && s->state == ST_BODY)
        s->state = ST_WAIT;
    h1s_respond_error(s, status, why);
}

static const struct sg_h1_reader_ops h1s_reader_ops = {
    .begin = rd_begin,
    .head = rd_head,
    .body = rd_body,
    .end = rd_end,
    .refuse = rd_refuse,
};

/* ---- input --------------------------------------------------------------- */

/* One contiguous piece of the input through the reader. False when
 * parsing stops here: a request is complete (its response goes first), or
 * the connection is ending. */
/* Bytes at p through the reader; *used: how many it took. With `in`, they
 * are the front of the input and go from it before anything is said
 * about them: an error or the end of a chunked request may close the
 * connection. False when parsing stops here. */
static bool parse_piece(struct sg_h1s *s, const char *p, size_t n, struct evbuffer *in, size_t *used)
{
    enum sg_h1_read res;
    *used = sg_h1_reader_feed(&s->rd, p, n, &res);
    if (in)
        evbuffer_drain(in, *used);
    sg_h1_reader_settle(&s->rd);
    return res == SG_H1_READ_MORE;
}

static bool parse_chunk(struct sg_h1s *s, struct evbuffer *in)
{
    struct evbuffer_iovec v;
    size_t used;
    return evbuffer_peek(in, -1, NULL, &v, 1) >= 1 && parse_piece(s, v.iov_base, v.iov_len, in, &used);
}

static void update_read(struct sg_h1s *s)
{
    bool pause = s->ex && sg_exchange_request_congested(s->ex);
    if (pause != s->read_paused) {
        s->read_paused = pause;
        if (pause)
            bufferevent_disable(s->bev, EV_READ);
        else
            bufferevent_enable(s->bev, EV_READ);
    }
}

/* RFC 9113 3.3: on a plaintext listener, a client with prior knowledge
 * opens with the HTTP/2 preface. Only a new connection's first bytes are
 * looked at; a prefix of the preface waits for more. Returns true when
 * the connection stays HTTP/1.1. */
/* The HTTP/2 session takes over the socket, the unread input and the
 * connection's place in the counts; this side retires quietly. */
static void hand_to_h2(struct sg_h1s *s)
{
    struct bufferevent *bev = s->bev;
    s->bev = NULL;
    s->handed_off = true;
    sg_h2s_takeover(s->l, bev, s->client);
    h1s_close(s);
}

static bool stays_h1(struct sg_h1s *s, struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in), cmp = n < SG_H2_PREFACE_LEN ? n : SG_H2_PREFACE_LEN;
    if (s->proto_known || s->l->tls)
        return true;
    if (n == 0)
        return false;
    if (memcmp(evbuffer_pullup(in, (ev_ssize_t)cmp), SG_H2_PREFACE, cmp) != 0) {
        s->proto_known = true;
        return true;
    }
    if (n < SG_H2_PREFACE_LEN)
        return false;
    hand_to_h2(s);
    return false;
}

/* Whether the input is for the reader now: not while a response is
 * awaited (pipelined requests wait their turn) or the socket is a tunnel. */
static bool may_parse(const struct sg_h1s *s)
{
    return !s->closing && !s->closed && s->state != ST_WAIT && s->state != ST_TUNNEL;
}

static void h1s_process(struct sg_h1s *s)
{
    if (s->closed || s->in_parse || !stays_h1(s, bufferevent_get_input(s->bev)))
        return;
    s->in_parse = true;
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (may_parse(s) && evbuffer_get_length(in) > 0)
        if (!parse_chunk(s, in))
            break;
    s->in_parse = false;
    if (!s->closed && !s->closing)
        update_read(s);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    h1s_process(arg);
}

/* read_cb's work on bytes io.c has not added to the (empty) input yet
 * (sg_io_direct): what the reader takes never enters the input buffer;
 * the rest (a pipelined request behind a complete one, or bytes after an
 * error) goes there and read_cb runs next. A new plaintext connection's
 * first bytes take the input path, where the HTTP/2 preface is looked
 * for. */
static size_t h1s_direct(struct bufferevent *bev, const char *p, size_t n, void *arg)
{
    struct sg_h1s *s = arg;
    if (s->closed || s->in_parse || !s->proto_known)
        return 0;
    s->in_parse = true;
    size_t used = 0, took;
    while (used < n && may_parse(s)) {
        bool more = parse_piece(s, p + used, n - used, NULL, &took);
        used += took;
        if (!more)
            break;
    }
    s->in_parse = false;
    if (!s->closed && !s->closing)
        update_read(s);
    return used;
}

void sg_h1s_io_register(void)
{
    sg_io_direct(read_cb, h1s_direct);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct sg_h1s *s = arg;
    if (s->closing) {
        if (evbuffer_get_length(out(s)) == 0)
            h1s_close(s);
        return;
    }
    if (s->ex)
        sg_exchange_downstream_writable(s->ex);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct sg_h1s *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        /* TLS handshake done: ALPN decides the protocol (RFC 7301). */
        s->proto_known = true;
        if (sg_tls_alpn_is_h2(bufferevent_openssl_get_ssl(bev)))
            hand_to_h2(s);
        return;
    }
    h1s_close(s);
}

/* ---- output: the downstream ops ------------------------------------------ */

static void status_line(struct sg_wbuf *wb, int status)
{
    char line[64] = "HTTP/1.1 ";
    const char *why = reason(status);
    size_t len = 9 + sg_fmt_u64(line + 9, (uint64_t)status, 10), wlen = strlen(why);
    line[len++] = ' ';
    memcpy(line + len, why, wlen); /* the longest reason is 31 bytes */
    memcpy(line + len + wlen, "\r\n", 2);
    sg_wbuf_add(wb, line, len + wlen + 2);
}

static void ds_expect_continue(void *ds)
{
    evbuffer_add(out(ds), "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

static void ds_interim(void *ds, int status, const struct sg_headers *h)
{
    struct sg_h1s *s = ds;
    if (s->rd.http10)
        return;
    struct sg_wbuf wb;
    sg_wbuf_init(&wb, out(s));
    status_line(&wb, status);
    sg_headers_forward_response(h, NULL, false, sg_wbuf_field, &wb);
    sg_wbuf_add(&wb, "\r\n", 2);
    sg_wbuf_flush(&wb);
}

static void ds_head(void *ds, int status, const struct sg_headers *h, const struct sg_header_edits *edits,
                    int64_t content_length, bool upgrade)
{
    struct sg_h1s *s = ds;
    struct sg_wbuf wb;
    sg_wbuf_init(&wb, out(s));
    s->resp_no_body = s->rd.req.head_method || status == 204 || status == 304 || status < 200;
    s->resp_chunked = false;
    if (s->w->draining)
        s->keep_alive = false;
    status_line(&wb, status);
    sg_headers_forward_response(h, edits, upgrade, sg_wbuf_field, &wb);
    if (upgrade) {
        /* Upgrade + Connection were emitted by the forward rules. */
    } else if (s->resp_no_body) {
        if (content_length >= 0 && status != 204 && status >= 200)
            sg_wbuf_content_length(&wb, (uint64_t)content_length);
    } else if (content_length >= 0) {
        sg_wbuf_content_length(&wb, (uint64_t)content_length);
    } else if (!s->rd.http10) {
        sg_wbuf_add(&wb, "Transfer-Encoding: chunked\r\n", 28);
        s->resp_chunked = true;
    } else {
        s->keep_alive = false; /* close-delimited for HTTP/1.0 */
    }
    if (!upgrade) {
        if (!s->keep_alive)
            sg_wbuf_add(&wb, "Connection: close\r\n", 19);
        else if (s->rd.http10)
            sg_wbuf_add(&wb, "Connection: keep-alive\r\n", 24);
    }
    sg_wbuf_add(&wb, "\r\n", 2);
    sg_wbuf_flush(&wb);
}

static void ds_body(void *ds, const char *p, size_t n)
{
    struct sg_h1s *s = ds;
    if (s->resp_no_body || n == 0)
        return;
    if (s->resp_chunked) {
        struct sg_wbuf wb;
        sg_wbuf_init(&wb, out(s));
        sg_wbuf_chunk(&wb, p, n);
        sg_wbuf_flush(&wb);
    } else {
        evbuffer_add(out(s), p, n);
    }
}

static void ds_end(void *ds, const struct sg_headers *trailers)
{
    struct sg_h1s *s = ds;
    if (!s->resp_chunked)
        return;
    struct sg_wbuf wb;
    sg_wbuf_init(&wb, out(s));
    sg_wbuf_add(&wb, "0\r\n", 3);
    if (trailers) {
        /* Framing fields never belong in trailers (RFC 9110 6.5.1). */
        sg_headers_forward_trailers(trailers, sg_wbuf_field, &wb);
    }
    sg_wbuf_add(&wb, "\r\n", 2);
    sg_wbuf_flush(&wb);
}

static void write_local(struct sg_h1s *s, int status, const char *text, bool close)
{
    size_t n = strlen(text);
    if (close)
        s->keep_alive = false;
    struct sg_wbuf wb;
    sg_wbuf_init(&wb, out(s));
    status_line(&wb, status);
    sg_wbuf_add(&wb, "Content-Type: text/plain; charset=utf-8\r\n", 41);
    sg_wbuf_content_length(&wb, n);
    if (!s->keep_alive)
        sg_wbuf_add(&wb, "Connection: close\r\n", 19);
    sg_wbuf_add(&wb, "\r\n", 2);
    if (!s->rd.req.head_method)
        sg_wbuf_add(&wb, text, n);
    sg_wbuf_flush(&wb);
}

static void ds_local(void *ds, int status, const char *text, bool close)
{
    write_local(ds, status, text, close);
}

static bool ds_congested(void *ds)
{
    return evbuffer_get_length(out(ds)) > OUT_HIGH;
}

static void ds_pause_request(void *ds, bool pause)
{
    struct sg_h1s *s = ds;
    if (!pause)
        update_read(s);
}

/* Closing after the output drains; reading stops so nothing more is parsed. */
static void close_after_flush(struct sg_h1s *s)
{
    s->closing = true;
    bufferevent_disable(s->bev, EV_READ);
    if (evbuffer_get_length(out(s)) == 0) {
        h1s_close(s);
        return;
    }
    bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
    /* A client that does not read does not keep it: idle_timeout bounds the flush. */
    arm_timer(s, limits(s)->idle_timeout_ms);
}

/* What is queued (the head, body bytes) still goes out; the close then
 * tells the client the response is incomplete (no terminating chunk, or
 * fewer bytes than its Content-Length). */
static void ds_abort(void *ds)
{
    struct sg_h1s *s = ds;
    s->ex = NULL;
    close_after_flush(s);
}

static void go_idle(struct sg_h1s *s)
{
    s->state = ST_IDLE;
    sg_h1_reader_next(&s->rd);
    /* Parking needs the socket itself: not under TLS. 0 = no idle timeout. */
    uint64_t idle = limits(s)->idle_timeout_ms;
    s->park_armed = !s->l->tls && (idle == 0 || idle > PARK_AFTER_MS);
    /* Idle keep-alive connections are most of a proxy's connections: they
     * hold no head memory while they wait. A connection that will park
     * keeps it until then, for the next request of a busy client. */
    if (!s->park_armed)
        sg_h1_head_release(&s->rd.head);
    s->idle_left_ms = s->park_armed && idle ? idle - PARK_AFTER_MS : idle;
    arm_timer(s, s->park_armed ? PARK_AFTER_MS : idle);
    /* Pipelined input may already be here: parse it on the next turn, not
     * from inside the callback that finished this exchange. With nothing
     * there, all read_cb would do is resume reading if this exchange had
     * paused it (a deferred callback for nothing, on every request). */
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
        bufferevent_trigger(s->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    else
        update_read(s);
}

static void ds_done(void *ds, bool close)
{
    struct sg_h1s *s = ds;
    s->ex = NULL;
    if (s->closed || s->state == ST_TUNNEL)
        return;
    if (close || !s->keep_alive || s->w->draining)
        close_after_flush(s);
    else if (s->state == ST_WAIT)
        go_idle(s);
    /* else ST_BODY: the request is complete but llhttp has not reported its
     * end yet (a local answer from on_headers_complete); on_message_complete
     * moves on. */
}

static void ds_tunnel(void *ds, struct bufferevent *up)
{
    struct sg_h1s *s = ds;
    s->state = ST_TUNNEL;
    s->ex = NULL;
    struct bufferevent *down = s->bev;
    s->bev = NULL;
    sg_tunnel_start(s->w, down, up);
    h1s_close(s);
}

static const struct sg_downstream_ops h1s_ops = {
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

/* The proxy's own error before or without an exchange: always closes. */
static void h1s_respond_error(struct sg_h1s *s, int status, const char *text)
{
    if (s->closing || s->closed)
        return;
    if (s->ex) {
        sg_exchange_reject(s->ex, status, text);
        return;
    }
    write_local(s, status, text, true);
    close_after_flush(s);
}

/* ---- lifetime ------------------------------------------------------------ */

static void h1s_free(void *arg)
{
    struct sg_h1s *s = arg;
    if (s->parked) {
        free(s);
        return;
    }
    sg_h1_reader_free(&s->rd);
    free(s);
}

/* Idempotent. The memory goes after the current callbacks return. */
static void h1s_close(struct sg_h1s *s)
{
    if (s->closed)
        return;
    s->closed = true;
    if (s->ex) {
        struct sg_exchange *ex = s->ex;
        s->ex = NULL;
        sg_exchange_downstream_gone(ex);
    }
    event_del(&s->timer);
    if (s->bev)
        bufferevent_free(s->bev);
    s->bev = NULL;
    if (s->parked_fd >= 0)
        close(s->parked_fd);
    s->parked_fd = -1;
    struct sg_worker *w = s->w;
    if (s->prev_conn)
        s->prev_conn->next_conn = s->next_conn;
    else
        w->conns = s->next_conn;
    if (s->next_conn)
        s->next_conn->prev_conn = s->prev_conn;
    if (!s->handed_off) {
        sg_metrics_gauge_add(w->metrics, s->l->conn_gauge, -1);
        sg_worker_conn_closed(w);
    }
    sg_worker_defer(w, h1s_free, s);
}

static void peer_text(char *buf, size_t len, const struct sockaddr *sa)
{
    buf[0] = '\0';
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)len);
}

/* Plaintext, or TLS with the listener's context: the handshake runs inside
 * the bufferevent and the connection sees decrypted bytes only. */
static struct bufferevent *new_bev(struct sg_listener_rt *l, int fd)
{
    int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    SSL_CTX *ctx = l->tls ? sg_tls_ctx(l->worker->snap->cfg, l->index) : NULL;
    if (!ctx) {
        if (l->tls)
            return NULL;
        struct bufferevent *bev = bufferevent_socket_new(l->worker->base, fd, opts);
        if (bev && !sg_io_autoflush(bev)) {
            bufferevent_setfd(bev, -1); /* the caller closes fd */
            bufferevent_free(bev);
            return NULL;
        }
        return bev;
    }
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    struct bufferevent *bev = bufferevent_openssl_socket_new(l->worker->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, opts);
    if (!bev) {
        SSL_free(ssl);
        return NULL;
    }
    /* Clients that close without close_notify are the norm, not an error. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

static void attach_bev(struct sg_h1s *s)
{
    bufferevent_setcb(s->bev, read_cb, write_cb, event_cb, s);
    sg_io_read_high(s->bev, IN_HIGH);
    bufferevent_setwatermark(s->bev, EV_WRITE, OUT_LOW, 0);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* The socket of a parked connection became readable (a request, or EOF),
 * or its idle timeout passed. */
/* The request side of a connection, as accept() or waking from parked
 * leaves it. */
static void init_request_side(struct sg_h1s *s)
{
    sg_h1_reader_init(&s->rd, limits(s)->max_header_bytes, &h1s_reader_ops, s);
}

/* `to` (a copy of `from`'s first members) takes `from`'s place on the
 * worker's list. Only `from` is read: `to` may be the small parked copy. */
static void take_place(struct sg_h1s *from, struct sg_h1s *to)
{
    if (from->prev_conn)
        from->prev_conn->next_conn = to;
    else
        from->w->conns = to;
    if (from->next_conn)
        from->next_conn->prev_conn = to;
    from->prev_conn = from->next_conn = NULL;
}

/* The socket of a parked connection became readable (a request, or EOF),
 * or its idle timeout passed. The full connection comes back in a new
 * allocation; the parked copy goes after this callback. */
static void parked_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_h1s *p = arg;
    struct sg_h1s *s = (what & EV_READ) ? calloc(1, sizeof *s) : NULL;
    if (!s) { /* idle timeout (or out of memory): the connection ends */
        h1s_close(p);
        return;
    }
    memcpy(s, p, H1S_PARKED_SIZE);
    s->parked = false;
    s->parked_fd = -1;
    take_place(p, s);
    p->parked_fd = -1; /* the socket is s's now */
    p->closed = true;
    sg_worker_defer(p->w, h1s_free, p);
    init_request_side(s);
    s->proto_known = true; /* it has served HTTP/1.1 */
    s->keep_alive = true;
    event_assign(&s->timer, s->w->base, -1, 0, timer_cb, s);
    s->bev = new_bev(s->l, fd);
    if (!s->bev) {
        close(fd);
        h1s_close(s);
        return;
    }
    attach_bev(s);
    /* The bufferevent reads on the next turn; until bytes arrive this is
     * still an idle connection. */
    arm_timer(s, limits(s)->idle_timeout_ms);
}

/* Gives an idle plaintext connection's bufferevent and request side back,
 * keeping the socket (with nothing unread and nothing unsent) in a small
 * copy of the connection's first members. Called from the connection's own
 * timer callback: the full struct goes after it returns. */
static bool park(struct sg_h1s *s, uint64_t left_ms)
{
    if (s->l->tls || !s->bev || s->ex || s->closing || s->closed || s->state != ST_IDLE ||
        evbuffer_get_length(bufferevent_get_input(s->bev)) || evbuffer_get_length(out(s)))
        return false;
    evutil_socket_t fd = bufferevent_getfd(s->bev);
    struct sg_h1s *p = fd < 0 ? NULL : malloc(H1S_PARKED_SIZE);
    if (!p)
        return false;
    if (bufferevent_setfd(s->bev, -1) < 0) {
        free(p);
        return false;
    }
    bufferevent_free(s->bev); /* without the socket: it stays open */
    s->bev = NULL;
    /* The copy is made of the full struct's first members, written there
     * first (the small allocation is only ever reached through them). */
    struct event *timer = (struct event *)((char *)p + offsetof(struct sg_h1s, timer));
    s->parked = true;
    s->parked_fd = fd;
    memcpy(p, s, H1S_PARKED_SIZE);
    s->parked = false;
    s->parked_fd = -1;
    take_place(s, p);
    s->closed = true; /* nothing may act on the old copy any more */
    sg_worker_defer(s->w, h1s_free, s);
    event_assign(timer, s->w->base, fd, EV_READ, parked_cb, p);
    struct timeval tv = sg_tv_ms(left_ms);
    event_add(timer, left_ms ? &tv : NULL);
    return true;
}

void sg_h1s_accept(struct sg_listener_rt *l, int fd, const struct sockaddr *peer, int peerlen)
{
    struct sg_worker *w = l->worker;
    struct sg_h1s *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        sg_worker_conn_closed(w);
        return;
    }
    s->w = w;
    s->l = l;
    s->parked_fd = -1;
    s->state = ST_IDLE;
    peer_text(s->client, sizeof s->client, peer);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->bev = new_bev(l, fd);
    if (!s->bev) {
        close(fd);
        free(s);
        sg_worker_conn_closed(w);
        return;
    }
    init_request_side(s);
    event_assign(&s->timer, w->base, -1, 0, timer_cb, s);
    attach_bev(s);
    s->next_conn = w->conns;
    if (w->conns)
        w->conns->prev_conn = s;
    w->conns = s;
    sg_metrics_gauge_add(w->metrics, l->conn_gauge, 1);
    /* nginx's client_header_timeout also starts at accept. */
    s->state = ST_HEAD;
    arm_timer(s, limits(s)->header_timeout_ms);
}

void sg_h1s_drain_all(struct sg_worker *w)
{
    for (struct sg_h1s *s = w->conns, *next; s; s = next) {
        next = s->next_conn;
        if ((s->state == ST_IDLE || (s->state == ST_HEAD && s->rd.head.wire == 0)) && !s->ex)
            h1s_close(s);
    }
}

void sg_h1s_close_all(struct sg_worker *w)
{
    for (struct sg_h1s *s = w->conns, *next; s; s = next) {
        next = s->next_conn;
        h1s_close(s);
    }
}
