#include "strangler/h1_client.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/io.h"
#include "strangler/pool.h"

/* Above this much unsent request data the client side stops reading. */
#define H1C_OUT_HIGH (256u * 1024u)
#define H1C_OUT_LOW (64u * 1024u)
/* Response heads above this are an invalid response (502). */
#define H1C_MAX_HEAD (64u * 1024u)

static struct sg_h1c *from_parser(llhttp_t *p)
{
    return p->data;
}

static int on_status(llhttp_t *p, const char *at, size_t n)
{
    return sg_h1_head_append(&from_parser(p)->head, SG_H1_STATUS, at, n) ? 0 : -1;
}

static struct sg_h1_head *field_head(struct sg_h1c *c)
{
    return c->in_trailers ? &c->trailers : &c->head;
}

static int on_field(llhttp_t *p, const char *at, size_t n)
{
    struct sg_h1c *c = from_parser(p);
    return sg_h1_head_append(field_head(c), SG_H1_FIELD, at, n) ? 0 : -1;
}

static int on_value(llhttp_t *p, const char *at, size_t n)
{
    struct sg_h1c *c = from_parser(p);
    return sg_h1_head_append(field_head(c), SG_H1_VALUE, at, n) ? 0 : -1;
}

/* A value may be empty: llhttp then calls no on_header_value. */
static int on_value_complete(llhttp_t *p)
{
    struct sg_h1c *c = from_parser(p);
    field_head(c)->field_open = false;
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct sg_h1c *c = from_parser(p);
    sg_h1_head_reset(&c->head);
    sg_h1_head_reset(&c->trailers);
    c->in_trailers = false;
    return 0;
}

/* Interim (1xx) responses are delivered at once; the final head is
 * recorded and handled after llhttp returns (the exchange may retry and
 * detach this client, which must not happen inside the parser). */
static int on_headers_complete(llhttp_t *p)
{
    struct sg_h1c *c = from_parser(p);
    int status = p->status_code;
    /* RFC 9110 15: a three-digit status 100..599; fields as for requests
     * (sg_h1_fields_problem): anything else is an invalid response. */
    if (!sg_h1_head_finish(&c->head) || status < 100 || status > 599 || sg_h1_fields_problem(&c->head))
        return -1;
    if (status < 200 && status != 101) {
        c->ops->interim(c->owner, status, &c->head.headers);
        return 1; /* no body; the final response follows */
    }
    c->head_done = true;
    c->in_trailers = true;
    c->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    c->reusable = llhttp_should_keep_alive(p);
    c->pending = SG_H1C_HEAD;
    if (status == 101)
        return c->upgrade ? 2 : -1;
    if (c->no_body || status == 204 || status == 304)
        return 1; /* on_message_complete follows at once and pauses */
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct sg_h1c *c = from_parser(p);
    c->ops->body(c->owner, at, n);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct sg_h1c *c = from_parser(p);
    if (!c->head_done)
        return 0; /* end of a 1xx */
    c->msg_done = true;
    if (c->pending == SG_H1C_NONE)
        c->pending = SG_H1C_END;
    return HPE_PAUSED;
}

static const llhttp_settings_t h1c_settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Runs the parser over the input and dispatches what it recorded.
 * Returns false once the client has been detached or failed. */
static bool h1c_dispatch(struct sg_h1c *c)
{
    enum sg_h1c_event ev = c->pending;
    c->pending = SG_H1C_NONE;
    void *owner = c->owner;
    const struct sg_h1c_owner_ops *ops = c->ops;
    unsigned gen = c->gen;
    if (ev == SG_H1C_HEAD) {
        if (c->upgrade && c->parser.status_code == 101) {
            ops->upgrade(owner, &c->head.headers);
            return false;
        }
        ops->head(owner, c->parser.status_code, &c->head.headers, c->content_length);
        /* The exchange may have detached us, and may even have attached
         * this client to another connection for a retry. */
        if (c->gen != gen)
            return false;
        if (c->msg_done) { /* bodiless response: its end was recorded too */
            sg_h1_head_finish(&c->trailers);
            ops->end(owner, NULL);
            return false;
        }
        llhttp_resume(&c->parser);
        return true;
    }
    if (ev == SG_H1C_END) {
        if (!sg_h1_head_finish(&c->trailers)) {
            ops->error(owner, sg_err_invalid_response);
            return false;
        }
        ops->end(owner, c->trailers.n_fields ? &c->trailers.headers : NULL);
        return false;
    }
    return true;
}

/* One contiguous piece through llhttp: *used is what it took (less than n
 * where it paused at the end of a head or of the response). False when the
 * response is malformed and the owner has been told. */
static bool h1c_execute(struct sg_h1c *c, const char *p, size_t n, size_t *used)
{
    c->got_bytes = true;
    llhttp_errno_t err = llhttp_execute(&c->parser, p, n);
    *used = n;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
        *used = (size_t)(llhttp_get_error_pos(&c->parser) - p);
    else if (err != HPE_OK) {
        c->ops->error(c->owner, sg_err_invalid_response);
        return false;
    }
    return true;
}

/* After a piece, with `left` bytes still unparsed: false once the client
 * has been detached or failed. */
static bool h1c_piece_done(struct sg_h1c *c, size_t left)
{
    if (c->msg_done && left > 0)
        c->reusable = false; /* bytes after the response: never reuse */
    return c->pending == SG_H1C_NONE || h1c_dispatch(c);
}

static void h1c_parse(struct sg_h1c *c)
{
    struct evbuffer *in = bufferevent_get_input(c->uc->bev);
    unsigned gen = c->gen;
    while (c->gen == gen && !c->paused && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        size_t used;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || !h1c_execute(c, v.iov_base, v.iov_len, &used))
            return;
        evbuffer_drain(in, used);
        if (!h1c_piece_done(c, evbuffer_get_length(in)))
            return;
    }
}

static void h1c_read_cb(struct bufferevent *bev, void *arg)
{
    h1c_parse(arg);
}

/* h1c_parse on bytes io.c has not added to the (empty) input yet
 * (sg_io_direct). What is left once the client is detached, paused or
 * done goes into the input, as it would have stayed there: for the next
 * owner of a connection upgraded to a tunnel, or to make the pool drop a
 * connection that sent more than its response. After a malformed
 * response the bytes go nowhere (the owner has dropped the connection). */
static size_t h1c_direct(struct bufferevent *bev, const char *p, size_t n, void *arg)
{
    struct sg_h1c *c = arg;
    unsigned gen = c->gen;
    size_t done = 0;
    while (c->gen == gen && !c->paused && done < n) {
        size_t used;
        if (!h1c_execute(c, p + done, n - done, &used))
            return n;
        done += used;
        if (!h1c_piece_done(c, n - done))
            break;
    }
    return done;
}

void sg_h1c_io_register(void)
{
    sg_io_direct(h1c_read_cb, h1c_direct);
}

static void h1c_write_cb(struct bufferevent *bev, void *arg)
{
    struct sg_h1c *c = arg;
    c->ops->writable(c->owner);
}

static void h1c_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct sg_h1c *c = arg;
    if ((what & BEV_EVENT_EOF) && c->head_done && llhttp_message_needs_eof(&c->parser)) {
        /* Close-delimited body: EOF is its end. */
        c->reusable = false;
        if (llhttp_finish(&c->parser) == HPE_OK || c->msg_done) {
            c->msg_done = true;
            c->pending = SG_H1C_END;
            h1c_dispatch(c);
            return;
        }
    }
    c->ops->error(c->owner, sg_err_reset);
}

void sg_h1c_begin(struct sg_h1c *c, struct sg_uconn *uc, const struct sg_h1c_owner_ops *ops, void *owner,
                  const struct sg_h1c_request *r, struct sg_wbuf *wb)
{
    if (!c->head.max) {
        sg_h1_head_init(&c->head, H1C_MAX_HEAD);
        sg_h1_head_init(&c->trailers, H1C_MAX_HEAD);
    }
    sg_h1_head_reset(&c->head);
    sg_h1_head_reset(&c->trailers);
    llhttp_init(&c->parser, HTTP_RESPONSE, &h1c_settings);
    c->parser.data = c;
    c->gen++;
    c->uc = uc;
    c->ops = ops;
    c->owner = owner;
    c->pending = SG_H1C_NONE;
    c->head_done = c->msg_done = c->in_trailers = c->req_done = false;
    c->got_bytes = c->paused = false;
    c->reusable = false;
    c->no_body = r->no_response_body;
    c->upgrade = r->upgrade;
    c->chunked_req = r->content_length < 0;
    c->content_length = -1;
    uc->requests++;
    sg_wbuf_init(wb, bufferevent_get_output(uc->bev));
    sg_wbuf_add(wb, r->method.p, r->method.len);
    sg_wbuf_add(wb, " ", 1);
    sg_wbuf_add(wb, r->target.p, r->target.len);
    sg_wbuf_add(wb, " HTTP/1.1\r\nHost: ", 17);
    sg_wbuf_add(wb, r->host.p, r->host.len);
    sg_wbuf_add(wb, "\r\n", 2);
    if (r->content_length < 0)
        sg_wbuf_add(wb, "Transfer-Encoding: chunked\r\n", 28);
    else if (r->content_length > 0)
        sg_wbuf_content_length(wb, (uint64_t)r->content_length);
    bufferevent_setcb(uc->bev, h1c_read_cb, h1c_write_cb, h1c_event_cb, c);
    bufferevent_setwatermark(uc->bev, EV_WRITE, H1C_OUT_LOW, 0);
    sg_io_enable(uc->bev, EV_READ | EV_WRITE);
}

struct evbuffer *sg_h1c_output(struct sg_h1c *c)
{
    return bufferevent_get_output(c->uc->bev);
}

void sg_h1c_head_done(struct sg_h1c *c, struct sg_wbuf *wb)
{
    (void)c;
    sg_wbuf_add(wb, "\r\n", 2);
    sg_wbuf_flush(wb);
}

void sg_h1c_body(struct sg_h1c *c, const char *p, size_t n)
{
    if (n == 0)
        return;
    struct evbuffer *out = sg_h1c_output(c);
    if (c->chunked_req) {
        struct sg_wbuf wb;
        sg_wbuf_init(&wb, out);
        sg_wbuf_chunk(&wb, p, n);
        sg_wbuf_flush(&wb);
    } else {
        evbuffer_add(out, p, n);
    }
}

/* Trailers need chunked framing; with a Content-Length there is no place
 * for them (RFC 9112 7.1.2) and they are dropped. */
void sg_h1c_end(struct sg_h1c *c, const struct sg_headers *trailers)
{
    if (c->chunked_req) {
        struct sg_wbuf wb;
        sg_wbuf_init(&wb, sg_h1c_output(c));
        sg_wbuf_add(&wb, "0\r\n", 3);
        sg_headers_forward_trailers(trailers, sg_wbuf_field, &wb);
        sg_wbuf_add(&wb, "\r\n", 2);
        sg_wbuf_flush(&wb);
    }
    c->req_done = true;
}

bool sg_h1c_congested(const struct sg_h1c *c)
{
    return c->uc && evbuffer_get_length(bufferevent_get_output(c->uc->bev)) > H1C_OUT_HIGH;
}

void sg_h1c_pause(struct sg_h1c *c, bool pause)
{
    if (!c->uc || c->paused == pause)
        return;
    c->paused = pause;
    if (pause) {
        bufferevent_disable(c->uc->bev, EV_READ);
    } else {
        bufferevent_enable(c->uc->bev, EV_READ);
        h1c_parse(c); /* what arrived while paused */
    }
}

struct bufferevent *sg_h1c_detach(struct sg_h1c *c, bool keep_bev)
{
    struct sg_uconn *uc = c->uc;
    if (!uc)
        return NULL;
    c->uc = NULL;
    c->owner = NULL;
    c->gen++;
    c->pending = SG_H1C_NONE;
    bufferevent_setcb(uc->bev, NULL, NULL, NULL, NULL);
    bufferevent_setwatermark(uc->bev, EV_WRITE, 0, 0);
    if (keep_bev) {
        struct bufferevent *bev = uc->bev;
        uc->bev = NULL;
        sg_uconn_release(uc, false);
        return bev;
    }
    bool reuse = c->msg_done && c->req_done && c->reusable && !c->upgrade &&
                 evbuffer_get_length(bufferevent_get_output(uc->bev)) == 0;
    if (!reuse) {
        /* Do not leave unread data or a half-written request behind. */
        bufferevent_disable(uc->bev, EV_READ | EV_WRITE);
    }
    sg_uconn_release(uc, reuse);
    return NULL;
}

void sg_h1c_free(struct sg_h1c *c)
{
    sg_h1c_detach(c, false);
    sg_h1_head_free(&c->head);
    sg_h1_head_free(&c->trailers);
}
