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
 * Comparison (compare.h) hangs off the same pair: the primary copies a
 * bounded summary of its response into the shadow as it streams
 * (sg_shadow_primary_head/body), hands the end over in sg_shadow_release(),
 * and whichever side finishes last compares; a shadow that ends first with
 * compare configured waits, off the in-flight list, for that release. */
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
/* A noise probe (compare `noise: auto`): the same request once more, to
 * the primary's upstream, when compare.c samples it (GET/HEAD only). Its
 * answer is compared with the primary's to learn noisy fields; it is not a
 * mirrored request (no mirror metrics, no shadow log line). */
void sg_shadow_probe_start(struct sg_worker *w, struct sg_wsnap *snap, const struct sg_shadow_request *r,
                           const struct sg_upstream *primary, struct sg_shadow **slot);
void sg_shadow_body(struct sg_shadow *sh, const char *p, size_t n);
void sg_shadow_body_end(struct sg_shadow *sh);
/* The primary's response, for the comparison: its head (upstream fields,
 * before the route's response_headers edits) and body bytes as they go to
 * the client. Copies what compare needs; no-op without compare. */
void sg_shadow_primary_head(struct sg_shadow *sh, int status, const struct sg_headers *h);
void sg_shadow_primary_body(struct sg_shadow *sh, const char *p, size_t n);
/* The primary lets go; response_complete: its upstream response ended
 * normally. A shadow whose body never completed is dropped. */
void sg_shadow_release(struct sg_shadow *sh, bool response_complete);

/* Worker exit: every shadow still in flight is dropped. */
void sg_shadows_abort_all(struct sg_worker *w);

#endif
