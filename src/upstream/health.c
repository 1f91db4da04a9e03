/* Endpoint health shared process-wide (see health.h): the registry, the
 * active-check state machine and passive outlier detection. */
#include "strangler/health.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/log.h"
#include "strangler/pool.h"
#include "strangler/worker.h"

/* ---- registry ------------------------------------------------------------- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sg_endpoint *reg_head;

void sg_health_register_metrics(void)
{
    sg_metrics_family("strangler_upstream_endpoint_healthy", SG_METRIC_GAUGE,
                      "1 while the endpoint is in rotation, 0 while a health check or outlier detection keeps it out.");
    sg_metrics_family("strangler_upstream_health_checks_total", SG_METRIC_COUNTER,
                      "Active health check results per endpoint.");
    sg_metrics_family("strangler_upstream_ejections_total", SG_METRIC_COUNTER,
                      "Endpoints taken out of rotation by outlier detection.");
}

static struct sg_endpoint *endpoint_find(const char *upstream, const char *host, uint16_t port)
{
    for (struct sg_endpoint *e = reg_head; e; e = e->next)
        if (e->port == port && strcmp(e->host, host) == 0 && strcmp(e->upstream, upstream) == 0)
            return e;
    return NULL;
}

static struct sg_endpoint *endpoint_new(const char *upstream, const char *host, uint16_t port)
{
    struct sg_endpoint *e = calloc(1, sizeof *e);
    char up[256], ep[300], hp[300], labels[600];
    snprintf(hp, sizeof hp, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    snprintf(labels, sizeof labels, "upstream=\"%s\",endpoint=\"%s\"", sg_metrics_label_escape(upstream, up, sizeof up),
             sg_metrics_label_escape(hp, ep, sizeof ep));
    if (!e || !(e->upstream = strdup(upstream)) || !(e->host = strdup(host)) || !(e->label = strdup(labels))) {
        if (e) {
            free(e->upstream);
            free(e->host);
        }
        free(e);
        return NULL;
    }
    e->port = port;
    sg_health_register_metrics();
    e->g_healthy = sg_metrics_series("strangler_upstream_endpoint_healthy", labels);
    e->c_ejections = sg_metrics_series("strangler_upstream_ejections_total", labels);
    sg_metrics_gauge_set(e->g_healthy, 1);
    return e;
}

struct sg_endpoint *sg_endpoint_get(const char *upstream, const char *host, uint16_t port)
{
    pthread_mutex_lock(&reg_lock);
    struct sg_endpoint *e = endpoint_find(upstream, host, port);
    if (!e && (e = endpoint_new(upstream, host, port)) != NULL) {
        e->next = reg_head;
        reg_head = e;
    }
    pthread_mutex_unlock(&reg_lock);
    return e;
}

void sg_endpoints_reconcile(const struct sg_config *cfg)
{
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct sg_upstream *u = &cfg->upstreams[i];
        for (size_t k = 0; k < u->n_endpoints; k++) {
            struct sg_endpoint *e = sg_endpoint_get(u->name, u->endpoints[k].host, u->endpoints[k].port);
            if (!e)
                continue;
            if (!u->health_check)
                atomic_store_explicit(&e->hc_down, false, memory_order_relaxed);
            if (!u->outlier_detection) {
                atomic_store_explicit(&e->ejected_until_ms, 0, memory_order_relaxed);
                atomic_store_explicit(&e->fails, 0, memory_order_relaxed);
                atomic_store_explicit(&e->connect_fails, 0, memory_order_relaxed);
            }
        }
    }
}

void sg_endpoints_refresh_gauges(const struct sg_config *cfg)
{
    uint64_t now = 0;
    for (size_t i = 0; cfg && i < cfg->n_upstreams; i++) {
        const struct sg_upstream *u = &cfg->upstreams[i];
        for (size_t k = 0; k < u->n_endpoints; k++) {
            struct sg_endpoint *e = sg_endpoint_get(u->name, u->endpoints[k].host, u->endpoints[k].port);
            if (e)
                sg_metrics_gauge_set(e->g_healthy,
                                     sg_endpoint_usable(e, u->health_check, u->outlier_detection, &now) ? 1 : 0);
        }
    }
}

/* ---- active checks ------------------------------------------------------------ */

void sg_hc_init(struct sg_hc_state *s)
{
    *s = (struct sg_hc_state){ .known = false, .healthy = true };
}

bool sg_hc_record(struct sg_hc_state *s, bool ok, uint32_t healthy_threshold, uint32_t unhealthy_threshold)
{
    bool was = s->healthy;
    if (ok) {
        s->fail_run = 0;
        if (s->ok_run < UINT32_MAX)
            s->ok_run++;
        if (!s->known || s->ok_run >= healthy_threshold)
            s->healthy = true;
    } else {
        s->ok_run = 0;
        if (s->fail_run < UINT32_MAX)
            s->fail_run++;
        if (!s->known || s->fail_run >= unhealthy_threshold)
            s->healthy = false;
    }
    s->known = true;
    return s->healthy != was;
}

/* ---- passive outlier detection ----------------------------------------------- */

enum sg_outcome sg_outcome_of_error(const char *err)
{
    if (err == sg_err_connect || err == sg_err_connect_timeout || err == sg_err_tls || err == sg_err_resolve)
        return SG_OUTCOME_CONNECT_FAIL;
    if (err == sg_err_reset || err == sg_err_invalid_response || err == sg_err_timeout)
        return SG_OUTCOME_FAIL;
    return SG_OUTCOME_NONE; /* max_connections, no endpoint, out of file descriptors: ours, not its */
}

enum sg_outlier_verdict sg_outlier_record(struct sg_endpoint *e, uint32_t threshold, enum sg_outcome o)
{
    if (o == SG_OUTCOME_NONE)
        return SG_OUTLIER_KEEP;
    if (o == SG_OUTCOME_OK) {
        /* Read first: a healthy endpoint's counters stay 0, and a plain load
         * of a line nobody writes costs nothing across cores. */
        if (atomic_load_explicit(&e->fails, memory_order_relaxed))
            atomic_store_explicit(&e->fails, 0, memory_order_relaxed);
        if (atomic_load_explicit(&e->connect_fails, memory_order_relaxed))
            atomic_store_explicit(&e->connect_fails, 0, memory_order_relaxed);
        return SG_OUTLIER_KEEP;
    }
    unsigned n = atomic_fetch_add_explicit(&e->fails, 1, memory_order_relaxed) + 1;
    unsigned c = 0;
    if (o == SG_OUTCOME_CONNECT_FAIL)
        c = atomic_fetch_add_explicit(&e->connect_fails, 1, memory_order_relaxed) + 1;
    else if (atomic_load_explicit(&e->connect_fails, memory_order_relaxed))
        atomic_store_explicit(&e->connect_fails, 0, memory_order_relaxed);
    if (n < threshold)
        return SG_OUTLIER_KEEP;
    return c >= threshold ? SG_OUTLIER_EJECT_ANY : SG_OUTLIER_EJECT_IF_OTHERS;
}

bool sg_outlier_eject(struct sg_endpoint *e, uint64_t ejection_ms, uint64_t now_ms)
{
    uint64_t until = atomic_load_explicit(&e->ejected_until_ms, memory_order_relaxed);
    bool done = false;
    if (until <= now_ms)
        done = atomic_compare_exchange_strong_explicit(&e->ejected_until_ms, &until, now_ms + ejection_ms,
                                                       memory_order_relaxed, memory_order_relaxed);
    /* Either way the streak that led here is over: the endpoint comes back
     * with a clean slate. */
    atomic_store_explicit(&e->fails, 0, memory_order_relaxed);
    atomic_store_explicit(&e->connect_fails, 0, memory_order_relaxed);
    return done;
}

/* Is any endpoint of u other than p in rotation? */
static bool others_usable(struct sg_upstream_rt *u, const struct sg_pool *p, uint64_t *now)
{
    for (size_t i = 0; i < u->n_pools; i++)
        if (u->pools[i]->ep != p->ep &&
            sg_endpoint_usable(u->pools[i]->ep, u->cfg->health_check, true, now))
            return true;
    return false;
}

void sg_outlier_report(struct sg_worker *w, struct sg_upstream_rt *u, struct sg_pool *p, enum sg_outcome o)
{
    const struct sg_outlier_detection *od = u ? u->cfg->outlier_detection : NULL;
    if (!od || !p || !p->ep || o == SG_OUTCOME_NONE)
        return;
    enum sg_outlier_verdict v = sg_outlier_record(p->ep, od->consecutive_failures, o);
    if (v == SG_OUTLIER_KEEP)
        return;
    uint64_t now = sg_mono_ms();
    /* The last endpoint that still answers is not ejected for its answers
     * (a 500 from one buggy path must not take the whole upstream down);
     * one nobody can connect to is, so requests get 503 at once instead of
     * waiting on connects. */
    if (v == SG_OUTLIER_EJECT_IF_OTHERS && !others_usable(u, p, &now))
        return;
    if (sg_outlier_eject(p->ep, od->ejection_time_ms, now)) {
        sg_metrics_add(w->metrics, p->ep->c_ejections, 1);
        sg_warn("upstream %s: endpoint %s:%u ejected for %llums after %u consecutive %sfailures", p->upstream_name,
                p->host, p->port, (unsigned long long)od->ejection_time_ms, od->consecutive_failures,
                v == SG_OUTLIER_EJECT_ANY ? "connection " : "");
    }
}
