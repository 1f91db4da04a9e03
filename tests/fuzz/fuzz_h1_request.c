/* Fuzz target: the HTTP/1.1 request path, bytes in -> bytes to the upstream.
 *
 * The input is a client's byte stream (first byte: how to split it into
 * reads). It goes through what src/http/h1_server.c does with it: the raw
 * head scan (sg_h1_scan), llhttp in strict mode, the head accumulator
 * (sg_h1_head), the request checks (sg_h1_request_check), pipelined
 * requests one after the other, chunked bodies with trailers (the last
 * line's CRLF and the trailer fields checked as chunked_end does); every
 * request accepted is forwarded through the real serialisation code
 * (h1_client.c, headers.c) and fuzz_upstream_end() checks the result (see
 * fuzz.h). The glue here mirrors h1_server.c's parser callbacks. */
#include <llhttp.h>
#include <string.h>

#include "fuzz.h"
#include "strangler/h1.h"

#define MAX_HEAD 8192u

struct conn {
    llhttp_t parser;
    struct sg_h1_head head, trailers;
    struct sg_h1_scan scan;
    struct sg_request req;
    bool in_body, end_pending, forwarding, stop;
};

static int append(llhttp_t *p, enum sg_h1_part part, const char *at, size_t n)
{
    struct conn *c = p->data;
    struct sg_h1_head *h = c->in_body && part >= SG_H1_FIELD ? &c->trailers : &c->head;
    return sg_h1_head_append(h, part, at, n) ? 0 : -1; /* 431 / 414 */
}

static int on_method(llhttp_t *p, const char *at, size_t n) { return append(p, SG_H1_METHOD, at, n); }
static int on_url(llhttp_t *p, const char *at, size_t n) { return append(p, SG_H1_URL, at, n); }
static int on_field(llhttp_t *p, const char *at, size_t n) { return append(p, SG_H1_FIELD, at, n); }
static int on_value(llhttp_t *p, const char *at, size_t n) { return append(p, SG_H1_VALUE, at, n); }

static int on_value_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->head.field_open = c->trailers.field_open = false;
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    sg_h1_head_reset(&c->head);
    sg_h1_head_reset(&c->trailers);
    c->in_body = false;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    FUZZ_ASSERT(sg_h1_head_finish(&c->head));
    struct sg_h1_target t;
    const char *why = NULL;
    int status = sg_h1_request_check(&c->head, p, &t, &why);
    if (status) {
        FUZZ_ASSERT(why && (status == 400 || status == 405 || status == 501 || status == 505));
        return -1;
    }
    /* What the checks promise. */
    FUZZ_ASSERT(t.path.len && t.path.p[0] == '/');
    FUZZ_ASSERT(t.host.len ? sg_h1_authority_valid(t.host) : t.http10);
    FUZZ_ASSERT(p->method != HTTP_CONNECT && p->http_major == 1 && p->http_minor <= 1);
    memset(&c->req, 0, sizeof c->req);
    c->req.method = c->head.s_method;
    c->req.path = t.path;
    c->req.query = t.query;
    c->req.host = t.host;
    c->req.headers = &c->head.headers;
    c->req.content_length = t.content_length;
    c->req.head_method = p->method == HTTP_HEAD;
    const struct sg_header *up = sg_headers_get(&c->head.headers, SG_STR_LIT("upgrade"));
    c->req.upgrade = p->upgrade && up && sg_header_list_has(up->value, SG_STR_LIT("websocket"));
    if (!c->req.upgrade)
        p->upgrade = 0;
    /* exchange.c sends path + query: rebuild it the way ex_rewrite does
     * without a rewrite rule. */
    static char target[MAX_HEAD + 2];
    size_t n = t.path.len;
    memcpy(target, t.path.p, n);
    if (t.query.len) {
        target[n++] = '?';
        memcpy(target + n, t.query.p, t.query.len);
        n += t.query.len;
    }
    c->req.target = (struct sg_str){ target, n };
    fuzz_upstream_begin(&c->req);
    c->forwarding = true;
    c->in_body = true;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    fuzz_upstream_body(at, n);
    return 0;
}

static void message_done(struct conn *c, bool trailers_ok)
{
    bool trailers = trailers_ok && c->trailers.n_fields && sg_h1_head_finish(&c->trailers);
    fuzz_upstream_end(trailers ? &c->trailers.headers : NULL);
    c->forwarding = false;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    if (p->flags & F_CHUNKED)
        c->end_pending = true;
    else
        message_done(c, false);
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

/* h1_server.c's chunked_end. */
static void chunked_end(struct conn *c, char before_lf)
{
    c->end_pending = false;
    bool ok = before_lf == '\r';
    if (ok && c->trailers.n_fields)
        ok = sg_h1_head_finish(&c->trailers) && sg_h1_fields_problem(&c->trailers) == NULL;
    if (!ok) {
        fuzz_upstream_abort();
        c->forwarding = false;
        c->stop = true;
        return;
    }
    message_done(c, true);
}

/* One read's worth of bytes: h1_server.c's parse_chunk loop. */
static void feed(struct conn *c, const char *data, size_t len, char *last)
{
    while (len && !c->stop) {
        if (!c->scan.head_end && sg_h1_scan(&c->scan, data, len)) {
            c->stop = true; /* 400 */
            return;
        }
        llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
            size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
            char before = used >= 2 ? data[used - 2] : *last;
            if (used)
                *last = data[used - 1];
            if (err == HPE_PAUSED_UPGRADE) {
                c->stop = true; /* a websocket tunnel: bytes after this are not HTTP */
                return;
            }
            llhttp_resume(&c->parser);
            if (c->end_pending)
                chunked_end(c, before);
            sg_h1_scan_reset(&c->scan);
            data += used;
            len -= used;
            continue;
        }
        if (err != HPE_OK) {
            int status = sg_h1_parse_error_status(&c->parser, err);
            FUZZ_ASSERT(status == 400 || status == 505);
            c->stop = true;
            return;
        }
        *last = data[len - 1];
        return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned split = data[0];
    data++;
    size--;
    struct conn c;
    memset(&c, 0, sizeof c);
    sg_h1_head_init(&c.head, MAX_HEAD);
    sg_h1_head_init(&c.trailers, MAX_HEAD);
    sg_h1_scan_reset(&c.scan);
    llhttp_init(&c.parser, HTTP_REQUEST, &settings);
    c.parser.data = &c;
    /* Reads of 1..16 bytes (split's low nibble + 1), or the whole input
     * at once when split's high bit is set. */
    size_t piece = split & 0x80 ? size : (split & 0x0f) + 1u;
    char last = 0;
    for (size_t off = 0; off < size && !c.stop; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        feed(&c, (const char *)data + off, n, &last);
    }
    if (c.forwarding)
        fuzz_upstream_abort(); /* input ended inside a request: the client went away */
    sg_h1_head_free(&c.head);
    sg_h1_head_free(&c.trailers);
    return 0;
}
