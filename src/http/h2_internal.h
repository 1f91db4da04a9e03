/* Shared between h2_server.c (connections, nghttp2 callbacks, the
 * downstream ops) and h2_stream.c (request heads and field lists).
 * Internal to src/http: not part of the public headers. */
#ifndef STRANGLER_H2_INTERNAL_H
#define STRANGLER_H2_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strangler/exchange.h"
#include "strangler/headers.h"
#include "strangler/str.h"

/* ---- arena: copies that stay put ----------------------------------------
 * Header bytes are copied out of nghttp2's buffers into blocks that are
 * never moved, so sg_str pointers into them stay valid until the arena
 * is freed with its stream. */
struct sg_h2_block;

struct sg_h2_arena {
    struct sg_h2_block *blocks;
};

/* NULL on allocation failure. */
char *sg_h2_arena_copy(struct sg_h2_arena *a, const void *p, size_t n);
void sg_h2_arena_free(struct sg_h2_arena *a);

/* ---- outgoing field lists (response heads, 1xx, trailers) --------------
 * Names go in as they came (an HTTP/1.1 upstream's "Content-Type"):
 * nghttp2 copies every list it is given at submit time and lower-cases
 * the names as it copies (nghttp2_nv_array_copy), which RFC 9113 8.2.1
 * asks for. So a list only has to stay valid until the submit call. */
struct sg_h2_nvlist {
    nghttp2_nv *v;
    size_t n, cap;
    struct sg_h2_arena mem;
    char num[40]; /* digits of :status and content-length */
    size_t num_used;
    bool failed; /* an allocation failed: do not submit */
};

void sg_h2_nv_init(struct sg_h2_nvlist *l);
void sg_h2_nv_free(struct sg_h2_nvlist *l);
/* Copies both into the list (for a list kept past the caller's data). */
void sg_h2_nv_add(struct sg_h2_nvlist *l, struct sg_str name, struct sg_str value);
/* Points at both: they must outlive the submit call. */
void sg_h2_nv_ref(struct sg_h2_nvlist *l, struct sg_str name, struct sg_str value);
/* A decimal value; `name` must outlive the submit call. */
void sg_h2_nv_num(struct sg_h2_nvlist *l, struct sg_str name, uint64_t value);
/* An sg_header_emit_fn for sg_headers_forward_response(); ctx is the
 * list, and the fields are referenced (sg_h2_nv_ref), not copied. */
void sg_h2_nv_emit_ref(void *ctx, struct sg_str name, struct sg_str value);
/* Adds (copies) the end-to-end fields of a trailer section: framing and
 * hop-by-hop fields never belong in trailers (RFC 9110 6.5.1). */
void sg_h2_nv_add_trailers(struct sg_h2_nvlist *l, const struct sg_headers *trailers);

/* ---- request heads ------------------------------------------------------- */

/* Why a request is malformed (RFC 9113 8.1.1): a stream error of type
 * PROTOCOL_ERROR. Compared by pointer, logged at debug level. */
extern const char sg_h2_err_pseudo_dup[];
extern const char sg_h2_err_pseudo_unknown[];
extern const char sg_h2_err_pseudo_late[];
extern const char sg_h2_err_pseudo_missing[];
extern const char sg_h2_err_path[];
extern const char sg_h2_err_authority[];
extern const char sg_h2_err_connection_field[];
extern const char sg_h2_err_te[];
extern const char sg_h2_err_field_value[];
extern const char sg_h2_err_content_length[];
extern const char sg_h2_err_nomem[];

/* A request head as HEADERS (+ CONTINUATION) deliver it, field by field. */
struct sg_h2_head {
    struct sg_h2_arena mem;
    struct sg_headers fields; /* regular fields, names lower-case */
    struct sg_str method, scheme, path, authority;
    unsigned pseudo_seen; /* bit per pseudo-header */
    bool regular_seen;
    size_t size, max; /* RFC 9113 6.5.2 accounting: name + value + 32 */
    bool too_large;
    const char *malformed; /* first reason, or NULL */
    int64_t content_length; /* -1: none */
    size_t n_host;
    struct sg_str host;
};

void sg_h2_head_init(struct sg_h2_head *h, size_t max_bytes);
void sg_h2_head_free(struct sg_h2_head *h);
/* One field of the request head, as nghttp2 decoded it. */
void sg_h2_head_field(struct sg_h2_head *h, const uint8_t *name, size_t namelen, const uint8_t *value,
                      size_t valuelen);

/* What the end of a request head leads to. */
enum sg_h2_verdict {
    SG_H2_REQUEST, /* a request to proxy: *req is filled in */
    SG_H2_MALFORMED, /* stream error PROTOCOL_ERROR; h->malformed says why */
    SG_H2_ANSWER, /* well-formed but answered by the proxy: *status, *text */
};

/* Validates the complete head and fills req (everything except
 * client_addr and scheme, which are the connection's). `end_stream`: the
 * HEADERS frame carried END_STREAM (no body). */
enum sg_h2_verdict sg_h2_head_finish(struct sg_h2_head *h, bool end_stream, struct sg_request *req, int *status,
                                     const char **text);

#endif
