/* Endpoint health, shared by every thread of the process.
 *
 * One struct sg_endpoint per (upstream name, host, port), created on first
 * use and kept for the life of the process (it survives reloads, like the
 * pools). Two sources write it:
 *   - active health checks (prober.c, on the main thread) set `hc_down`;
 *   - passive outlier detection (the workers, on primary responses)
 *     counts consecutive failures and sets `ejected_until_ms`.
 * The request path only reads it (sg_endpoint_usable: one or two relaxed
 * loads); a response adds at most one relaxed read-modify-write.
 *
 * The state machines themselves (sg_hc_record, sg_outlier_record) are pure
 * functions so the unit tests can drive them. */
#ifndef STRANGLER_HEALTH_H
#define STRANGLER_HEALTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "strangler/clock.h"
#include "strangler/config.h"
#include "strangler/metrics.h"

struct sg_worker;
struct sg_pool;
struct sg_upstream_rt;

struct sg_endpoint {
    char *upstream, *host;
    uint16_t port;
    char *label; /* escaped metric labels: upstream="..",endpoint="host:port" */
    atomic_bool hc_down; /* the active health check took it out of rotation */
    _Atomic uint64_t ejected_until_ms; /* outlier detection: out until (sg_mono_ms); 0: never ejected */
    atomic_uint fails; /* consecutive failed responses (any kind) */
    atomic_uint connect_fails; /* consecutive connection-level failures */
    sg_series_t g_healthy, c_ejections;
    struct sg_endpoint *next;
};

/* Finds or creates the endpoint (takes a mutex: at attach time only). */
struct sg_endpoint *sg_endpoint_get(const char *upstream, const char *host, uint16_t port);

/* In rotation? `hc` / `od`: the upstream has health_check /
 * outlier_detection in the caller's snapshot (a state left over from an
 * older configuration is ignored). *now_ms is read from the clock only
 * when needed (0 = not read yet) and cached for the caller. */
static inline bool sg_endpoint_usable(struct sg_endpoint *e, bool hc, bool od, uint64_t *now_ms)
{
    if (hc && atomic_load_explicit(&e->hc_down, memory_order_relaxed))
        return false;
    if (!od)
        return true;
    uint64_t until = atomic_load_explicit(&e->ejected_until_ms, memory_order_relaxed);
    if (until == 0)
        return true;
    if (*now_ms == 0)
        *now_ms = sg_mono_ms();
    return *now_ms >= until;
}

/* ---- active health checks: the per-endpoint state machine ----------------- */

struct sg_hc_state {
    bool known; /* a result arrived since the check started */
    bool healthy;
    uint32_t ok_run, fail_run; /* consecutive successes / failures */
};

/* Starts healthy and unknown: the first result decides at once (an endpoint
 * that is down at start leaves after one failed check, one that is up stays);
 * after that it takes `unhealthy_threshold` consecutive failures to leave
 * and `healthy_threshold` consecutive successes to return. Returns true when
 * `healthy` changed. */
void sg_hc_init(struct sg_hc_state *s);
bool sg_hc_record(struct sg_hc_state *s, bool ok, uint32_t healthy_threshold, uint32_t unhealthy_threshold);

/* ---- passive outlier detection ----------------------------------------------- */

enum sg_outcome {
    SG_OUTCOME_NONE = 0, /* says nothing about the endpoint (local limit, client gone) */
    SG_OUTCOME_OK, /* a response below 500 */
    SG_OUTCOME_FAIL, /* a 5xx response, a reset, an invalid response, a timeout */
    SG_OUTCOME_CONNECT_FAIL, /* could not connect (refused, timed out, TLS, DNS) */
};

/* What an upstream error sentinel (pool.h) says about the endpoint. */
enum sg_outcome sg_outcome_of_error(const char *err);

enum sg_outlier_verdict {
    SG_OUTLIER_KEEP = 0,
    SG_OUTLIER_EJECT_ANY, /* `threshold` connection-level failures in a row: eject even the last one */
    SG_OUTLIER_EJECT_IF_OTHERS, /* `threshold` failures, some of them answers: eject unless it is the last */
};

/* Counts one outcome (relaxed atomics; any thread). */
enum sg_outlier_verdict sg_outlier_record(struct sg_endpoint *e, uint32_t threshold, enum sg_outcome o);
/* Takes the endpoint out until now + ejection_ms unless it is out already;
 * true if this call ejected it (so the ejection is counted once). */
bool sg_outlier_eject(struct sg_endpoint *e, uint64_t ejection_ms, uint64_t now_ms);

/* Worker side: counts the outcome of a primary exchange on pool p of
 * upstream u (nothing when u has no outlier_detection) and ejects. */
void sg_outlier_report(struct sg_worker *w, struct sg_upstream_rt *u, struct sg_pool *p, enum sg_outcome o);

/* ---- process-wide --------------------------------------------------------------- */

/* After a configuration is installed (main thread): forgets state the
 * configuration no longer asks for (hc_down without health_check, an
 * ejection without outlier_detection). */
void sg_endpoints_reconcile(const struct sg_config *cfg);
/* Sets strangler_upstream_endpoint_healthy for every endpoint of cfg
 * (called before /metrics renders). */
void sg_endpoints_refresh_gauges(const struct sg_config *cfg);
/* Declares the metric families of this module and prober.c. */
void sg_health_register_metrics(void);

#endif
