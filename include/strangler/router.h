/* Route selection and the weighted/sticky split. Pure functions over a
 * compiled snapshot: no allocation, no locks, safe from any worker. */
#ifndef STRANGLER_ROUTER_H
#define STRANGLER_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "strangler/config.h"
#include "strangler/headers.h"
#include "strangler/str.h"

struct sg_request_view {
    struct sg_str method; /* e.g. "GET" */
    struct sg_str path; /* origin-form path without the query, as received */
    struct sg_str host; /* Host or :authority, may include a port; matched without it, case-insensitively */
    const struct sg_headers *headers;
};

/* First route whose every condition holds, or NULL (-> 404).
 * path_prefix matching is segment-wise (Gateway API PathPrefix): "/bar"
 * matches "/bar", "/bar/", "/bar/x", not "/barista"; a prefix ending in '/'
 * matches anything under it. */
const struct sg_route *sg_route_match(const struct sg_config *cfg, const struct sg_request_view *req);

/* Applies rewrite.path_prefix to `path` (which the route matched). Writes
 * the new path (no query) into buf, NUL-terminated, and returns its length,
 * or returns SIZE_MAX if it does not fit (buflen must exceed the length).
 * Without a rewrite, copies path. Replacing "/bar" with "/" turns "/bar/x"
 * into "/x" and "/bar" into "/" (no "//"); like Gateway API
 * ReplacePrefixMatch, a trailing '/' of the matched prefix is not part of
 * what is replaced, so "/bar/" -> "/v2" turns "/bar/x" into "/v2/x". */
size_t sg_route_rewrite(const struct sg_route *r, struct sg_str path, char *buf, size_t buflen);

/* The sticky key of a request: the header's value, or the cookie's value
 * from any Cookie header. False when the route is not sticky or the
 * request lacks the key (the caller then picks at random). */
bool sg_sticky_key(const struct sg_route *r, const struct sg_headers *h, struct sg_str *key);

/* Stable 64-bit hash of a sticky key: the same on every process, build and
 * replica (FNV-1a 64 followed by the murmur3 fmix64 finaliser). */
uint64_t sg_sticky_hash(struct sg_str key);

/* Maps a uniformly distributed 64-bit point onto the cumulative weights:
 * destination i owns [cum[i-1], cum[i]) * 2^64 / total. Weight-0
 * destinations own nothing. With two destinations [old, new], raising the
 * weight of new (or lowering old's) only moves points from old to new. (With
 * three or more, raising the last one's weight also shifts points between
 * the earlier ones.) NULL when the route has no weight at all. */
const struct sg_destination *sg_split_pick(const struct sg_route *r, uint64_t point);

/* True when a mirror entry takes this request (method filter and sample). */
bool sg_mirror_selects(const struct sg_mirror *m, struct sg_str method, uint64_t random64);

#endif
