#include "strangler/h1.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

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

void sg_h1_head_free(struct sg_h1_head *h)
{
    free(h->buf);
    free(h->fields);
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
    char *b = realloc(h->buf, cap);
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
        struct sg_h1_field *f = realloc(h->fields, cap * sizeof *f);
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
    memcpy(h->buf + h->len, p, n);
    h->len += n;
    span->len += (uint32_t)n;
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

/* One evbuffer_add per field line: every add runs the buffer's callbacks. */
void sg_h1_emit_field(void *ctx, struct sg_str name, struct sg_str value)
{
    struct evbuffer *out = ctx;
    char line[512];
    if (name.len + value.len + 4 <= sizeof line) {
        memcpy(line, name.p, name.len);
        memcpy(line + name.len, ": ", 2);
        memcpy(line + name.len + 2, value.p, value.len);
        memcpy(line + name.len + 2 + value.len, "\r\n", 2);
        evbuffer_add(out, line, name.len + value.len + 4);
        return;
    }
    evbuffer_add(out, name.p, name.len);
    evbuffer_add(out, ": ", 2);
    evbuffer_add(out, value.p, value.len);
    evbuffer_add(out, "\r\n", 2);
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

void sg_h1_emit_content_length(struct evbuffer *out, uint64_t n)
{
    char line[48] = "Content-Length: ";
    size_t len = 16 + sg_fmt_u64(line + 16, n, 10);
    memcpy(line + len, "\r\n", 2);
    evbuffer_add(out, line, len + 2);
}

void sg_h1_emit_chunk(struct evbuffer *out, const char *p, size_t n)
{
    char size[24];
    size_t len = sg_fmt_u64(size, n, 16);
    memcpy(size + len, "\r\n", 2);
    evbuffer_add(out, size, len + 2);
    evbuffer_add(out, p, n);
    evbuffer_add(out, "\r\n", 2);
}
