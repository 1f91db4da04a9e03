/* HTTP field lists and the forwarding rules applied to them (hop-by-hop
 * removal, x-forwarded-*, x-request-id, operator edits). Protocol-neutral:
 * the HTTP/1.1 code and, later, the HTTP/2 code both serialise from here. */
#ifndef STRANGLER_HEADERS_H
#define STRANGLER_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strangler/str.h"

struct sg_header_edits;

struct sg_header {
    struct sg_str name; /* as received; compare with sg_str_ieq */
    struct sg_str value; /* leading/trailing OWS already trimmed */
};

/* A growable list. Entries point into memory owned by the message (see
 * message.h); the array itself is malloc'd. */
struct sg_headers {
    struct sg_header *v;
    size_t n, cap;
};

void sg_headers_init(struct sg_headers *h);
void sg_headers_free(struct sg_headers *h);
/* Returns false on allocation failure. */
bool sg_headers_add(struct sg_headers *h, struct sg_str name, struct sg_str value);
/* First field with this name (case-insensitive), or NULL. */
const struct sg_header *sg_headers_get(const struct sg_headers *h, struct sg_str name);
size_t sg_headers_count(const struct sg_headers *h, struct sg_str name);

/* True if comma-separated list `value` contains `token` (case-insensitive,
 * OWS around elements ignored, parameters after ';' ignored: "trailers;q=1"
 * contains "trailers"), as for Connection, TE, Upgrade. */
bool sg_header_list_has(struct sg_str value, struct sg_str token);

/* Hop-by-hop per RFC 9110 7.6.1 and the behaviour contract: Connection,
 * Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade, and
 * HTTP2-Settings (h2c upgrade, never forwarded). */
bool sg_header_is_hop_by_hop(struct sg_str name);

/* Names the proxy itself controls, which route header edits must not
 * touch: hop-by-hop fields, Host, Content-Length, Expect, x-request-id and
 * pseudo-headers (":authority"...). The loader should reject them in
 * request_headers/response_headers; forwarding never emits them from `set`. */
bool sg_header_name_reserved(struct sg_str name);

/* Called once per field to send. `name` and `value` are only valid during
 * the call (x-forwarded-for is joined in a temporary buffer): copy them. */
typedef void (*sg_header_emit_fn)(void *ctx, struct sg_str name, struct sg_str value);

struct sg_forward_request_opts {
    struct sg_str client_addr; /* appended to x-forwarded-for */
    struct sg_str proto; /* "http" or "https": x-forwarded-proto when absent */
    struct sg_str request_id; /* emitted as x-request-id (replacing any) */
    bool upgrade; /* websocket tunnel: emit Upgrade + Connection: upgrade */
    const struct sg_header_edits *edits; /* route request_headers, may be NULL */
};

/* Emits, in order, every end-to-end field of `in` that an upstream request
 * should carry, then the proxy's own fields, then the operator's `set`
 * fields. Never emits: hop-by-hop fields, fields named in Connection, Host,
 * Content-Length, Expect, x-request-id (replaced), fields removed or
 * overridden by `edits`. `te: trailers` is kept when the client sent it.
 * The caller writes Host and the framing fields itself. */
void sg_headers_forward_request(const struct sg_headers *in, const struct sg_forward_request_opts *o,
                                sg_header_emit_fn emit, void *ctx);

/* Same for a response going back to the client: hop-by-hop and
 * Connection-named fields and Content-Length are dropped, `edits` (route
 * response_headers) applied. With `upgrade`, Upgrade + Connection: upgrade are
 * emitted for a 101. */
void sg_headers_forward_response(const struct sg_headers *in, const struct sg_header_edits *edits, bool upgrade,
                                 sg_header_emit_fn emit, void *ctx);

/* May this field travel in a trailer section? Not framing (content-length,
 * transfer-encoding), routing (host), request modifiers, authentication,
 * cookies, representation metadata (RFC 9110 6.5.1), hop-by-hop fields,
 * pseudo-headers or the proxy's own (x-forwarded-*, x-request-id). */
bool sg_header_trailer_ok(struct sg_str name);

/* Emits the fields of `trailers` that sg_header_trailer_ok allows. */
void sg_headers_forward_trailers(const struct sg_headers *trailers, sg_header_emit_fn emit, void *ctx);

/* Validates a client-supplied x-request-id: 1..200 visible ASCII chars. */
bool sg_request_id_valid(struct sg_str id);

#endif
