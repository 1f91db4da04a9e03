/* The wire check shared by the fuzz targets: see fuzz.h. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "strangler/h1.h"
#include "strangler/h1_client.h"
#include "strangler/pool.h"

static struct event_base *base;
static struct sg_uconn uc;
static struct sg_h1c client;
static bool active;
static int64_t declared; /* content length the head announced, -1 chunked */
static uint64_t body_bytes;

static const struct sg_h1c_owner_ops no_ops = { 0 };

static void setup(void)
{
    if (base)
        return;
    int sv[2];
    base = event_base_new();
    FUZZ_ASSERT(base && socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    /* Never dispatched: what is written stays in the output buffer. */
    uc.bev = bufferevent_socket_new(base, sv[0], 0);
    FUZZ_ASSERT(uc.bev);
}

/* A socket bufferevent that never connected keeps the start of its
 * output frozen; this side reads and drains it directly. */
static struct evbuffer *wire(void)
{
    struct evbuffer *w = bufferevent_get_output(uc.bev);
    evbuffer_unfreeze(w, 1);
    return w;
}

void fuzz_upstream_begin(const struct sg_request *req)
{
    setup();
    evbuffer_drain(wire(), evbuffer_get_length(wire()));
    struct sg_str host = req->host.len ? req->host : SG_STR_LIT("upstream.test:8080");
    struct sg_h1c_request r = { req->method, req->target, host, req->content_length, req->head_method, req->upgrade };
    struct sg_wbuf wb;
    sg_h1c_begin(&client, &uc, &no_ops, NULL, &r, &wb);
    struct sg_forward_request_opts o = {
        .client_addr = SG_STR_LIT("192.0.2.1"),
        .proto = SG_STR_LIT("http"),
        .request_id = SG_STR_LIT("00000000-0000-4000-8000-000000000000"),
        .upgrade = req->upgrade,
    };
    sg_headers_forward_request(req->headers, &o, sg_wbuf_field, &wb);
    sg_h1c_head_done(&client, &wb);
    active = true;
    declared = req->content_length;
    body_bytes = 0;
}

void fuzz_upstream_body(const char *p, size_t n)
{
    if (!active)
        return;
    sg_h1c_body(&client, p, n);
    body_bytes += n;
}

/* ---- checks on the wire bytes ------------------------------------------- */

/* On a failed check, the wire bytes are printed first (escaped). */
static void dump_wire(void)
{
    struct evbuffer *w = wire();
    size_t n = evbuffer_get_length(w);
    const unsigned char *p = evbuffer_pullup(w, (ev_ssize_t)n);
    fprintf(stderr, "upstream wire (%zu bytes, body %llu, declared %lld):\n", n, (unsigned long long)body_bytes,
            (long long)declared);
    for (size_t i = 0; i < n && i < 4096; i++) {
        if (p[i] == '\n')
            fputs("\\n\n", stderr);
        else if (p[i] < 0x20 || p[i] >= 0x7f)
            fprintf(stderr, "\\x%02x", p[i]);
        else
            fputc(p[i], stderr);
    }
    fputc('\n', stderr);
}

#undef FUZZ_ASSERT
#define FUZZ_ASSERT(cond)                                                                                      \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            dump_wire();                                                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                        \
            abort();                                                                                           \
        }                                                                                                      \
    } while (0)

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* One field line "name: value" (no CRLF). */
static void check_field_line(const unsigned char *l, size_t n)
{
    size_t i = 0;
    while (i < n && is_tchar(l[i]))
        i++;
    FUZZ_ASSERT(i > 0); /* a token name first: no obs-fold, no empty name */
    FUZZ_ASSERT(i + 1 < n + 1 && l[i] == ':');
    FUZZ_ASSERT(i + 1 == n || l[i + 1] == ' ');
    size_t v = i + 2 <= n ? i + 2 : n;
    if (v < n) {
        FUZZ_ASSERT(l[v] != ' ' && l[v] != '\t' && l[n - 1] != ' ' && l[n - 1] != '\t');
    }
    for (size_t j = v; j < n; j++)
        FUZZ_ASSERT(l[j] == '\t' || (l[j] >= 0x20 && l[j] != 0x7f));
}

/* Lines of a head or trailer section, each ending CRLF, the section ending
 * with an empty line. Returns the bytes used. `request_line`: the first
 * line is "METHOD SP /target SP HTTP/1.1". */
static size_t check_lines(const unsigned char *p, size_t n, bool request_line, unsigned *hosts, unsigned *framing)
{
    size_t pos = 0;
    bool first = request_line;
    for (;;) {
        size_t e = pos;
        while (e < n && p[e] != '\r' && p[e] != '\n')
            e++;
        FUZZ_ASSERT(e + 1 < n && p[e] == '\r' && p[e + 1] == '\n'); /* no bare CR/LF */
        const unsigned char *l = p + pos;
        size_t len = e - pos;
        pos = e + 2;
        if (len == 0) {
            FUZZ_ASSERT(!first);
            return pos;
        }
        for (size_t j = 0; j < len; j++)
            FUZZ_ASSERT(l[j] != 0);
        if (first) {
            size_t m = 0;
            while (m < len && is_tchar(l[m]))
                m++;
            FUZZ_ASSERT(m > 0 && m < len && l[m] == ' ' && m + 1 < len && l[m + 1] == '/');
            size_t t = m + 1;
            while (t < len && l[t] > 0x20 && l[t] < 0x7f)
                t++;
            FUZZ_ASSERT(len - t == 9 && memcmp(l + t, " HTTP/1.1", 9) == 0);
            first = false;
            continue;
        }
        check_field_line(l, len);
        if (hosts && len >= 5 && strncasecmp((const char *)l, "host:", 5) == 0)
            (*hosts)++;
        if (framing && ((len >= 15 && strncasecmp((const char *)l, "content-length:", 15) == 0) ||
                        (len >= 18 && strncasecmp((const char *)l, "transfer-encoding:", 18) == 0)))
            (*framing)++;
    }
}

/* A fresh parser must read exactly one complete request from the wire. */
struct reparse {
    struct sg_h1_head head;
    unsigned messages;
    bool checked;
    int status;
};

static int rp_url(llhttp_t *p, const char *at, size_t n)
{
    return sg_h1_head_append(&((struct reparse *)p->data)->head, SG_H1_URL, at, n) ? 0 : -1;
}
static int rp_method(llhttp_t *p, const char *at, size_t n)
{
    return sg_h1_head_append(&((struct reparse *)p->data)->head, SG_H1_METHOD, at, n) ? 0 : -1;
}
static int rp_field(llhttp_t *p, const char *at, size_t n)
{
    struct reparse *r = p->data;
    return r->checked ? 0 : sg_h1_head_append(&r->head, SG_H1_FIELD, at, n) ? 0 : -1;
}
static int rp_value(llhttp_t *p, const char *at, size_t n)
{
    struct reparse *r = p->data;
    return r->checked ? 0 : sg_h1_head_append(&r->head, SG_H1_VALUE, at, n) ? 0 : -1;
}
static int rp_value_done(llhttp_t *p)
{
    ((struct reparse *)p->data)->head.field_open = false;
    return 0;
}
static int rp_headers(llhttp_t *p)
{
    struct reparse *r = p->data;
    struct sg_h1_target t;
    const char *why;
    FUZZ_ASSERT(sg_h1_head_finish(&r->head));
    r->status = sg_h1_request_check(&r->head, p, &t, &why);
    r->checked = true;
    return 0;
}
static int rp_done(llhttp_t *p)
{
    ((struct reparse *)p->data)->messages++;
    return HPE_PAUSED;
}

static llhttp_errno_t reparse_once(const char *p, size_t n, struct reparse *r, const char **end)
{
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_method = rp_method;
    s.on_url = rp_url;
    s.on_header_field = rp_field;
    s.on_header_value = rp_value;
    s.on_header_value_complete = rp_value_done;
    s.on_headers_complete = rp_headers;
    s.on_message_complete = rp_done;
    memset(r, 0, sizeof *r);
    sg_h1_head_init(&r->head, 1u << 20);
    llhttp_t parser;
    llhttp_init(&parser, HTTP_REQUEST, &s);
    parser.data = r;
    llhttp_errno_t err = llhttp_execute(&parser, p, n);
    *end = llhttp_get_error_pos(&parser);
    return err;
}

static void reparse(const char *p, size_t n)
{
    struct sg_h1_scan sc;
    sg_h1_scan_reset(&sc);
    FUZZ_ASSERT(sg_h1_scan(&sc, p, n) == NULL && sc.head_end);
    struct reparse r;
    const char *end;
    llhttp_errno_t err = reparse_once(p, n, &r, &end);
    char *copy = NULL;
    if (err == HPE_INVALID_METHOD) {
        /* An HTTP/2 client may use any token as a method (RFC 9110 9.1);
         * llhttp knows a fixed list. Check the rest under a known one. */
        const char *sp = memchr(p, ' ', n);
        FUZZ_ASSERT(sp && sg_h1_token((struct sg_str){ p, (size_t)(sp - p) }));
        size_t rest = n - (size_t)(sp - p);
        copy = malloc(4 + rest);
        FUZZ_ASSERT(copy);
        memcpy(copy, "POST", 4);
        memcpy(copy + 4, sp, rest);
        sg_h1_head_free(&r.head);
        p = copy;
        n = 4 + rest;
        err = reparse_once(p, n, &r, &end);
    }
    FUZZ_ASSERT(err == HPE_PAUSED);
    FUZZ_ASSERT(end == p + n); /* one request, ending exactly at the last byte */
    FUZZ_ASSERT(r.messages == 1 && r.checked);
    /* What the proxy sends passes its own checks (it is already normal). */
    FUZZ_ASSERT(r.status == 0);
    sg_h1_head_free(&r.head);
    free(copy);
}

void fuzz_upstream_end(const struct sg_headers *trailers)
{
    if (!active)
        return;
    active = false;
    sg_h1c_end(&client, trailers);
    struct evbuffer *w = wire();
    size_t n = evbuffer_get_length(w);
    const unsigned char *p = evbuffer_pullup(w, (ev_ssize_t)n);
    unsigned hosts = 0, framing = 0;
    size_t head = check_lines(p, n, true, &hosts, &framing);
    FUZZ_ASSERT(hosts == 1 && framing <= 1);
    FUZZ_ASSERT((declared != 0) == (framing == 1));
    if (declared < 0) {
        /* chunked: hex size lines without extensions, CRLF after data */
        size_t pos = head;
        for (;;) {
            size_t size = 0, e = pos;
            while (e < n && ((p[e] >= '0' && p[e] <= '9') || (p[e] >= 'a' && p[e] <= 'f')))
                size = size * 16 + (size_t)(p[e] <= '9' ? p[e] - '0' : p[e] - 'a' + 10), e++;
            FUZZ_ASSERT(e > pos && e + 1 < n && p[e] == '\r' && p[e + 1] == '\n');
            pos = e + 2;
            if (size == 0)
                break;
            FUZZ_ASSERT(pos + size + 2 <= n && p[pos + size] == '\r' && p[pos + size + 1] == '\n');
            pos += size + 2;
        }
        pos += check_lines(p + pos, n - pos, false, NULL, NULL);
        FUZZ_ASSERT(pos == n);
    } else {
        FUZZ_ASSERT(n - head == (uint64_t)declared && body_bytes == (uint64_t)declared);
    }
    reparse((const char *)p, n);
    evbuffer_drain(w, n);
}

void fuzz_upstream_abort(void)
{
    if (!base)
        return;
    active = false;
    evbuffer_drain(wire(), evbuffer_get_length(wire()));
}
