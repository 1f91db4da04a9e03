/* The request side of an HTTP/1.1 connection, without its socket: see
 * include/strangler/h1_reader.h. */
#include "strangler/h1_reader.h"

#include <stdlib.h>
#include <string.h>

static struct sg_h1_reader *reader_of(llhttp_t *p)
{
    return p->data;
}

static int append(llhttp_t *p, enum sg_h1_part part, const char *at, size_t n)
{
    struct sg_h1_reader *r = reader_of(p);
    /* Fields after the body are the trailer section (chunked requests). */
    struct sg_h1_head *h = &r->head;
    if (r->in_body && part >= SG_H1_FIELD) {
        if (!r->trailers && (r->trailers = malloc(sizeof *r->trailers)) != NULL)
            sg_h1_head_init(r->trailers, r->head.max);
        h = r->trailers;
    }
    if (h && sg_h1_head_append(h, part, at, n))
        return 0;
    /* RFC 9110 15.5.15: a target longer than we parse is 414. */
    sg_h1_reader_reject(r, part == SG_H1_URL ? 414 : 431,
                        part == SG_H1_URL ? "request target too long\n" : "request head too large\n");
    return -1;
}

static int on_method(llhttp_t *p, const char *at, size_t n) { return append(p, SG_H1_METHOD, at, n); }
static int on_url(llhttp_t *p, const char *at, size_t n) { return append(p, SG_H1_URL, at, n); }
static int on_field(llhttp_t *p, const char *at, size_t n) { return append(p, SG_H1_FIELD, at, n); }
static int on_value(llhttp_t *p, const char *at, size_t n) { return append(p, SG_H1_VALUE, at, n); }

/* A value may be empty: llhttp then calls no on_header_value. */
static int on_value_complete(llhttp_t *p)
{
    struct sg_h1_reader *r = reader_of(p);
    r->head.field_open = false;
    if (r->trailers)
        r->trailers->field_open = false;
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct sg_h1_reader *r = reader_of(p);
    sg_h1_head_reset(&r->head);
    if (r->trailers)
        sg_h1_head_reset(r->trailers);
    r->in_body = false;
    r->ops->begin(r->owner);
    return 0;
}

/* The checks beyond llhttp (version, CONNECT, fields, target, Host,
 * transfer codings) live in h1_head.c: sg_h1_request_check. */
static int on_headers_complete(llhttp_t *p)
{
    struct sg_h1_reader *r = reader_of(p);
    if (!sg_h1_head_finish(&r->head)) {
        sg_h1_reader_reject(r, 500, "out of memory\n");
        return -1;
    }
    r->http10 = p->http_major == 1 && p->http_minor == 0; /* also for a refusal's answer */
    struct sg_h1_target t;
    const char *why = NULL;
    int status = sg_h1_request_check(&r->head, p, &t, &why);
    if (status) {
        sg_h1_reader_reject(r, status, why);
        return -1;
    }
    const struct sg_headers *h = &r->head.headers;
    struct sg_request *req = &r->req;
    memset(req, 0, sizeof *req);
    req->method = r->head.s_method;
    req->target = t.target;
    req->path = t.path;
    req->query = t.query;
    req->host = t.host;
    req->content_length = t.content_length;
    req->protocol = r->http10 ? SG_STR_LIT("HTTP/1.0") : SG_STR_LIT("HTTP/1.1");
    req->headers = h;
    req->head_method = p->method == HTTP_HEAD;
    const struct sg_header *expect = sg_headers_get(h, SG_STR_LIT("expect"));
    req->expect_continue = expect && sg_str_ieq_c(expect->value, "100-continue") && !r->http10;
    const struct sg_header *up = sg_headers_get(h, SG_STR_LIT("upgrade"));
    req->upgrade = p->upgrade && up && sg_header_list_has(up->value, SG_STR_LIT("websocket"));
    if (!req->upgrade)
        p->upgrade = 0; /* only websocket is tunnelled; other upgrades are plain requests */
    r->keep_alive = llhttp_should_keep_alive(p) && !req->upgrade;
    r->in_body = r->ops->head(r->owner, req);
    return r->in_body ? 0 : -1;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct sg_h1_reader *r = reader_of(p);
    r->ops->body(r->owner, at, n);
    return 0;
}

static void request_end(struct sg_h1_reader *r)
{
    bool trailers = r->trailers && r->trailers->n_fields && sg_h1_head_finish(r->trailers);
    r->ops->end(r->owner, trailers ? &r->trailers->headers : NULL);
}

/* Stop after each request. A chunked request ends in settle, which first
 * checks what llhttp does not: the last line's CRLF and the trailer
 * fields. */
static int on_message_complete(llhttp_t *p)
{
    struct sg_h1_reader *r = reader_of(p);
    if (p->flags & F_CHUNKED)
        r->end_pending = true;
    else
        request_end(r);
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void sg_h1_reader_init(struct sg_h1_reader *r, size_t max_head, const struct sg_h1_reader_ops *ops, void *owner)
{
    memset(r, 0, sizeof *r);
    sg_h1_head_init(&r->head, max_head);
    sg_h1_scan_reset(&r->scan);
    llhttp_init(&r->parser, HTTP_REQUEST, &settings); /* strict; no lenient flag, ever (h1.h) */
    r->parser.data = r;
    r->ops = ops;
    r->owner = owner;
}

static void free_trailers(struct sg_h1_reader *r)
{
    if (r->trailers) {
        sg_h1_head_free(r->trailers);
        free(r->trailers);
        r->trailers = NULL;
    }
}

void sg_h1_reader_free(struct sg_h1_reader *r)
{
    sg_h1_head_free(&r->head);
    free_trailers(r);
}

void sg_h1_reader_next(struct sg_h1_reader *r)
{
    sg_h1_scan_reset(&r->scan);
    free_trailers(r);
    r->in_body = false;
}

void sg_h1_reader_reject(struct sg_h1_reader *r, int status, const char *why)
{
    r->reject = status;
    r->reject_text = why;
}

bool sg_h1_reader_partial(const struct sg_h1_reader *r)
{
    return r->scan.line_len > 0 || r->scan.seen_line;
}

size_t sg_h1_reader_feed(struct sg_h1_reader *r, const char *p, size_t n, enum sg_h1_read *res)
{
    r->reject = 0;
    r->reject_text = NULL;
    /* The scan only runs on a head (before in_body), so settle reports
     * this as a rejected head. */
    const char *problem = r->scan.head_end ? NULL : sg_h1_scan(&r->scan, p, n);
    if (problem) {
        sg_h1_reader_reject(r, 400, problem);
        *res = r->result = SG_H1_READ_FAILED;
        return 0;
    }
    r->err = llhttp_execute(&r->parser, p, n);
    if (r->err == HPE_PAUSED || r->err == HPE_PAUSED_UPGRADE) {
        size_t used = (size_t)(llhttp_get_error_pos(&r->parser) - p);
        r->before_lf = used >= 2 ? p[used - 2] : r->last_byte;
        r->last_byte = used ? p[used - 1] : r->last_byte;
        if (r->err == HPE_PAUSED)
            llhttp_resume(&r->parser);
        *res = r->result = r->err == HPE_PAUSED ? SG_H1_READ_DONE : SG_H1_READ_UPGRADE;
        return used;
    }
    if (n)
        r->last_byte = p[n - 1];
    *res = r->result = r->err == HPE_OK ? SG_H1_READ_MORE : SG_H1_READ_FAILED;
    return n;
}

/* llhttp accepts a bare LF as the end of a chunked body's last line
 * ("0\r\n\n"), and trailer fields with an empty name: refused here, before
 * the upstream sees the end of the request (RFC 9112 7.1, 2.2). */
static void chunked_end(struct sg_h1_reader *r)
{
    r->end_pending = false;
    const char *bad = r->before_lf != '\r' ? "bare LF at the end of a chunked body\n" : NULL;
    if (!bad && r->trailers && r->trailers->n_fields)
        bad = sg_h1_head_finish(r->trailers) ? sg_h1_fields_problem(r->trailers) : "out of memory\n";
    if (bad)
        r->ops->refuse(r->owner, 400, bad, SG_H1_BAD_END);
    else
        request_end(r);
}

void sg_h1_reader_settle(struct sg_h1_reader *r)
{
    switch (r->result) {
    case SG_H1_READ_DONE:
    case SG_H1_READ_UPGRADE:
        if (r->end_pending)
            chunked_end(r);
        break;
    case SG_H1_READ_FAILED:
        if (r->in_body) /* broken framing inside a body */
            r->ops->refuse(r->owner, 400, "malformed request body\n", SG_H1_BAD_BODY);
        else if (r->reject)
            r->ops->refuse(r->owner, r->reject, r->reject_text, SG_H1_BAD_HEAD);
        else if (sg_h1_parse_error_status(&r->parser, r->err) == 505)
            r->ops->refuse(r->owner, 505, "HTTP version not supported\n", SG_H1_BAD_HEAD);
        else
            r->ops->refuse(r->owner, 400, "malformed request\n", SG_H1_BAD_HEAD);
        break;
    case SG_H1_READ_MORE:
        break;
    }
    r->result = SG_H1_READ_MORE;
}
