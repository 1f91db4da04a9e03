#include "strangler/pool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/clock.h"
#include "strangler/io.h"
#include "strangler/h2_client.h"
#include "strangler/health.h"
#include "strangler/log.h"
#include "strangler/tls.h"
#include "strangler/worker.h"

const char sg_err_connect[] = "upstream connect failed";
const char sg_err_connect_timeout[] = "upstream connect timed out";
const char sg_err_resolve[] = "upstream name did not resolve";
const char sg_err_overloaded[] = "upstream max_connections reached";
const char sg_err_reset[] = "upstream reset the connection";
const char sg_err_invalid_response[] = "upstream sent an invalid response";
const char sg_err_timeout[] = "upstream timed out";
const char sg_err_tls[] = "upstream TLS handshake failed";
const char sg_err_no_endpoint[] = "upstream unavailable: no healthy endpoint";
const char sg_err_no_fd[] = "proxy out of file descriptors";

/* ---- process-wide per-upstream counters ------------------------------ */

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sg_upstream_shared *shared_head;

/* Looked up when a worker attaches a snapshot, never per request. */
static struct sg_upstream_shared *shared_get(const char *name)
{
    pthread_mutex_lock(&shared_lock);
    struct sg_upstream_shared *s = shared_head;
    while (s && strcmp(s->name, name) != 0)
        s = s->next;
    if (!s && (s = calloc(1, sizeof *s)) != NULL) {
        s->name = strdup(name);
        s->next = shared_head;
        shared_head = s;
    }
    pthread_mutex_unlock(&shared_lock);
    return s;
}

/* ---- pools ------------------------------------------------------------ */

static void pool_set_metrics(struct sg_pool *p)
{
    char up[256], labels[512];
    sg_metrics_label_escape(p->upstream_name, up, sizeof up);
    snprintf(labels, sizeof labels, "upstream=\"%s\",state=\"active\"", up);
    p->g_active = sg_metrics_series("strangler_upstream_connections", labels);
    snprintf(labels, sizeof labels, "upstream=\"%s\",state=\"idle\"", up);
    p->g_idle = sg_metrics_series("strangler_upstream_connections", labels);
    snprintf(labels, sizeof labels, "upstream=\"%s\"", up);
    p->c_connect_fail = sg_metrics_series("strangler_upstream_connect_failures_total", labels);
}

static struct sg_pool *pool_new(struct sg_worker *w, const struct sg_upstream *u, const struct sg_hostport *ep,
                                const char *key, bool mirror)
{
    struct sg_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->worker = w;
    p->key = strdup(key);
    p->upstream_name = strdup(u->name);
    p->host = strdup(ep->host);
    p->port = ep->port;
    TAILQ_INIT(&p->idle);
    TAILQ_INIT(&p->resolving_list);
    TAILQ_INIT(&p->h2_sessions);
    char shared_name[300];
    snprintf(shared_name, sizeof shared_name, "%s%s", mirror ? "mirror|" : "", u->name);
    p->shared = shared_get(shared_name);
    p->ep = sg_endpoint_get(u->name, ep->host, ep->port);
    p->mirror = mirror;
    if (!p->key || !p->upstream_name || !p->host || !p->shared || !p->ep) {
        free(p->key);
        free(p->upstream_name);
        free(p->host);
        free(p);
        return NULL;
    }
    int len = sizeof p->addr;
    char text[300];
    snprintf(text, sizeof text, strchr(ep->host, ':') ? "[%s]:%u" : "%s:%u", ep->host, ep->port);
    if (evutil_parse_sockaddr_port(text, (struct sockaddr *)&p->addr, &len) == 0) {
        p->literal = p->resolved = true;
        p->addrlen = (socklen_t)len;
    }
    if (!mirror)
        pool_set_metrics(p);
    else
        p->g_active = p->g_idle = p->c_connect_fail = -1; /* shadows have their own metrics */
    p->next = w->pools;
    w->pools = p;
    return p;
}

/* Settings that may change on reload without replacing the pool. The TLS
 * context is the snapshot's (certificate files re-read on reload); pooled
 * connections keep the one they were made with. */
static void pool_configure(struct sg_pool *p, const struct sg_upstream *u, SSL_CTX *ssl_ctx)
{
    if (ssl_ctx)
        SSL_CTX_up_ref(ssl_ctx);
    SSL_CTX_free(p->ssl_ctx);
    p->ssl_ctx = ssl_ctx;
    p->tls_verify = u->tls && u->tls->verify;
    p->h2 = u->protocol != SG_PROTO_HTTP1;
    free(p->tls_name);
    p->tls_name = strdup(u->tls && u->tls->sni ? u->tls->sni : p->host);
    p->dns_refresh_ms = u->dns_refresh_ms;
    p->connect_timeout_ms = u->connect_timeout_ms;
    p->idle_timeout_ms = u->idle_timeout_ms;
    p->max_connections = u->max_connections;
}

static struct sg_pool *pool_find(struct sg_worker *w, const char *key)
{
    for (struct sg_pool *p = w->pools; p; p = p->next)
        if (strcmp(p->key, key) == 0)
            return p;
    return NULL;
}

/* The pools of one upstream, for primary traffic or for shadows. Shadows
 * never share a pool (or its max_connections count) with the primary. */
static int attach_pools(struct sg_worker *w, const struct sg_upstream *u, SSL_CTX *ssl_ctx, bool mirror,
                        struct sg_pool ***out)
{
    struct sg_pool **pools = calloc(u->n_endpoints, sizeof *pools);
    if (!pools)
        return -1;
    for (size_t e = 0; e < u->n_endpoints; e++) {
        char key[600];
        /* TLS or not is part of the key: a reload that adds or removes a
         * tls block must not hand out the other kind of connection. */
        snprintf(key, sizeof key, "%s%s|%s|%u%s", mirror ? "mirror|" : "", u->name, u->endpoints[e].host,
                 u->endpoints[e].port, ssl_ctx ? "|tls" : "");
        struct sg_pool *p = pool_find(w, key);
        if (!p && !(p = pool_new(w, u, &u->endpoints[e], key, mirror))) {
            free(pools);
            return -1;
        }
        pool_configure(p, u, ssl_ctx);
        pools[e] = p;
    }
    *out = pools;
    return 0;
}

int sg_pools_attach(struct sg_worker *w, const struct sg_config *cfg, struct sg_upstream_rt **out)
{
    struct sg_upstream_rt *ups = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof *ups);
    if (!ups)
        return -1;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct sg_upstream *u = &cfg->upstreams[i];
        ups[i].cfg = u;
        ups[i].n_pools = u->n_endpoints;
        ups[i].rr = (unsigned)(w->id * 7u);
        SSL_CTX *ctx = sg_tls_upstream_ctx(cfg, i);
        if (attach_pools(w, u, ctx, false, &ups[i].pools) < 0 || attach_pools(w, u, ctx, true, &ups[i].mirror_pools) < 0) {
            sg_pools_detach(ups, cfg->n_upstreams);
            return -1;
        }
        ups[i].shared = ups[i].pools[0]->shared;
    }
    *out = ups;
    return 0;
}

void sg_pools_detach(struct sg_upstream_rt *ups, size_t n)
{
    if (!ups)
        return;
    for (size_t i = 0; i < n; i++) {
        free(ups[i].pools);
        free(ups[i].mirror_pools);
    }
    free(ups);
}

static void uconn_free(struct sg_uconn *c);

void sg_pools_free_all(struct sg_worker *w)
{
    struct sg_pool *p = w->pools;
    while (p) {
        struct sg_pool *next = p->next;
        sg_h2c_close_all(p);
        struct sg_uconn *c;
        while ((c = TAILQ_FIRST(&p->idle)) != NULL) {
            TAILQ_REMOVE(&p->idle, c, link);
            p->n_idle--;
            uconn_free(c);
        }
        free(p->key);
        free(p->upstream_name);
        free(p->host);
        free(p->tls_name);
        SSL_CTX_free(p->ssl_ctx);
        free(p);
        p = next;
    }
    w->pools = NULL;
}

int sg_upstream_conns(const struct sg_upstream_rt *u)
{
    return atomic_load_explicit(&u->shared->conns, memory_order_relaxed);
}

static bool was_tried(const struct sg_pool *p, const struct sg_pool *const *tried, size_t n_tried)
{
    for (size_t i = 0; i < n_tried; i++)
        if (tried[i] == p)
            return true;
    return false;
}

/* The first pool in rotation from `start` on, preferring one not tried
 * before; NULL when none is in rotation. */
static struct sg_pool *scan_usable(struct sg_pool **pools, size_t n, size_t start,
                                   const struct sg_pool *const *tried, size_t n_tried, bool hc, bool od,
                                   uint64_t *now)
{
    struct sg_pool *fallback = NULL;
    for (size_t i = 0; i < n; i++) {
        struct sg_pool *p = pools[(start + i) % n];
        if ((hc || od) && !sg_endpoint_usable(p->ep, hc, od, now))
            continue;
        if (!was_tried(p, tried, n_tried))
            return p;
        if (!fallback)
            fallback = p;
    }
    return fallback;
}

struct sg_pool *sg_upstream_pick(struct sg_upstream_rt *u, struct sg_worker *w, const struct sg_pool *const *tried,
                                 size_t n_tried, bool mirror)
{
    struct sg_pool **pools = mirror ? u->mirror_pools : u->pools;
    size_t n = u->n_pools;
    bool hc = u->cfg->health_check != NULL, od = u->cfg->outlier_detection != NULL;
    uint64_t now = 0;
    if (n == 1)
        return !(hc || od) || sg_endpoint_usable(pools[0]->ep, hc, od, &now) ? pools[0] : NULL;
    size_t pick;
    switch (u->cfg->balance) {
    case SG_BALANCE_RANDOM:
        pick = (size_t)(sg_worker_random(w) % n);
        break;
    case SG_BALANCE_LEAST_REQUEST: {
        /* Power of two choices: cheap and avoids herding on one endpoint. */
        size_t a = (size_t)(sg_worker_random(w) % n), b = (size_t)(sg_worker_random(w) % n);
        if ((hc || od) && !sg_endpoint_usable(pools[a]->ep, hc, od, &now))
            a = b;
        if ((hc || od) && !sg_endpoint_usable(pools[b]->ep, hc, od, &now))
            b = a;
        pick = pools[b]->in_flight < pools[a]->in_flight ? b : a;
        break;
    }
    default:
        pick = u->rr++ % n;
        break;
    }
    if (!(hc || od) && !n_tried)
        return pools[pick];
    /* Out-of-rotation endpoints and ones this request tried are skipped:
     * the next one in rotation takes the pick (as nginx does with a failed
     * server); every usable one tried already: the pick's successor. */
    return scan_usable(pools, n, pick, tried, n_tried, hc, od, &now);
}

/* ---- connections ------------------------------------------------------ */

static void pool_gauges(struct sg_pool *p, int d_active, int d_idle)
{
    if (d_active)
        sg_metrics_gauge_add(p->worker->metrics, p->g_active, d_active);
    if (d_idle)
        sg_metrics_gauge_add(p->worker->metrics, p->g_idle, d_idle);
}

static void uconn_free(struct sg_uconn *c)
{
    struct sg_pool *p = c->pool;
    if (c->state == SG_UC_IDLE)
        pool_gauges(p, 0, -1);
    else {
        pool_gauges(p, -1, 0);
        p->n_active--;
        atomic_fetch_sub_explicit(&p->shared->busy, 1, memory_order_relaxed);
    }
    atomic_fetch_sub_explicit(&p->shared->conns, 1, memory_order_relaxed);
    event_del(&c->timer);
    if (c->bev)
        bufferevent_free(c->bev);
    free(c);
}

/* One explicit timer per connection: the connect timeout, then the idle
 * timeout. bufferevent timeouts are not used, because libevent 2.1 socket
 * bufferevents only adjust timeouts of events that are pending, so a
 * connect timeout could survive into the exchange as a write timeout. */
static void uconn_timer(struct sg_uconn *c, uint64_t ms)
{
    /* Lazily: a connection taken from the pool and given back for every
     * request clears and sets its idle deadline each time. */
    sg_deadline_set(&c->deadline, &c->timer, ms);
}

/* At most one line per second per pool: a dead upstream under load must
 * not write a line per request. */
static void pool_warn(struct sg_pool *p, const char *what, const char *detail)
{
    uint64_t now = sg_mono_ms();
    if (p->last_warn_ms && now - p->last_warn_ms < 1000) {
        p->suppressed++;
        return;
    }
    char more[64] = "";
    if (p->suppressed)
        snprintf(more, sizeof more, "; %u similar messages suppressed", p->suppressed);
    sg_warn("upstream %s%s: %s (%s:%u)%s%s%s", p->upstream_name, p->mirror ? " (shadow)" : "", what, p->host,
            p->port, detail ? ": " : "", detail ? detail : "", more);
    p->last_warn_ms = now;
    p->suppressed = 0;
}

static void uconn_fail_waiter(struct sg_uconn *c, const char *err)
{
    struct sg_acquire *a = c->waiter;
    c->waiter = NULL;
    sg_metrics_add(c->pool->worker->metrics, c->pool->c_connect_fail, 1);
    pool_warn(c->pool, err, NULL);
    uconn_free(c);
    if (a) {
        a->conn = NULL;
        a->cb(a->arg, NULL, err);
    }
}

static void idle_event_cb(struct bufferevent *bev, short what, void *arg);
static void idle_read_cb(struct bufferevent *bev, void *arg);

static void uconn_to_idle(struct sg_uconn *c)
{
    struct sg_pool *p = c->pool;
    atomic_fetch_sub_explicit(&p->shared->busy, 1, memory_order_relaxed);
    c->state = SG_UC_IDLE;
    p->n_active--;
    p->n_idle++;
    pool_gauges(p, -1, 1);
    TAILQ_INSERT_HEAD(&p->idle, c, link);
    /* Watch the idle socket: the peer closing it, or the idle timeout. */
    bufferevent_setcb(c->bev, idle_read_cb, NULL, idle_event_cb, c);
    uconn_timer(c, p->idle_timeout_ms);
    sg_io_enable(c->bev, EV_READ);
}

static void idle_drop(struct sg_uconn *c)
{
    struct sg_pool *p = c->pool;
    TAILQ_REMOVE(&p->idle, c, link);
    p->n_idle--;
    uconn_free(c);
}

/* Bytes on an idle connection are a protocol error (nothing was asked). */
static void idle_read_cb(struct bufferevent *bev, void *arg)
{
    idle_drop(arg);
}

static void idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
    idle_drop(arg);
}

static void uconn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_uconn *c = arg;
    if (!sg_deadline_due(&c->deadline, &c->timer))
        return; /* cleared, or moved later, since it was set */
    if (c->state == SG_UC_IDLE)
        idle_drop(c);
    else if (c->state == SG_UC_CONNECTING)
        uconn_fail_waiter(c, sg_err_connect_timeout);
}

static void connect_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct sg_uconn *c = arg;
    if (!(what & BEV_EVENT_CONNECTED)) {
        unsigned long e = c->pool->ssl_ctx ? bufferevent_get_openssl_error(bev) : 0;
        if (e) { /* certificate or handshake trouble: say which */
            char reason[256];
            ERR_error_string_n(e, reason, sizeof reason);
            pool_warn(c->pool, "TLS handshake failed", reason);
        }
        uconn_fail_waiter(c, e ? sg_err_tls : sg_err_connect);
        return;
    }
    int one = 1;
    setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!c->pool->ssl_ctx && !sg_io_autoflush(bev)) {
        uconn_fail_waiter(c, sg_err_connect);
        return;
    }
    uconn_timer(c, 0);
    struct sg_acquire *a = c->waiter;
    c->waiter = NULL;
    if (!a) { /* its request went away: keep the connection warm */
        uconn_to_idle(c);
        return;
    }
    a->conn = NULL;
    c->state = SG_UC_ACTIVE;
    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    a->cb(a->arg, c, NULL);
}

/* Plaintext, or TLS with SNI and peer verification: the handshake runs
 * inside the bufferevent, and CONNECTED means it completed. */
static struct bufferevent *new_bev(struct sg_pool *p)
{
    int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    if (!p->ssl_ctx)
        return bufferevent_socket_new(p->worker->base, -1, opts);
    return sg_tls_client_bev(p->worker->base, p->ssl_ctx, p->tls_name, p->tls_verify, opts);
}

static void uconn_connect(struct sg_uconn *c)
{
    struct sg_pool *p = c->pool;
    c->state = SG_UC_CONNECTING;
    c->bev = new_bev(p);
    if (!c->bev) {
        uconn_fail_waiter(c, sg_err_connect);
        return;
    }
    bufferevent_setcb(c->bev, NULL, NULL, connect_event_cb, c);
    uconn_timer(c, p->connect_timeout_ms ? p->connect_timeout_ms : 1000);
    /* With BEV_OPT_DEFER_CALLBACKS an immediate failure is reported through
     * the event callback, after this returns. */
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&p->addr, (int)p->addrlen) < 0 &&
        bufferevent_getfd(c->bev) < 0)
        uconn_fail_waiter(c, errno == EMFILE || errno == ENFILE ? sg_err_no_fd : sg_err_connect);
}

static void resolve_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct sg_pool *p = arg;
    p->resolving = false;
    if (result == 0 && res) {
        memcpy(&p->addr, res->ai_addr, res->ai_addrlen);
        p->addrlen = (socklen_t)res->ai_addrlen;
        p->addr.ss_family = (sa_family_t)res->ai_family;
        ((struct sockaddr_in *)&p->addr)->sin_port = htons(p->port); /* same offset for in6 */
        p->resolved = true;
        p->resolved_at_ms = sg_mono_ms();
    } else if (result != 0) {
        pool_warn(p, "cannot resolve", evutil_gai_strerror(result));
    }
    if (res)
        evutil_freeaddrinfo(res);
    struct sg_uconn *c;
    while ((c = TAILQ_FIRST(&p->resolving_list)) != NULL) {
        TAILQ_REMOVE(&p->resolving_list, c, link);
        if (p->resolved)
            uconn_connect(c);
        else
            uconn_fail_waiter(c, sg_err_resolve);
    }
}

void sg_upstream_hints(struct evutil_addrinfo *hints)
{
    memset(hints, 0, sizeof *hints);
    hints->ai_family = AF_UNSPEC;
    hints->ai_socktype = SOCK_STREAM;
    hints->ai_protocol = IPPROTO_TCP;
    hints->ai_flags = EVUTIL_AI_ADDRCONFIG;
}

static void pool_resolve(struct sg_pool *p)
{
    if (p->resolving || p->literal)
        return;
    struct evutil_addrinfo hints;
    sg_upstream_hints(&hints);
    p->resolving = true;
    /* evdns may answer synchronously (e.g. from /etc/hosts); resolve_cb
     * copes with being called from here. */
    evdns_getaddrinfo(p->worker->dns, p->host, NULL, &hints, resolve_cb, p);
}

/* max_connections bounds the connections in use (connecting or carrying a
 * request) across all workers: that is the load the upstream sees. Idle
 * connections do not block another worker; beyond the limit they are
 * closed instead of kept (sg_uconn_release). */
static bool reserve_busy(struct sg_pool *p)
{
    int limit = (int)p->max_connections;
    if (atomic_fetch_add_explicit(&p->shared->busy, 1, memory_order_relaxed) >= limit && limit > 0) {
        atomic_fetch_sub_explicit(&p->shared->busy, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

enum sg_acquire_result sg_pool_acquire(struct sg_pool *p, struct sg_acquire *a, bool fresh, struct sg_uconn **out,
                                       const char **err)
{
    if (!reserve_busy(p)) {
        *err = sg_err_overloaded;
        return SG_ACQ_FAILED;
    }
    struct sg_uconn *c;
    if (!fresh && (c = TAILQ_FIRST(&p->idle)) != NULL) {
        TAILQ_REMOVE(&p->idle, c, link);
        p->n_idle--;
        p->n_active++;
        pool_gauges(p, 1, -1);
        c->state = SG_UC_ACTIVE;
        bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
        uconn_timer(c, 0);
        *out = c;
        return SG_ACQ_READY;
    }
    atomic_fetch_add_explicit(&p->shared->conns, 1, memory_order_relaxed);
    c = calloc(1, sizeof *c);
    if (!c) {
        atomic_fetch_sub_explicit(&p->shared->conns, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&p->shared->busy, 1, memory_order_relaxed);
        *err = sg_err_connect;
        return SG_ACQ_FAILED;
    }
    c->pool = p;
    c->waiter = a;
    a->conn = c;
    event_assign(&c->timer, p->worker->base, -1, 0, uconn_timer_cb, c);
    p->n_active++;
    pool_gauges(p, 1, 0);
    bool stale = p->resolved && !p->literal && sg_mono_ms() - p->resolved_at_ms > p->dns_refresh_ms;
    if (p->resolved) {
        if (stale)
            pool_resolve(p); /* refresh in the background, connect with the old address now */
        uconn_connect(c);
    } else {
        c->state = SG_UC_RESOLVING;
        TAILQ_INSERT_TAIL(&p->resolving_list, c, link);
        pool_resolve(p);
    }
    return SG_ACQ_PENDING;
}

void sg_acquire_cancel(struct sg_acquire *a)
{
    if (a->session)
        sg_h2c_cancel(a);
    if (a->conn) {
        a->conn->waiter = NULL;
        a->conn = NULL;
    }
}

void sg_uconn_release(struct sg_uconn *c, bool reuse)
{
    struct sg_pool *p = c->pool;
    int total = atomic_load_explicit(&p->shared->conns, memory_order_relaxed);
    bool room = p->max_connections == 0 || total <= (int)p->max_connections;
    if (reuse && room && p->idle_timeout_ms > 0 && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
        uconn_to_idle(c);
        return;
    }
    uconn_free(c);
}
