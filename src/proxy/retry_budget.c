/* Retry budget arithmetic (see retry_budget.h). */
#include "strangler/retry_budget.h"

#include <string.h>

#include "strangler/clock.h"
#include "strangler/headers.h"
#include "strangler/worker.h"

#define TOKEN 1000u
#define WINDOW_S 10u /* the floor is banked for at most this many seconds */
#define MIN_CAP_TOKENS 10u

uint64_t sg_retry_budget_cap(uint32_t min_per_second, unsigned workers)
{
    if (workers == 0)
        workers = 1;
    uint64_t cap = (uint64_t)min_per_second * WINDOW_S * TOKEN / workers;
    return cap < MIN_CAP_TOKENS * TOKEN ? MIN_CAP_TOKENS * TOKEN : cap;
}

static void add(struct sg_retry_budget *b, uint64_t milli, uint64_t cap)
{
    b->milli = b->milli + milli > cap || b->milli + milli < b->milli ? cap : b->milli + milli;
}

void sg_retry_budget_deposit(struct sg_retry_budget *b, uint32_t percent, uint32_t min_per_second, unsigned workers)
{
    add(b, (uint64_t)percent * TOKEN / 100u, sg_retry_budget_cap(min_per_second, workers));
}

bool sg_retry_budget_withdraw(struct sg_retry_budget *b, uint32_t min_per_second, unsigned workers, uint64_t now_ms)
{
    uint64_t cap = sg_retry_budget_cap(min_per_second, workers);
    if (workers == 0)
        workers = 1;
    if (b->last_ms == 0) {
        b->milli = cap; /* starts full */
        b->last_ms = now_ms ? now_ms : 1;
    } else if (now_ms > b->last_ms) {
        /* min_per_second tokens per second per process = min_per_second
         * thousandths per millisecond, shared by the workers. Time not yet
         * worth a thousandth stays on the clock (last_ms moves only by what
         * was deposited), so frequent calls lose nothing to rounding. */
        uint64_t elapsed = now_ms - b->last_ms;
        if (min_per_second == 0) {
            b->last_ms = now_ms;
        } else if (elapsed >= (uint64_t)WINDOW_S * 1000u) {
            b->milli = cap;
            b->last_ms = now_ms;
        } else {
            uint64_t d = elapsed * min_per_second / workers;
            add(b, d, cap);
            b->last_ms += d * workers / min_per_second;
        }
    }
    if (b->milli < TOKEN)
        return false;
    b->milli -= TOKEN;
    return true;
}

/* ---- exchange side ---------------------------------------------------------------- */

void sg_retry_note_request(struct sg_worker *w, struct sg_wsnap *snap, const struct sg_route *r)
{
    const struct sg_retry_policy *p = &r->retries;
    if (p->attempts == 0)
        return;
    sg_retry_budget_deposit(&snap->budgets[r->index], p->budget_percent, p->budget_min_per_second,
                            snap->cfg->workers);
}

bool sg_retry_take(struct sg_worker *w, struct sg_wsnap *snap, const struct sg_route *r, const char *upstream)
{
    const struct sg_retry_policy *p = &r->retries;
    bool ok = sg_retry_budget_withdraw(&snap->budgets[r->index], p->budget_min_per_second, snap->cfg->workers,
                                       sg_mono_ms());
    sg_metrics_add(w->metrics,
                   sg_worker_series(w, "strangler_retries_total", r->name, upstream,
                                    ok ? ",result=\"sent\"" : ",result=\"denied\"", -1),
                   1);
    return ok;
}

bool sg_retry_idempotent(struct sg_str method, const struct sg_headers *h)
{
    static const char *const safe[] = { "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE" };
    for (size_t i = 0; i < sizeof safe / sizeof safe[0]; i++)
        if (method.len == strlen(safe[i]) && memcmp(method.p, safe[i], method.len) == 0)
            return true;
    return h && sg_headers_get(h, SG_STR_LIT("idempotency-key")) != NULL;
}
