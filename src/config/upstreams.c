/* upstreams: the named services routes send traffic to. */
#include <stdio.h>
#include <string.h>

#include "config/internal.h"

static const char *const upstream_keys[] = {
    "endpoints", "protocol", "tls", "connect_timeout", "idle_timeout", "max_connections", "balance",
    "health_check", "outlier_detection", "dns_refresh", NULL,
};
static const char *const protocol_names[] = { "http1", "h2c", "h2", NULL };
static const char *const balance_names[] = { "round_robin", "least_request", "random", NULL };

static void compile_endpoints(struct cfg_ctx *c, const struct cfg_node *u_node, struct sg_upstream *u,
                              const char *where)
{
    const struct cfg_node *list = cfg_req(c, u_node, "endpoints", where);
    if (!list || !cfg_want(c, list, CFG_SEQ, "endpoints"))
        return;
    if (list->n_kids == 0) {
        cfg_error(c, list, "endpoints: at least one HOST:PORT is required");
        return;
    }
    u->endpoints = cfg_calloc(c, list->n_kids, sizeof *u->endpoints);
    if (!u->endpoints)
        return;
    u->n_endpoints = list->n_kids;
    for (size_t i = 0; i < list->n_kids; i++)
        cfg_address(c, list->kids[i], "endpoint", false, &u->endpoints[i]);
}

static void compile_upstream_tls(struct cfg_ctx *c, const struct cfg_node *n, struct sg_upstream *u)
{
    static const char *const keys[] = { "ca", "sni", "verify", "certificate", "private_key", NULL };
    if (!cfg_want(c, n, CFG_MAP, "tls"))
        return;
    struct sg_upstream_tls *t = u->tls = cfg_calloc(c, 1, sizeof *u->tls);
    if (!t)
        return;
    cfg_check_keys(c, n, "in upstream tls", keys);
    cfg_get_str(c, n, "ca", NULL, &t->ca);
    cfg_get_str(c, n, "sni", NULL, &t->sni);
    cfg_get_bool(c, n, "verify", true, &t->verify);
    cfg_get_str(c, n, "certificate", NULL, &t->certificate);
    cfg_get_str(c, n, "private_key", NULL, &t->private_key);
    if (t->sni && !cfg_valid_hostname(t->sni))
        cfg_error(c, cfg_opt(n, "sni"), "sni: \"%s\" is not a valid host name", t->sni);
    /* A client certificate is useless without its key and vice versa. */
    if (!t->certificate != !t->private_key) {
        const char *given = t->certificate ? "certificate" : "private_key";
        cfg_error(c, cfg_opt(n, given), "tls: certificate and private_key must be given together");
    }
}

static void compile_health_check(struct cfg_ctx *c, const struct cfg_node *n, struct sg_upstream *u)
{
    static const char *const keys[] = {
        "path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold", NULL,
    };
    if (!cfg_want(c, n, CFG_MAP, "health_check"))
        return;
    struct sg_health_check *h = u->health_check = cfg_calloc(c, 1, sizeof *u->health_check);
    if (!h)
        return;
    cfg_check_keys(c, n, "in health_check", keys);
    if (cfg_req_str(c, n, "path", "in health_check", &h->path))
        cfg_check_path(c, cfg_opt(n, "path"), "path", true);
    cfg_get_duration(c, n, "interval", 5000, false, &h->interval_ms);
    cfg_get_duration(c, n, "timeout", 1000, false, &h->timeout_ms);
    cfg_get_u32(c, n, "healthy_threshold", 2, 1, UINT32_MAX, &h->healthy_threshold);
    cfg_get_u32(c, n, "unhealthy_threshold", 3, 1, UINT32_MAX, &h->unhealthy_threshold);
}

static void compile_outlier(struct cfg_ctx *c, const struct cfg_node *n, struct sg_upstream *u)
{
    static const char *const keys[] = { "consecutive_failures", "ejection_time", NULL };
    if (!cfg_want(c, n, CFG_MAP, "outlier_detection"))
        return;
    struct sg_outlier_detection *o = u->outlier_detection = cfg_calloc(c, 1, sizeof *u->outlier_detection);
    if (!o)
        return;
    cfg_check_keys(c, n, "in outlier_detection", keys);
    cfg_get_u32(c, n, "consecutive_failures", 5, 1, UINT32_MAX, &o->consecutive_failures);
    cfg_get_duration(c, n, "ejection_time", 30 * 1000, false, &o->ejection_time_ms);
}

/* h2 is HTTP/2 over TLS, so it gets TLS defaults (verify against the
 * system store, SNI = endpoint host) when no tls block is given; h2c is by
 * definition cleartext and a tls block there is a contradiction. */
static void compile_protocol_tls(struct cfg_ctx *c, const struct cfg_node *n, struct sg_upstream *u)
{
    int proto;
    cfg_get_enum(c, n, "protocol", protocol_names, SG_PROTO_HTTP1, &proto);
    u->protocol = (enum sg_protocol)proto;
    const struct cfg_node *tls = cfg_opt(n, "tls");
    if (tls && u->protocol == SG_PROTO_H2C) {
        cfg_error(c, tls, "tls: protocol h2c is HTTP/2 without TLS; use protocol: h2 for HTTP/2 over TLS");
        return;
    }
    if (tls) {
        compile_upstream_tls(c, tls, u);
    } else if (u->protocol == SG_PROTO_H2) {
        u->tls = cfg_calloc(c, 1, sizeof *u->tls);
        if (u->tls)
            u->tls->verify = true;
    }
}

static void compile_upstream(struct cfg_ctx *c, const struct cfg_node *n, struct sg_upstream *u)
{
    char where[192];
    snprintf(where, sizeof where, "in upstream \"%s\"", u->name);
    u->mark = (struct sg_mark){ n->line, n->col };
    if (!cfg_want(c, n, CFG_MAP, u->name))
        return;
    cfg_check_keys(c, n, where, upstream_keys);
    compile_endpoints(c, n, u, where);
    compile_protocol_tls(c, n, u);
    cfg_get_duration(c, n, "connect_timeout", 1000, false, &u->connect_timeout_ms);
    cfg_get_duration(c, n, "idle_timeout", 60 * 1000, false, &u->idle_timeout_ms);
    cfg_get_duration(c, n, "dns_refresh", 30 * 1000, false, &u->dns_refresh_ms);
    cfg_get_u32(c, n, "max_connections", 1024, 1, UINT32_MAX, &u->max_connections);
    int balance;
    cfg_get_enum(c, n, "balance", balance_names, SG_BALANCE_ROUND_ROBIN, &balance);
    u->balance = (enum sg_balance)balance;
    const struct cfg_node *hc = cfg_opt(n, "health_check");
    if (hc)
        compile_health_check(c, hc, u);
    const struct cfg_node *od = cfg_opt(n, "outlier_detection");
    if (od)
        compile_outlier(c, od, u);
}

/* Upstream names appear in metric labels, logs and routes; any printable
 * text is fine, but control characters would corrupt all three. */
static bool upstream_name_ok(struct cfg_ctx *c, const struct cfg_node *key)
{
    if (!*key->str) {
        cfg_error(c, key, "upstream names must not be empty");
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)key->str; *p; p++) {
        if (*p < ' ' || *p == 0x7f) {
            cfg_error(c, key, "upstream name \"%s\" contains control characters", key->str);
            return false;
        }
    }
    return true;
}

void cfg_compile_upstreams(struct cfg_ctx *c, const struct cfg_node *root)
{
    const struct cfg_node *map = cfg_req(c, root, "upstreams", "at top level");
    if (!map || !cfg_want(c, map, CFG_MAP, "upstreams"))
        return;
    size_t n = cfg_map_len(map);
    if (n == 0) {
        cfg_error(c, map, "upstreams: at least one upstream is required");
        return;
    }
    struct sg_config *cfg = c->cfg;
    cfg->upstreams = cfg_calloc(c, n, sizeof *cfg->upstreams);
    if (!cfg->upstreams)
        return;
    cfg->n_upstreams = n;
    c->upstreams_ok = true;
    for (size_t i = 0; i < n; i++) {
        struct sg_upstream *u = &cfg->upstreams[i];
        const struct cfg_node *key = cfg_map_key_at(map, i);
        u->index = i;
        upstream_name_ok(c, key);
        if (!(u->name = cfg_strdup(c, key->str)))
            return;
        compile_upstream(c, cfg_map_val_at(map, i), u);
    }
}

struct sg_upstream *cfg_find_upstream(struct sg_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        if (cfg->upstreams[i].name && strcmp(cfg->upstreams[i].name, name) == 0)
            return &cfg->upstreams[i];
    return NULL;
}

const struct sg_upstream *sg_config_upstream(const struct sg_config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        if (cfg->upstreams[i].name && strcmp(cfg->upstreams[i].name, name) == 0)
            return &cfg->upstreams[i];
    return NULL;
}
