#include "strangler/config_json.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "strangler/json.h"

struct emit {
    struct evbuffer *out;
    const struct sg_config *cfg;
    bool first; /* no comma before the next member */
};

static bool secret(const struct sg_config *cfg, const char *s)
{
    for (size_t i = 0; s && i < cfg->n_secrets; i++)
        if (cfg->secrets[i][0] && strstr(s, cfg->secrets[i]))
            return true;
    return false;
}

static void key(struct emit *e, const char *k)
{
    if (!e->first)
        evbuffer_add(e->out, ",", 1);
    e->first = false;
    if (k) {
        sg_json_str(e->out, k, strlen(k), 0);
        evbuffer_add(e->out, ":", 1);
    }
}

static void open_(struct emit *e, const char *k, char c)
{
    key(e, k);
    evbuffer_add(e->out, &c, 1);
    e->first = true;
}

static void close_(struct emit *e, char c)
{
    evbuffer_add(e->out, &c, 1);
    e->first = false;
}

static void str(struct emit *e, const char *k, const char *v)
{
    key(e, k);
    if (!v)
        evbuffer_add(e->out, "null", 4);
    else if (secret(e->cfg, v))
        evbuffer_add(e->out, "\"<redacted>\"", 12);
    else
        sg_json_str(e->out, v, strlen(v), 0);
}

static void num(struct emit *e, const char *k, uint64_t v)
{
    key(e, k);
    evbuffer_add_printf(e->out, "%" PRIu64, v);
}

static void boolean(struct emit *e, const char *k, bool v)
{
    key(e, k);
    evbuffer_add_printf(e->out, "%s", v ? "true" : "false");
}

static void duration(struct emit *e, const char *k, uint64_t ms)
{
    char buf[32];
    if (ms && ms % 3600000 == 0)
        snprintf(buf, sizeof buf, "%" PRIu64 "h", ms / 3600000);
    else if (ms && ms % 60000 == 0)
        snprintf(buf, sizeof buf, "%" PRIu64 "m", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, sizeof buf, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(buf, sizeof buf, "%" PRIu64 "ms", ms);
    str(e, k, buf);
}

static void hostport(struct emit *e, const char *k, const struct sg_hostport *hp)
{
    char buf[300];
    snprintf(buf, sizeof buf, strchr(hp->host, ':') ? "[%s]:%u" : "%s:%u", hp->host, hp->port);
    str(e, k, buf);
}

static void strv(struct emit *e, const char *k, char *const *v, size_t n)
{
    open_(e, k, '[');
    for (size_t i = 0; i < n; i++)
        str(e, NULL, v[i]);
    close_(e, ']');
}

static void listeners(struct emit *e)
{
    open_(e, "listeners", '[');
    for (size_t i = 0; i < e->cfg->n_listeners; i++) {
        const struct sg_listener *l = &e->cfg->listeners[i];
        open_(e, NULL, '{');
        str(e, "name", l->name);
        hostport(e, "address", &l->addr);
        if (l->tls) {
            open_(e, "tls", '{');
            str(e, "certificate", l->tls->certificate);
            str(e, "private_key", l->tls->private_key);
            strv(e, "alpn", l->tls->alpn, l->tls->n_alpn);
            str(e, "client_ca", l->tls->client_ca);
            close_(e, '}');
        }
        close_(e, '}');
    }
    close_(e, ']');
}

static void upstream(struct emit *e, const struct sg_upstream *u)
{
    static const char *const protos[] = { "http1", "h2c", "h2" };
    static const char *const balances[] = { "round_robin", "least_request", "random" };
    open_(e, u->name, '{');
    open_(e, "endpoints", '[');
    for (size_t i = 0; i < u->n_endpoints; i++)
        hostport(e, NULL, &u->endpoints[i]);
    close_(e, ']');
    str(e, "protocol", protos[u->protocol]);
    if (u->tls) {
        open_(e, "tls", '{');
        str(e, "ca", u->tls->ca);
        str(e, "sni", u->tls->sni);
        boolean(e, "verify", u->tls->verify);
        str(e, "certificate", u->tls->certificate);
        str(e, "private_key", u->tls->private_key);
        close_(e, '}');
    }
    duration(e, "connect_timeout", u->connect_timeout_ms);
    duration(e, "idle_timeout", u->idle_timeout_ms);
    duration(e, "dns_refresh", u->dns_refresh_ms);
    num(e, "max_connections", u->max_connections);
    str(e, "balance", balances[u->balance]);
    if (u->health_check) {
        open_(e, "health_check", '{');
        str(e, "path", u->health_check->path);
        duration(e, "interval", u->health_check->interval_ms);
        duration(e, "timeout", u->health_check->timeout_ms);
        num(e, "healthy_threshold", u->health_check->healthy_threshold);
        num(e, "unhealthy_threshold", u->health_check->unhealthy_threshold);
        close_(e, '}');
    }
    if (u->outlier_detection) {
        open_(e, "outlier_detection", '{');
        num(e, "consecutive_failures", u->outlier_detection->consecutive_failures);
        duration(e, "ejection_time", u->outlier_detection->ejection_time_ms);
        close_(e, '}');
    }
    close_(e, '}');
}

static void edits(struct emit *e, const char *k, const struct sg_header_edits *h)
{
    open_(e, k, '{');
    open_(e, "set", '{');
    for (size_t i = 0; i < h->n_set; i++)
        str(e, h->set[i].name, h->set[i].value);
    close_(e, '}');
    strv(e, "remove", h->remove, h->n_remove);
    close_(e, '}');
}

static void match(struct emit *e, const struct sg_route *r)
{
    static const char *const kinds[] = { NULL, "path", "path_prefix", "path_regex" };
    static const char *const hkinds[] = { "exact", "prefix", "regex", "present" };
    open_(e, "match", '{');
    if (r->path_kind != SG_PM_ANY)
        str(e, kinds[r->path_kind], r->path);
    if (r->n_methods)
        strv(e, "methods", r->methods, r->n_methods);
    if (r->host)
        str(e, "host", r->host);
    if (r->n_headers) {
        open_(e, "headers", '{');
        for (size_t i = 0; i < r->n_headers; i++) {
            const struct sg_header_match *h = &r->headers[i];
            open_(e, h->name, '{');
            if (h->kind == SG_HM_PRESENT)
                boolean(e, "present", h->present);
            else
                str(e, hkinds[h->kind], h->value);
            close_(e, '}');
        }
        close_(e, '}');
    }
    close_(e, '}');
}

static void compare(struct emit *e, const struct sg_compare *k)
{
    static const char *const body[] = { [SG_CMP_BODY_BYTES] = "bytes", [SG_CMP_BODY_NONE] = "none",
                                        [SG_CMP_BODY_JSON] = "json" };
    open_(e, "compare", '{');
    boolean(e, "status", k->status);
    strv(e, "headers", k->headers, k->n_headers);
    str(e, "body", body[k->body]);
    strv(e, "ignore", k->ignore, k->n_ignore);
    num(e, "max_body_bytes", k->max_body_bytes);
    str(e, "noise", k->noise_auto ? "auto" : "off");
    num(e, "log_rate", k->log_rate);
    close_(e, '}');
}

static void mirrors(struct emit *e, const struct sg_route *r)
{
    open_(e, "mirror", '[');
    for (size_t i = 0; i < r->n_mirrors; i++) {
        const struct sg_mirror *m = &r->mirrors[i];
        open_(e, NULL, '{');
        str(e, "upstream", m->upstream->name);
        key(e, "percent");
        evbuffer_add_printf(e->out, "%g", m->percent);
        duration(e, "timeout", m->timeout_ms);
        num(e, "max_body_bytes", m->max_body_bytes);
        str(e, "host_suffix", m->host_suffix);
        if (m->n_methods)
            strv(e, "methods", m->methods, m->n_methods);
        if (m->compare)
            compare(e, m->compare);
        close_(e, '}');
    }
    close_(e, ']');
}

static void route(struct emit *e, const struct sg_route *r)
{
    static const char *const retry_on[] = { "connect-failure", "reset", "502", "503", "504" };
    open_(e, NULL, '{');
    str(e, "name", r->name);
    match(e, r);
    if (r->rewrite_prefix) {
        open_(e, "rewrite", '{');
        str(e, "path_prefix", r->rewrite_prefix);
        close_(e, '}');
    }
    open_(e, "destinations", '[');
    for (size_t i = 0; i < r->n_destinations; i++) {
        open_(e, NULL, '{');
        str(e, "upstream", r->destinations[i].upstream->name);
        num(e, "weight", r->destinations[i].weight);
        close_(e, '}');
    }
    close_(e, ']');
    if (r->sticky_kind != SG_STICKY_NONE) {
        open_(e, "sticky", '{');
        str(e, r->sticky_kind == SG_STICKY_HEADER ? "header" : "cookie", r->sticky_name);
        close_(e, '}');
    }
    if (r->n_mirrors)
        mirrors(e, r);
    duration(e, "timeout", r->timeout_ms);
    open_(e, "retries", '{');
    num(e, "attempts", r->retries.attempts);
    open_(e, "on", '[');
    for (unsigned b = 0; b < 5; b++)
        if (r->retries.on & (1u << b))
            str(e, NULL, retry_on[b]);
    close_(e, ']');
    duration(e, "per_try_timeout", r->retries.per_try_timeout_ms);
    open_(e, "budget", '{');
    num(e, "percent", r->retries.budget_percent);
    num(e, "min_retries_per_second", r->retries.budget_min_per_second);
    close_(e, '}');
    close_(e, '}');
    edits(e, "request_headers", &r->request_headers);
    edits(e, "response_headers", &r->response_headers);
    close_(e, '}');
}

void sg_config_json(struct evbuffer *out, const struct sg_config *cfg)
{
    struct emit e = { out, cfg, true };
    const struct sg_limits *l = &cfg->limits;
    open_(&e, NULL, '{');
    str(&e, "path", cfg->path);
    num(&e, "generation", cfg->generation);
    num(&e, "workers", cfg->workers);
    str(&e, "io_uring", cfg->io_uring ? "auto" : "off");
    listeners(&e);
    open_(&e, "admin", '{');
    hostport(&e, "address", &cfg->admin);
    close_(&e, '}');
    open_(&e, "upstreams", '{');
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        upstream(&e, &cfg->upstreams[i]);
    close_(&e, '}');
    open_(&e, "routes", '[');
    for (size_t i = 0; i < cfg->n_routes; i++)
        route(&e, &cfg->routes[i]);
    close_(&e, ']');
    open_(&e, "access_log", '{');
    boolean(&e, "enabled", cfg->access_log);
    close_(&e, '}');
    open_(&e, "limits", '{');
    num(&e, "max_header_bytes", l->max_header_bytes);
    num(&e, "max_request_body_bytes", l->max_request_body_bytes);
    duration(&e, "header_timeout", l->header_timeout_ms);
    duration(&e, "idle_timeout", l->idle_timeout_ms);
    num(&e, "max_connections", l->max_connections);
    num(&e, "shadow_max_in_flight", l->shadow_max_in_flight);
    num(&e, "shadow_max_buffered_bytes", l->shadow_max_buffered_bytes);
    close_(&e, '}');
    open_(&e, "shutdown", '{');
    duration(&e, "drain_timeout", cfg->drain_timeout_ms);
    close_(&e, '}');
    close_(&e, '}');
    evbuffer_add(out, "\n", 1);
}
