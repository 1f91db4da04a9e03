/* Shadow requests: peers of the primary, never its children.
 *
 * A shadow copies what it needs from the primary at start (method, target,
 * host with the suffix, the forwarded header fields) into its own memory,
 * takes connections from the upstream's shadow-only pools, and has its own
 * deadline. The primary feeds it body bytes through one pointer, which the
 * shadow clears if it ends first (the pair of pointers HAProxy's coding
 * style asks for); there is no pointer back to the client connection. Over
 * a budget or a cap a shadow is dropped and counted, never waited for.
 *
 * Comparison (a later release) hangs off the same pair: the primary hands
 * its summary over in sg_shadow_release() and whichever side finishes last
 * compares; a shadow that ends first with compare configured keeps only its
 * own summary until then. */
#ifndef STRANGLER_MIRROR_H
#define STRANGLER_MIRROR_H

#include <stdbool.h>
#include <stdint.h>

#include "strangler/config.h"
#include "strangler/headers.h"
#include "strangler/str.h"

struct sg_worker;
struct sg_wsnap;
struct sg_shadow;

struct sg_shadow_request {
    const struct sg_route *route;
    const struct sg_mirror *mirror;
    struct sg_str method;
    struct sg_str target; /* rewritten path + query */
    struct sg_str host; /* the primary's Host, before the suffix */
    struct sg_str protocol; /* the client's, for the shadow's log line */
    const struct sg_headers *headers; /* the client's fields: copied at start */
    const struct sg_forward_request_opts *forward;
    int64_t content_length; /* -1 chunked, 0 none */
};

/* Samples nothing: the caller decided (sg_mirror_selects). Starts the
 * shadow and stores it in *slot, which the shadow clears when it ends; or
 * drops it at once (counted, logged) and leaves *slot NULL. Returns whether
 * the request was copied (for the primary's "mirrored" log field). */
bool sg_shadow_start(struct sg_worker *w, struct sg_wsnap *snap, const struct sg_shadow_request *r,
                     struct sg_shadow **slot);
void sg_shadow_body(struct sg_shadow *sh, const char *p, size_t n);
void sg_shadow_body_end(struct sg_shadow *sh);
/* The primary lets go. A shadow whose body never completed is dropped. */
void sg_shadow_release(struct sg_shadow *sh);

/* Worker exit: every shadow still in flight is dropped. */
void sg_shadows_abort_all(struct sg_worker *w);

#endif
