/* HTTP/1.x message heads as llhttp delivers them: pieces of the request
 * line / status and of each field, possibly split across reads. The head
 * copies them into one bounded buffer (max_header_bytes) and, once
 * complete, exposes them as sg_str/sg_headers pointing into it. */
#ifndef STRANGLER_H1_H
#define STRANGLER_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strangler/headers.h"
#include "strangler/str.h"

struct evbuffer;

enum sg_h1_part { SG_H1_METHOD, SG_H1_URL, SG_H1_STATUS, SG_H1_FIELD, SG_H1_VALUE };

struct sg_h1_span {
    uint32_t off, len;
};

struct sg_h1_field {
    struct sg_h1_span name, value;
};

struct sg_h1_head {
    char *buf;
    size_t len, cap, max;
    size_t wire; /* bytes the peer sent for this head, separators included */
    struct sg_h1_span method, url, status;
    struct sg_h1_field *fields;
    size_t n_fields, cap_fields;
    bool field_open; /* the last piece belonged to a field name */
    /* Valid after sg_h1_head_finish(): */
    struct sg_str s_method, s_url, s_status;
    struct sg_headers headers;
};

void sg_h1_head_init(struct sg_h1_head *h, size_t max_bytes);
void sg_h1_head_reset(struct sg_h1_head *h);
void sg_h1_head_free(struct sg_h1_head *h);
/* Gives the buffers back but keeps the limit: an idle keep-alive
 * connection then holds no head memory (they are allocated again, from
 * malloc's per-thread cache, by the next request). */
void sg_h1_head_release(struct sg_h1_head *h);
/* Returns false when the head would exceed max_bytes (431) or on ENOMEM. */
bool sg_h1_head_append(struct sg_h1_head *h, enum sg_h1_part part, const char *p, size_t n);
/* Builds s_* and headers; trims trailing OWS from values. */
bool sg_h1_head_finish(struct sg_h1_head *h);

/* An sg_header_emit_fn writing "name: value\r\n" to the evbuffer ctx: how
 * every HTTP/1.1 head this proxy sends is serialised. */
void sg_h1_emit_field(void *ctx, struct sg_str name, struct sg_str value);
/* "Content-Length: N\r\n", and one chunk of a chunked body: without printf,
 * which costs more than the rest of the head on the request path. */
void sg_h1_emit_content_length(struct evbuffer *out, uint64_t n);
void sg_h1_emit_chunk(struct evbuffer *out, const char *p, size_t n);
/* Digits of v in base 10 or 16 (lower case) at dst (room for 20); returns how many. */
size_t sg_fmt_u64(char *dst, uint64_t v, unsigned base);

#endif
