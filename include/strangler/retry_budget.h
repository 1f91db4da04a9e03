/* Retry budget: retries may add at most `percent` % to the requests of a
 * route, plus a floor of `min_retries_per_second`, so that retries cannot
 * multiply the load on an upstream that is failing (Finagle's RetryBudget,
 * Envoy's retry_budget). A token bucket per route per worker, no locks:
 *   - every request of the route deposits percent/100 of a token;
 *   - time deposits min_retries_per_second / workers tokens per second;
 *   - a retry withdraws one token, or is denied when there is none;
 *   - the bucket holds at most max(10 s of the floor, 10) tokens, and
 *     starts full, so a burst of failures at the start of an outage gets
 *     that many retries and then the ratio.
 * Tokens are kept in thousandths, so the arithmetic is exact integers. */
#ifndef STRANGLER_RETRY_BUDGET_H
#define STRANGLER_RETRY_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#include "strangler/str.h"

struct sg_retry_budget {
    uint64_t milli; /* tokens x 1000 */
    uint64_t last_ms; /* when time last deposited; 0: never (starts full) */
};

/* The most the bucket holds, in thousandths of a token. */
uint64_t sg_retry_budget_cap(uint32_t min_per_second, unsigned workers);
/* One request of the route. */
void sg_retry_budget_deposit(struct sg_retry_budget *b, uint32_t percent, uint32_t min_per_second, unsigned workers);
/* One retry: true (a token taken) or false (denied). */
bool sg_retry_budget_withdraw(struct sg_retry_budget *b, uint32_t min_per_second, unsigned workers, uint64_t now_ms);

/* ---- used by the exchange (exchange.c) --------------------------------------- */

struct sg_worker;
struct sg_wsnap;
struct sg_route;
struct sg_headers;

/* A request of route r starts: deposits into its budget (routes that
 * retry only). */
void sg_retry_note_request(struct sg_worker *w, struct sg_wsnap *snap, const struct sg_route *r);
/* A retry of route r to `upstream` is about to go: true if the budget
 * allows it. Counts strangler_retries_total{result="sent"|"denied"}. */
bool sg_retry_take(struct sg_worker *w, struct sg_wsnap *snap, const struct sg_route *r, const char *upstream);
/* May a request be sent again after it reached an upstream? Only when it
 * is idempotent (RFC 9110 9.2.2: GET HEAD OPTIONS TRACE PUT DELETE) or
 * carries an Idempotency-Key header (draft-ietf-httpapi-idempotency-key). */
bool sg_retry_idempotent(struct sg_str method, const struct sg_headers *h);

#endif
