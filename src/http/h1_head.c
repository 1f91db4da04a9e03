#include "strangler/h1.h"
#include "strangler/mem.h"

#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void sg_h1_head_init(struct sg_h1_head *h, size_t max_bytes)
{
    memset(h, 0, sizeof *h);
    h->max = max_bytes;
    sg_headers_init(&h->headers);
}

void sg_h1_head_reset(struct sg_h1_head *h)
{
    h->len = h->wire = 0;
    h->n_fields = 0;
    h->field_open = false;
    h->method = h->url = h->status = (struct sg_h1_span){ 0, 0 };
    h->s_method = h->s_url = h->s_status = SG_STR_NULL;
    h->headers.n = 0;
}

/* The buffers come from the thread's small-block cache: a head that is
 * built anew for every message (a shadow's, a connection's after parking)
 * would otherwise cost a malloc and a free of each every time. */
void sg_h1_head_free(struct sg_h1_head *h)
{
    sg_mem_free(h->buf);
    sg_mem_free(h->fields);
    sg_headers_free(&h->headers);
    memset(h, 0, sizeof *h);
}

void sg_h1_head_release(struct sg_h1_head *h)
{
    size_t max = h->max;
    sg_h1_head_free(h);
    h->max = max;
}

static bool grow(struct sg_h1_head *h, size_t n)
{
    if (h->len + n <= h->cap)
        return true;
    size_t cap = h->cap ? h->cap : 1024;
    while (cap < h->len + n)
        cap *= 2;
    if (cap > h->max)
        cap = h->max;
    char *b = sg_mem_realloc(h->buf, cap);
    if (!b)
        return false;
    h->buf = b;
    h->cap = cap;
    return true;
}

static struct sg_h1_field *new_field(struct sg_h1_head *h)
{
    if (h->n_fields == h->cap_fields) {
        size_t cap = h->cap_fields ? h->cap_fields * 2 : 16;
        struct sg_h1_field *f = sg_mem_realloc(h->fields, cap * sizeof *f);
        if (!f)
            return NULL;
        h->fields = f;
        h->cap_fields = cap;
    }
    struct sg_h1_field *f = &h->fields[h->n_fields++];
    f->name = f->value = (struct sg_h1_span){ (uint32_t)h->len, 0 };
    return f;
}

/* Pieces of one element arrive in order and nothing else is appended in
 * between, so each span simply grows at the end of the buffer. */
bool sg_h1_head_append(struct sg_h1_head *h, enum sg_h1_part part, const char *p, size_t n)
{
    struct sg_h1_span *span;
    switch (part) {
    case SG_H1_METHOD: span = &h->method; break;
    case SG_H1_URL: span = &h->url; break;
    case SG_H1_STATUS: span = &h->status; break;
    case SG_H1_FIELD:
        if (!h->field_open) {
            if (!new_field(h))
                return false;
            h->field_open = true;
        }
        span = &h->fields[h->n_fields - 1].name;
        break;
    default:
        if (h->n_fields == 0)
            return false;
        h->field_open = false;
        span = &h->fields[h->n_fields - 1].value;
        if (span->len == 0)
            span->off = (uint32_t)h->len;
        break;
    }
    /* The limit counts what the peer sent, also the separators we do not
     * keep: 4 per field covers ": " and CRLF. */
    size_t wire = n + (part == SG_H1_FIELD && span->len == 0 ? 4 : 0);
    if (h->wire + wire > h->max || !grow(h, n))
        return false;
    h->wire += wire;
    if (span->len == 0)
        span->off = (uint32_t)h->len;
    if (n == 0)
        return true; /* an empty name or value: h->buf may still be NULL */
    memcpy(h->buf + h->len, p, n);
    h->len += n;
    span->len += (uint32_t)n;
    return true;
}

bool sg_h1_head_add_field(struct sg_h1_head *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (!sg_h1_head_append(h, SG_H1_FIELD, name, nlen) || !sg_h1_head_append(h, SG_H1_VALUE, value, vlen))
        return false;
    h->field_open = false;
    return true;
}

static struct sg_str span_str(const struct sg_h1_head *h, struct sg_h1_span s)
{
    return (struct sg_str){ s.len ? h->buf + s.off : "", s.len };
}

bool sg_h1_head_finish(struct sg_h1_head *h)
{
    h->s_method = span_str(h, h->method);
    h->s_url = span_str(h, h->url);
    h->s_status = span_str(h, h->status);
    h->headers.n = 0;
    for (size_t i = 0; i < h->n_fields; i++) {
        struct sg_str v = span_str(h, h->fields[i].value);
        while (v.len && (v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t'))
            v.len--;
        while (v.len && (v.p[0] == ' ' || v.p[0] == '\t')) {
            v.p++;
            v.len--;
        }
        if (!sg_headers_add(&h->headers, span_str(h, h->fields[i].name), v))
            return false;
    }
    return true;
}

void sg_wbuf_init(struct sg_wbuf *w, struct evbuffer *out)
{
    w->out = out;
    w->len = 0;
}

void sg_wbuf_flush(struct sg_wbuf *w)
{
    if (w->len)
        evbuffer_add(w->out, w->buf, w->len);
    w->len = 0;
}

void sg_wbuf_add(struct sg_wbuf *w, const void *p, size_t n)
{
    if (n > sizeof w->buf - w->len)
        sg_wbuf_flush(w);
    if (n >= sizeof w->buf) {
        evbuffer_add(w->out, p, n);
        return;
    }
    if (n)
        memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void sg_wbuf_field(void *ctx, struct sg_str name, struct sg_str value)
{
    struct sg_wbuf *w = ctx;
    if (name.len + value.len + 4 <= sizeof w->buf - w->len) {
        char *d = w->buf + w->len;
        if (name.len)
            memcpy(d, name.p, name.len);
        memcpy(d + name.len, ": ", 2);
        if (value.len)
            memcpy(d + name.len + 2, value.p, value.len);
        memcpy(d + name.len + 2 + value.len, "\r\n", 2);
        w->len += name.len + value.len + 4;
        return;
    }
    sg_wbuf_add(w, name.p, name.len);
    sg_wbuf_add(w, ": ", 2);
    sg_wbuf_add(w, value.p, value.len);
    sg_wbuf_add(w, "\r\n", 2);
}

size_t sg_fmt_u64(char *dst, uint64_t v, unsigned base)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

void sg_wbuf_content_length(struct sg_wbuf *w, uint64_t n)
{
    char line[48] = "Content-Length: ";
    size_t len = 16 + sg_fmt_u64(line + 16, n, 10);
    memcpy(line + len, "\r\n", 2);
    sg_wbuf_add(w, line, len + 2);
}

void sg_wbuf_chunk(struct sg_wbuf *w, const char *p, size_t n)
{
    char size[24];
    size_t len = sg_fmt_u64(size, n, 16);
    memcpy(size + len, "\r\n", 2);
    sg_wbuf_add(w, size, len + 2);
    sg_wbuf_add(w, p, n);
    sg_wbuf_add(w, "\r\n", 2);
}

/* ---- strictness beyond llhttp -------------------------------------------- */

void sg_h1_scan_reset(struct sg_h1_scan *sc)
{
    memset(sc, 0, sizeof *sc);
}

/* One byte of the request line (before its LF). */
static const char *scan_request_line(struct sg_h1_scan *sc, char c)
{
    unsigned char u = (unsigned char)c;
    if (c == ' ') {
        if (sc->line_len == 0 || sc->prev == ' ' || ++sc->spaces > 2)
            return "request line is not method SP target SP version\n";
    } else if (u < 0x20 || u == 0x7f) {
        return "control character in the request line\n";
    }
    return NULL;
}

/* The end of the run of bytes from p[i] that change nothing but the line
 * length in the current part of the head (the per-byte rules below only
 * look at the others): one loop per part, the part decided once a run. */
static size_t scan_plain_run(const struct sg_h1_scan *sc, const char *p, size_t i, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    if (!sc->seen_line) /* request line: no SP, no control */
        while (i < n && u[i] > 0x20 && u[i] != 0x7f)
            i++;
    else if (sc->in_name)
        while (i < n && u[i] > 0x20 && u[i] != ':')
            i++;
    else /* value */
        while (i < n && u[i] != '\r' && u[i] != '\n' && u[i] != '\0')
            i++;
    return i;
}

const char *sg_h1_scan(struct sg_h1_scan *sc, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !sc->head_end; i++) {
        /* Runs of plain bytes in one step (not after a CR: that must be
         * followed by LF). */
        size_t j = sc->prev != '\r' ? scan_plain_run(sc, p, i, n) : i;
        if (j > i) {
            sc->line_len += j - i;
            sc->prev = p[j - 1];
            i = j - 1;
            continue;
        }
        char c = p[i];
        if ((sc->prev == '\r' && c != '\n') || c == '\0')
            return "bare CR or NUL in request head\n";
        if (c == '\n') {
            if (sc->prev != '\r')
                return "bare LF in request head\n";
            if (!sc->seen_line && sc->line_len > 0 && sc->spaces != 2)
                return "request line is not method SP target SP version\n";
            if (sc->line_len == 0 && sc->seen_line)
                sc->head_end = true;
            sc->seen_line = sc->seen_line || sc->line_len > 0;
            sc->line_len = 0;
            sc->in_name = sc->seen_line;
        } else if (c != '\r') {
            const char *bad = NULL;
            if (!sc->seen_line)
                bad = scan_request_line(sc, c);
            else if (sc->in_name && (c == ' ' || c == '\t'))
                bad = sc->line_len == 0 ? "obs-fold (folded header line) in request head\n"
                                        : "whitespace before a header field colon\n";
            else if (sc->in_name && c == ':' && sc->line_len == 0)
                bad = "empty header field name\n";
            if (bad)
                return bad;
            if (c == ':')
                sc->in_name = false;
            sc->line_len++;
        }
        sc->prev = c;
    }
    return NULL;
}

/* RFC 9110 5.6.2 tchar as a 256-bit set: "!#$%&'*+-.^_`|~", digits and
 * letters. */
static const uint64_t tchar_set[4] = { 0x03ff6cfa00000000ull, 0x57ffffffc7fffffeull, 0, 0 };

static bool is_tchar(char c)
{
    unsigned char u = (unsigned char)c;
    return (tchar_set[u >> 6] >> (u & 63)) & 1u;
}

bool sg_h1_token(struct sg_str s)
{
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!is_tchar(s.p[i]))
            return false;
    return true;
}

/* Checking names and values byte by byte again cost 1,300 instructions
 * of about 26,000 per proxied request (see the declaration in h1.h). */
const char *sg_h1_fields_problem(const struct sg_h1_head *h)
{
    for (size_t i = 0; i < h->headers.n; i++)
        if (h->headers.v[i].name.len == 0)
            return "invalid header field name\n";
    return NULL;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 3986 reg-name (with pct-encoding), minus ',' (a list separator to
 * HTTP: "Host: a,b" reads as two hosts to some parsers). Covers IPv4. */
static bool reg_name_ok(struct sg_str s)
{
    static const char other[] = "-._~!$&'()*+;=";
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (c == '%') {
            if (i + 2 >= s.len || !is_hex(s.p[i + 1]) || !is_hex(s.p[i + 2]))
                return false;
            i += 2;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c && strchr(other, c));
        if (!ok)
            return false;
    }
    return true;
}

/* Bracketed IPv6 literal, contents only: hex digits, ':' and '.' (an
 * embedded IPv4). No zone identifiers, no IPvFuture. */
static bool ipv6_ok(struct sg_str s)
{
    if (s.len < 2 || s.len > 45)
        return false;
    size_t colons = 0;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (c == ':')
            colons++;
        else if (!is_hex(c) && c != '.')
            return false;
    }
    return colons >= 2 && colons <= 7;
}

static bool port_ok(struct sg_str s)
{
    if (s.len == 0 || s.len > 5)
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s.p[i] - '0');
    }
    return v <= 65535;
}

bool sg_h1_authority_valid(struct sg_str a)
{
    if (a.len == 0)
        return false;
    struct sg_str host = a, port = SG_STR_NULL;
    bool has_port = false;
    if (a.p[0] == '[') {
        const char *close = memchr(a.p, ']', a.len);
        if (!close)
            return false;
        size_t hl = (size_t)(close - a.p) + 1;
        if (!ipv6_ok((struct sg_str){ a.p + 1, hl - 2 }))
            return false;
        if (hl < a.len) {
            if (a.p[hl] != ':')
                return false;
            has_port = true;
            port = (struct sg_str){ a.p + hl + 1, a.len - hl - 1 };
        }
        return !has_port || port_ok(port);
    }
    const char *colon = memchr(a.p, ':', a.len);
    if (colon) {
        host.len = (size_t)(colon - a.p);
        port = (struct sg_str){ colon + 1, a.len - host.len - 1 };
        has_port = true;
    }
    return reg_name_ok(host) && (!has_port || port_ok(port));
}

/* RFC 9112 3.2: bytes a request target may hold. Visible ASCII only; a
 * fragment ('#') is never part of one. */
static bool target_bytes_ok(struct sg_str t)
{
    for (size_t i = 0; i < t.len; i++) {
        unsigned char c = (unsigned char)t.p[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return false;
    }
    return true;
}

static void split_query(struct sg_str pq, struct sg_h1_target *t)
{
    const char *q = memchr(pq.p, '?', pq.len);
    t->target = pq;
    t->path = (struct sg_str){ pq.p, q ? (size_t)(q - pq.p) : pq.len };
    t->query = q ? (struct sg_str){ q + 1, pq.len - (size_t)(q - pq.p) - 1 } : SG_STR_NULL;
}

/* Origin-form, or absolute-form (RFC 9112 3.2.1, 3.2.2) with an http(s)
 * scheme, reduced to origin-form; its authority replaces Host. Asterisk-
 * and authority-form are not for a reverse proxy's routes. */
static const char *split_target(struct sg_str url, struct sg_h1_target *t, struct sg_str *authority)
{
    *authority = SG_STR_NULL;
    if (url.len == 0 || !target_bytes_ok(url))
        return "invalid request target\n";
    if (url.p[0] == '/') {
        split_query(url, t);
        return NULL;
    }
    size_t skip = 0;
    if (url.len >= 7 && strncasecmp(url.p, "http://", 7) == 0)
        skip = 7;
    else if (url.len >= 8 && strncasecmp(url.p, "https://", 8) == 0)
        skip = 8;
    if (!skip)
        return "invalid request target\n";
    struct sg_str rest = { url.p + skip, url.len - skip };
    size_t alen = 0;
    while (alen < rest.len && rest.p[alen] != '/' && rest.p[alen] != '?')
        alen++;
    *authority = (struct sg_str){ rest.p, alen };
    if (memchr(authority->p, '@', alen))
        return "userinfo in the request target\n";
    if (!sg_h1_authority_valid(*authority))
        return "invalid authority in the request target\n";
    struct sg_str pq = { rest.p + alen, rest.len - alen };
    if (pq.len && pq.p[0] == '/') {
        split_query(pq, t);
    } else {
        /* An empty path is "/" (RFC 9112 3.2.1); the log shows the URL. */
        split_query(pq, t);
        t->path = SG_STR_LIT("/");
        t->target = pq.len ? url : SG_STR_LIT("/");
    }
    return NULL;
}

/* Transfer-Encoding across every field line: llhttp has made sure chunked
 * is the final coding and appears once; anything else in the list is a
 * coding the proxy does not implement (RFC 9112 6.1: 501). */
static int transfer_coding_status(const struct sg_headers *h, const char **why)
{
    size_t codings = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (!sg_str_ieq_c(h->v[i].name, "transfer-encoding"))
            continue;
        struct sg_str v = h->v[i].value;
        size_t start = 0;
        for (size_t j = 0; j <= v.len; j++) {
            if (j < v.len && v.p[j] != ',')
                continue;
            struct sg_str e = { v.p + start, j - start };
            while (e.len && (e.p[0] == ' ' || e.p[0] == '\t')) {
                e.p++;
                e.len--;
            }
            while (e.len && (e.p[e.len - 1] == ' ' || e.p[e.len - 1] == '\t'))
                e.len--;
            if (e.len)
                codings++;
            start = j + 1;
        }
    }
    if (codings > 1) {
        *why = "transfer coding other than chunked\n";
        return 501;
    }
    return 0;
}

static int refuse(const char **why, int status, const char *text)
{
    *why = text;
    return status;
}

int sg_h1_request_check(const struct sg_h1_head *h, const llhttp_t *p, struct sg_h1_target *t, const char **why)
{
    memset(t, 0, sizeof *t);
    if (p->http_major != 1 || p->http_minor > 1)
        return refuse(why, 505, "HTTP version not supported (only HTTP/1.0 and HTTP/1.1)\n");
    t->http10 = p->http_minor == 0;
    if (p->method == HTTP_CONNECT)
        return refuse(why, 405, "CONNECT is not supported\n");
    const char *bad = sg_h1_fields_problem(h);
    if (bad)
        return refuse(why, 400, bad);
    struct sg_str authority;
    if ((bad = split_target(h->s_url, t, &authority)))
        return refuse(why, 400, bad);
    const struct sg_headers *hs = &h->headers;
    size_t n_host = sg_headers_count(hs, SG_STR_LIT("host"));
    const struct sg_header *host = sg_headers_get(hs, SG_STR_LIT("host"));
    if (n_host > 1)
        return refuse(why, 400, "duplicate Host header\n");
    if ((n_host == 0 && !t->http10) || (host && !sg_h1_authority_valid(host->value)))
        return refuse(why, 400, "missing or invalid Host header\n");
    /* RFC 9112 3.2.2: the absolute-form target's authority wins over Host. */
    t->host = authority.len ? authority : host ? host->value : SG_STR_NULL;
    bool te = (p->flags & F_TRANSFER_ENCODING) || sg_headers_get(hs, SG_STR_LIT("transfer-encoding"));
    if (te && t->http10) /* RFC 9112 6.1: faulty framing */
        return refuse(why, 400, "Transfer-Encoding on an HTTP/1.0 request\n");
    int st = te ? transfer_coding_status(hs, why) : 0;
    if (st)
        return st;
    if (p->flags & F_CHUNKED)
        t->content_length = -1;
    else if (p->flags & F_CONTENT_LENGTH) {
        if (p->content_length > (uint64_t)INT64_MAX)
            return refuse(why, 400, "Content-Length too large\n");
        t->content_length = (int64_t)p->content_length;
    }
    return 0;
}

int sg_h1_parse_error_status(const llhttp_t *p, llhttp_errno_t err)
{
    const char *reason = llhttp_get_error_reason(p);
    if (err == HPE_INVALID_VERSION && reason && strcmp(reason, "Invalid HTTP version") == 0)
        return 505;
    return 400;
}
