/* Comparing shadow responses with the primary's (mirror[].compare).
 *
 * Three layers, each usable on its own:
 *
 * - JSON Pointers (RFC 6901) with the contract's `*` segment wildcard, and
 *   a diff of two parsed JSON values (jansson) that reports every differing
 *   pointer, leaves out ignored ones and tells learnt noise apart.
 * - A response summary (struct sg_cmp): status, the configured headers, the
 *   Content-Encoding and the body, as a SHA-256 digest (`bytes`) or the
 *   bytes up to compare.max_body_bytes (`json`), for both the primary and
 *   the other side. It is filled as the responses stream past and never
 *   holds either response up; the bytes it keeps count against the
 *   worker's limits.shadow_max_buffered_bytes.
 * - The comparison itself and its results: counters, the bounded pointer
 *   metric, rate-limited mirror_diff lines, the per-worker statistics the
 *   admin port reports at GET /mirror/diffs, and the noise learnt from
 *   noise probes (a second request of a GET/HEAD to the primary's upstream).
 *
 * Everything runs on the worker that owns the shadow; the admin report is
 * the only other reader (see compare.c for the locking). */
#ifndef STRANGLER_COMPARE_H
#define STRANGLER_COMPARE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strangler/config.h"
#include "strangler/headers.h"
#include "strangler/str.h"

struct evbuffer;
struct sg_worker;

/* ---- JSON Pointers and the diff ------------------------------------------ */

/* Parses "" or a pointer such as "/a/b~1c" into decoded segments ("a",
 * "b/c"). A segment "*" is a wildcard for exactly one level. False on a string that
 * is not a pointer (or on allocation failure). */
bool sg_json_pointer_parse(const char *s, struct sg_json_pointer *out);
void sg_json_pointer_free(struct sg_json_pointer *p);
/* Does the pointer with these decoded segments match the pattern? */
bool sg_json_pointer_match(const struct sg_json_pointer *pattern, const char *const *seg, const size_t *seglen,
                           size_t n);

/* One difference. `pointer` is concrete ("/items/3/price"); `normalised`
 * has every array index replaced by "*" (so "/items/3/price" becomes "/items/" "*" "/price"): the form that
 * statistics, metrics and learnt noise use, so their sets stay bounded.
 * `a` or `b` is NULL when that side lacks the pointer. */
typedef void (*sg_json_diff_fn)(void *ctx, const char *pointer, const char *normalised, const json_t *a,
                                const json_t *b, bool noise);

struct sg_json_diff_opts {
    const struct sg_json_pointer *ignore; /* subtrees left out */
    size_t n_ignore;
    const struct sg_json_pointer *noise; /* subtrees whose differences are noise */
    size_t n_noise;
    sg_json_diff_fn fn; /* may be NULL: just count */
    void *ctx;
};

/* Walks both values; numbers compare by value (1 == 1.0), objects by key
 * (order does not matter), arrays by index. Returns the number of real
 * (non-noise) differences; *noise_out (may be NULL) gets the noise ones. */
size_t sg_json_diff(const json_t *a, const json_t *b, const struct sg_json_diff_opts *o, size_t *noise_out);
/* Deep equality with numbers by value. */
bool sg_json_equal(const json_t *a, const json_t *b);

/* ---- response summaries ---------------------------------------------------- */

enum sg_cmp_who { SG_CMP_PRIMARY = 0, SG_CMP_OTHER = 1 };

struct sg_cmp;

/* The worker's byte budget for comparison memory: *used against max. */
struct sg_cmp_budget {
    uint64_t *used;
    uint64_t max;
};

struct sg_cmp *sg_cmp_new(const struct sg_compare *k);
void sg_cmp_head(struct sg_cmp *c, enum sg_cmp_who who, int status, const struct sg_headers *h,
                 struct sg_cmp_budget b);
void sg_cmp_body(struct sg_cmp *c, enum sg_cmp_who who, const char *p, size_t n, struct sg_cmp_budget b);
/* That side's response is complete. */
void sg_cmp_end(struct sg_cmp *c, enum sg_cmp_who who);
/* Gives the bytes back to the budget and frees. */
void sg_cmp_free(struct sg_cmp *c, struct sg_cmp_budget b);

/* ---- the comparison -------------------------------------------------------- */

struct sg_cmp_request {
    const struct sg_route *route;
    const struct sg_mirror *mirror; /* its compare block is the one used */
    bool probe; /* a noise probe: learn, don't count */
    struct sg_str request_id, method, path;
    uint64_t wall_us; /* when the request started */
};

enum sg_cmp_result { SG_CMP_MATCH = 0, SG_CMP_MISMATCH, SG_CMP_SKIPPED, SG_CMP_ERROR };

/* Compares both summaries and records the result (metrics, statistics,
 * mirror_diff line, or learnt noise for a probe). Runs on worker w. */
enum sg_cmp_result sg_compare_run(struct sg_worker *w, struct sg_cmp *c, const struct sg_cmp_request *r);

/* A noise probe for this mirrored request? Only for `noise: auto` with
 * `body: json`, GET and HEAD, sampled (compare.c: NOISE_PROBE_*). On yes the
 * caller starts the probe and calls sg_noise_probe_done once it ends. */
bool sg_noise_probe_wanted(struct sg_worker *w, const struct sg_route *route, const struct sg_mirror *m,
                           struct sg_str method);
void sg_noise_probe_done(struct sg_worker *w, const struct sg_route *route, const struct sg_mirror *m,
                         bool failed);

/* Once, before any worker starts: seeds jansson's object hashing (which
 * would otherwise seed itself lazily from whichever thread parses first). */
void sg_compare_init(void);

/* GET /mirror/diffs: the JSON report over every worker (admin thread). */
void sg_compare_report(struct evbuffer *out);
/* POST /mirror/diffs/reset: forgets counts, pointers and recent mismatches
 * (not learnt noise, not metrics). */
void sg_compare_reset(void);

#endif
