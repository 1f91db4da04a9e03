/* Active health checks on the main thread (see prober.h).
 *
 * One struct probe per (upstream, endpoint) with a health_check. Its one
 * timer is the interval while idle and the probe's timeout while a probe
 * runs. A probe never frees anything from inside nghttp2's callbacks: they
 * only record the status; the probe ends after nghttp2_session_mem_recv
 * has returned. */
#include "strangler/prober.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/clock.h"
#include "strangler/health.h"
#include "strangler/log.h"
#include "strangler/metrics.h"
#include "strangler/pool.h"
#include "strangler/tls.h"

#define MAX_STATUS_LINE 8192u
#define FIRST_PROBE_MS 10u

struct probe;

/* Outlives its probe if the probe goes while a lookup is pending: evdns
 * calls back later (with a cancel result), and only the ticket is touched. */
struct ticket {
    struct probe *probe;
};

struct probe {
    struct sg_prober *pr;
    char *key; /* "upstream|host|port" */
    struct sg_endpoint *ep;
    const struct sg_upstream *u; /* in pr->cfg */
    size_t up_index;
    char *host;
    uint16_t port;
    bool literal;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool resolved;
    uint64_t resolved_at_ms;
    struct ticket *ticket; /* pending lookup */
    struct evdns_getaddrinfo_request *dns_req;
    struct sg_hc_state st;
    struct event *timer;
    bool running, seen;
    struct bufferevent *bev;
    nghttp2_session *ng;
    int status; /* final status, 0 until known */
    sg_series_t c_ok, c_fail;
    struct probe *next;
};

struct sg_prober {
    struct event_base *base;
    struct evdns_base *dns; /* made on first need */
    struct sg_metrics_shard *shard;
    struct sg_config *cfg;
    struct probe *probes;
};

static void probe_start(struct probe *p);
static void probe_end(struct probe *p, bool ok, const char *why);

/* ---- connection teardown ------------------------------------------------------ */

static void probe_close(struct probe *p)
{
    if (p->ng) {
        nghttp2_session_del(p->ng);
        p->ng = NULL;
    }
    if (p->bev) {
        bufferevent_free(p->bev);
        p->bev = NULL;
    }
}

static void arm(struct probe *p, uint64_t ms)
{
    struct timeval tv = sg_tv_ms(ms);
    event_add(p->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    if (p->running)
        probe_end(p, false, "timed out");
    else
        probe_start(p);
}

/* ---- the result ------------------------------------------------------------------ */

static void probe_end(struct probe *p, bool ok, const char *why)
{
    if (!p->running)
        return;
    p->running = false;
    probe_close(p);
    if (p->ticket) { /* a lookup still pending (timeout): let it go */
        p->ticket->probe = NULL;
        p->ticket = NULL;
        if (p->dns_req)
            evdns_getaddrinfo_cancel(p->dns_req);
        p->dns_req = NULL;
    }
    const struct sg_health_check *hc = p->u->health_check;
    sg_metrics_add(p->pr->shard, ok ? p->c_ok : p->c_fail, 1);
    if (sg_hc_record(&p->st, ok, hc->healthy_threshold, hc->unhealthy_threshold)) {
        atomic_store_explicit(&p->ep->hc_down, !p->st.healthy, memory_order_relaxed);
        sg_metrics_gauge_set(p->ep->g_healthy, p->st.healthy ? 1 : 0);
        if (p->st.healthy)
            sg_info("upstream %s: endpoint %s:%u is healthy again (%u passing health checks)", p->u->name, p->host,
                    p->port, p->st.ok_run);
        else
            sg_warn("upstream %s: endpoint %s:%u is unhealthy, out of rotation (%u failed health checks; last: %s)",
                    p->u->name, p->host, p->port, p->st.fail_run, why);
    }
    arm(p, hc->interval_ms);
}

static void end_with_status(struct probe *p)
{
    char why[48];
    snprintf(why, sizeof why, "status %d", p->status);
    probe_end(p, p->status >= 200 && p->status < 300, why);
}

/* ---- HTTP/2 ------------------------------------------------------------------------ */

static int h2_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                        const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    struct probe *p = ud;
    if (f->hd.type != NGHTTP2_HEADERS || nlen != 7 || memcmp(name, ":status", 7) != 0 || vlen != 3)
        return 0;
    int s = 0;
    for (size_t i = 0; i < 3; i++) {
        if (value[i] < '0' || value[i] > '9')
            return 0;
        s = s * 10 + (value[i] - '0');
    }
    if (s >= 200) /* 1xx are interim */
        p->status = s;
    return 0;
}

static int h2_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    struct probe *p = ud;
    if (!p->status)
        p->status = -1; /* reset before a final status */
    return 0;
}

static void h2_flush(struct probe *p)
{
    struct evbuffer *out = bufferevent_get_output(p->bev);
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(p->ng, &data);
        if (n <= 0)
            break;
        evbuffer_add(out, data, (size_t)n);
    }
}

static nghttp2_nv nv(const char *name, const char *value)
{
    return (nghttp2_nv){ (uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, strlen(name), strlen(value),
                         NGHTTP2_NV_FLAG_NONE };
}

static bool h2_begin(struct probe *p, const char *authority)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return false;
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
    int rc = nghttp2_session_client_new(&p->ng, cbs, p);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0)
        return false;
    nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 } };
    nghttp2_submit_settings(p->ng, NGHTTP2_FLAG_NONE, iv, 1);
    nghttp2_nv hdrs[] = {
        nv(":method", "GET"),
        nv(":scheme", p->u->protocol == SG_PROTO_H2 ? "https" : "http"),
        nv(":authority", authority),
        nv(":path", p->u->health_check->path),
        nv("user-agent", "strangler-health-check"),
    };
    if (nghttp2_submit_request(p->ng, NULL, hdrs, sizeof hdrs / sizeof hdrs[0], NULL, NULL) < 0)
        return false;
    h2_flush(p);
    return true;
}

static void h2_read(struct probe *p, struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in);
    ssize_t n = nghttp2_session_mem_recv(p->ng, evbuffer_pullup(in, -1), len);
    if (n < 0) {
        probe_end(p, false, "HTTP/2 protocol error");
        return;
    }
    evbuffer_drain(in, (size_t)n);
    if (p->status) {
        end_with_status(p);
        return;
    }
    h2_flush(p);
}

/* ---- HTTP/1.1 ------------------------------------------------------------------------- */

/* "HTTP/1.x NNN ..." once the status line is complete; 0 while incomplete,
 * -1 when it is not a status line. 1xx lines are skipped. */
static int h1_status(struct evbuffer *in)
{
    for (;;) {
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_CRLF_STRICT);
        if (eol.pos < 0)
            return evbuffer_get_length(in) > MAX_STATUS_LINE ? -1 : 0;
        char line[16] = "";
        evbuffer_copyout(in, line, eol.pos < 12 ? (size_t)eol.pos : 12);
        if (eol.pos < 12 || memcmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ')
            return -1;
        int s = 0;
        for (int i = 9; i < 12; i++) {
            if (line[i] < '0' || line[i] > '9')
                return -1;
            s = s * 10 + (line[i] - '0');
        }
        if (s >= 200)
            return s;
        /* An interim response: skip its head (up to the blank line). */
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0)
            return evbuffer_get_length(in) > MAX_STATUS_LINE ? -1 : 0;
        evbuffer_drain(in, (size_t)end.pos + 4);
    }
}

/* ---- connection ------------------------------------------------------------------------ */

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct probe *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (p->ng) {
        h2_read(p, in);
        return;
    }
    int s = h1_status(in);
    if (s < 0) {
        probe_end(p, false, "not an HTTP/1.1 response");
    } else if (s > 0) {
        p->status = s;
        end_with_status(p);
    }
}

static void authority(const struct probe *p, char *buf, size_t len)
{
    snprintf(buf, len, strchr(p->host, ':') ? "[%s]:%u" : "%s:%u", p->host, p->port);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct probe *p = arg;
    if (!(what & BEV_EVENT_CONNECTED)) {
        bool tls = bufferevent_get_openssl_error(bev) != 0;
        probe_end(p, false, what & BEV_EVENT_EOF ? "connection closed before a status" :
                            tls ? "TLS handshake failed" : "connection failed");
        return;
    }
    char auth[300];
    authority(p, auth, sizeof auth);
    if (p->u->protocol != SG_PROTO_HTTP1) {
        if (!h2_begin(p, auth)) {
            probe_end(p, false, "cannot start an HTTP/2 session");
            return;
        }
    } else {
        evbuffer_add_printf(bufferevent_get_output(bev),
                            "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: strangler-health-check\r\n"
                            "Accept: */*\r\nConnection: close\r\n\r\n",
                            p->u->health_check->path, auth);
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static struct bufferevent *new_bev(struct probe *p)
{
    struct event_base *base = p->pr->base;
    SSL_CTX *ctx = sg_tls_upstream_ctx(p->pr->cfg, p->up_index);
    if (!ctx)
        return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    const struct sg_upstream_tls *t = p->u->tls;
    return sg_tls_client_bev(base, ctx, t && t->sni ? t->sni : p->host, !t || t->verify, BEV_OPT_CLOSE_ON_FREE);
}

static void probe_connect(struct probe *p)
{
    p->bev = new_bev(p);
    if (!p->bev) {
        probe_end(p, false, "cannot create a connection");
        return;
    }
    bufferevent_setcb(p->bev, read_cb, NULL, event_cb, p);
    if (bufferevent_socket_connect(p->bev, (struct sockaddr *)&p->addr, (int)p->addrlen) < 0)
        probe_end(p, false, errno == EMFILE || errno == ENFILE ? "out of file descriptors" : "connection failed");
}

static void resolve_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct ticket *t = arg;
    struct probe *p = t->probe;
    free(t);
    if (!p) { /* the probe ended or went away meanwhile */
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    p->ticket = NULL;
    p->dns_req = NULL;
    if (result == 0 && res) {
        memcpy(&p->addr, res->ai_addr, res->ai_addrlen);
        p->addrlen = (socklen_t)res->ai_addrlen;
        ((struct sockaddr_in *)&p->addr)->sin_port = htons(p->port); /* same offset for in6 */
        p->resolved = true;
        p->resolved_at_ms = sg_mono_ms();
    }
    if (res)
        evutil_freeaddrinfo(res);
    if (p->resolved) /* a failed refresh keeps the last good address, as the pools do */
        probe_connect(p);
    else
        probe_end(p, false, "name did not resolve");
}

static void probe_resolve(struct probe *p)
{
    struct sg_prober *pr = p->pr;
    if (!pr->dns) {
        pr->dns = evdns_base_new(pr->base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!pr->dns)
            pr->dns = evdns_base_new(pr->base, 0);
    }
    struct ticket *t = calloc(1, sizeof *t);
    if (!pr->dns || !t) {
        free(t);
        probe_end(p, false, "cannot resolve");
        return;
    }
    struct evutil_addrinfo hints;
    sg_upstream_hints(&hints);
    t->probe = p;
    p->ticket = t;
    /* May answer before it returns (hosts file): then the ticket is gone. */
    struct evdns_getaddrinfo_request *req = evdns_getaddrinfo(pr->dns, p->host, NULL, &hints, resolve_cb, t);
    if (p->ticket)
        p->dns_req = req;
}

static void probe_start(struct probe *p)
{
    p->running = true;
    p->status = 0;
    arm(p, p->u->health_check->timeout_ms ? p->u->health_check->timeout_ms : 1000);
    bool stale = !p->literal && p->resolved && sg_mono_ms() - p->resolved_at_ms > p->u->dns_refresh_ms;
    if (p->literal || (p->resolved && !stale))
        probe_connect(p);
    else
        probe_resolve(p);
}

/* ---- the set of probes ------------------------------------------------------------------- */

static void probe_free(struct probe *p)
{
    p->running = false;
    probe_close(p);
    if (p->ticket) {
        p->ticket->probe = NULL;
        if (p->dns_req)
            evdns_getaddrinfo_cancel(p->dns_req);
    }
    if (p->timer)
        event_free(p->timer);
    free(p->key);
    free(p->host);
    free(p);
}

static struct probe *probe_new(struct sg_prober *pr, const char *key, const struct sg_upstream *u,
                               const struct sg_hostport *hp)
{
    struct probe *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->pr = pr;
    p->key = strdup(key);
    p->host = strdup(hp->host);
    p->port = hp->port;
    p->ep = sg_endpoint_get(u->name, hp->host, hp->port);
    p->timer = evtimer_new(pr->base, timer_cb, p);
    if (!p->key || !p->host || !p->ep || !p->timer) {
        probe_free(p);
        return NULL;
    }
    sg_hc_init(&p->st);
    char text[300];
    int len = sizeof p->addr;
    snprintf(text, sizeof text, strchr(hp->host, ':') ? "[%s]:%u" : "%s:%u", hp->host, hp->port);
    if (evutil_parse_sockaddr_port(text, (struct sockaddr *)&p->addr, &len) == 0) {
        p->literal = p->resolved = true;
        p->addrlen = (socklen_t)len;
    }
    char labels[700];
    snprintf(labels, sizeof labels, "%s,result=\"success\"", p->ep->label);
    p->c_ok = sg_metrics_series("strangler_upstream_health_checks_total", labels);
    snprintf(labels, sizeof labels, "%s,result=\"failure\"", p->ep->label);
    p->c_fail = sg_metrics_series("strangler_upstream_health_checks_total", labels);
    /* A fresh check starts from "healthy, unknown" (health.h); whatever an
     * earlier configuration's check left is forgotten. */
    atomic_store_explicit(&p->ep->hc_down, false, memory_order_relaxed);
    arm(p, FIRST_PROBE_MS);
    return p;
}

struct sg_prober *sg_prober_new(struct event_base *base, struct sg_metrics_shard *shard)
{
    struct sg_prober *pr = calloc(1, sizeof *pr);
    if (!pr)
        return NULL;
    pr->base = base;
    pr->shard = shard;
    sg_health_register_metrics();
    return pr;
}

void sg_prober_update(struct sg_prober *pr, struct sg_config *cfg)
{
    sg_endpoints_reconcile(cfg);
    if (!pr)
        return;
    for (struct probe *p = pr->probes; p; p = p->next)
        p->seen = false;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct sg_upstream *u = &cfg->upstreams[i];
        if (!u->health_check)
            continue;
        for (size_t k = 0; k < u->n_endpoints; k++) {
            char key[600];
            snprintf(key, sizeof key, "%s|%s|%u", u->name, u->endpoints[k].host, u->endpoints[k].port);
            struct probe *p = pr->probes;
            while (p && strcmp(p->key, key) != 0)
                p = p->next;
            if (!p) {
                if (!(p = probe_new(pr, key, u, &u->endpoints[k])))
                    continue;
                p->next = pr->probes;
                pr->probes = p;
            }
            p->seen = true;
            p->u = u;
            p->up_index = i;
        }
    }
    struct probe **pp = &pr->probes;
    while (*pp) {
        struct probe *p = *pp;
        if (p->seen) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        probe_free(p); /* its endpoint's hc_down was cleared by reconcile (or it left the upstream) */
    }
    sg_config_ref(cfg);
    sg_config_unref(pr->cfg);
    pr->cfg = cfg;
}

void sg_prober_free(struct sg_prober *pr)
{
    if (!pr)
        return;
    while (pr->probes) {
        struct probe *p = pr->probes;
        pr->probes = p->next;
        probe_free(p);
    }
    if (pr->dns)
        evdns_base_free(pr->dns, 1); /* pending lookups call back with their (cleared) tickets */
    sg_config_unref(pr->cfg);
    free(pr);
}
