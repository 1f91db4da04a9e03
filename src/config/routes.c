/* routes: the ordered list the router walks, first match wins. This file
 * holds the route itself and its action (destinations, sticky, timeout,
 * retries); match, mirror and header edits have their own files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

static const char *const route_keys[] = {
    "name", "match", "rewrite", "destinations", "sticky", "mirror", "timeout", "retries",
    "request_headers", "response_headers", NULL,
};

/* Route names are metric labels and log fields: printable, one line. */
static void compile_route_name(struct cfg_ctx *c, const struct cfg_node *list, size_t i)
{
    struct sg_route *r = &c->cfg->routes[i];
    if (!cfg_req_str(c, list->kids[i], "name", "in route", &r->name))
        return;
    const struct cfg_node *n = cfg_opt(list->kids[i], "name");
    for (const unsigned char *p = (const unsigned char *)r->name; *p; p++) {
        if (*p < ' ' || *p == 0x7f) {
            cfg_error(c, n, "route name \"%s\" contains control characters", r->name);
            return;
        }
    }
    for (size_t j = 0; j < i; j++) {
        if (c->cfg->routes[j].name && strcmp(c->cfg->routes[j].name, r->name) == 0) {
            cfg_error(c, n, "duplicate route name \"%s\" (first at line %u)", r->name,
                      cfg_opt(list->kids[j], "name")->line);
            return;
        }
    }
}

static bool resolve_upstream(struct cfg_ctx *c, const struct cfg_node *item, const char *route,
                             struct sg_upstream **out)
{
    const struct cfg_node *n = cfg_req(c, item, "upstream", "in destination");
    if (!n || !cfg_want_scalar(c, n, "upstream", "an upstream name"))
        return false;
    if (!c->upstreams_ok)
        return false; /* the upstreams block itself is broken: already reported */
    *out = cfg_find_upstream(c->cfg, n->str);
    if (!*out)
        cfg_error(c, n, "route \"%s\": unknown upstream \"%s\"", route, n->str);
    return *out != NULL;
}

static bool compile_destination(struct cfg_ctx *c, const struct cfg_node *item, struct sg_destination *d,
                                const char *route)
{
    static const char *const keys[] = { "upstream", "weight", NULL };
    if (!cfg_want(c, item, CFG_MAP, "destination"))
        return false;
    cfg_check_keys(c, item, "in destination", keys);
    bool ok = resolve_upstream(c, item, route, &d->upstream);
    return cfg_get_u32(c, item, "weight", 1, 0, UINT32_MAX, &d->weight) && ok;
}

/* Cumulative weights are what the split compares a point against, so the
 * request path never sums. */
static void compile_destinations(struct cfg_ctx *c, const struct cfg_node *route_node, struct sg_route *r,
                                 const char *route)
{
    char where[192];
    snprintf(where, sizeof where, "in route \"%s\"", route);
    const struct cfg_node *list = cfg_req(c, route_node, "destinations", where);
    if (!list || !cfg_want(c, list, CFG_SEQ, "destinations"))
        return;
    if (list->n_kids == 0) {
        cfg_error(c, list, "route \"%s\": destinations must list at least one upstream", route);
        return;
    }
    r->destinations = cfg_calloc(c, list->n_kids, sizeof *r->destinations);
    if (!r->destinations)
        return;
    r->n_destinations = list->n_kids;
    bool ok = true;
    for (size_t i = 0; i < list->n_kids; i++) {
        ok = compile_destination(c, list->kids[i], &r->destinations[i], route) && ok;
        r->total_weight += r->destinations[i].weight;
        r->destinations[i].cum_weight = r->total_weight;
    }
    if (ok && r->total_weight == 0)
        cfg_error(c, list, "route \"%s\": every destination has weight 0; at least one must be positive", route);
}

static void compile_sticky(struct cfg_ctx *c, const struct cfg_node *n, struct sg_route *r)
{
    static const char *const keys[] = { "header", "cookie", NULL };
    if (!cfg_want(c, n, CFG_MAP, "sticky"))
        return;
    cfg_check_keys(c, n, "in sticky", keys);
    const struct cfg_node *h = cfg_opt(n, "header"), *k = cfg_opt(n, "cookie");
    if (h && k) {
        cfg_error(c, h->line > k->line || (h->line == k->line && h->col > k->col) ? h : k,
                  "sticky: give either header or cookie, not both");
        return;
    }
    if (!h && !k) {
        cfg_error(c, n, "sticky: give a header or a cookie whose value is the key");
        return;
    }
    const struct cfg_node *v = h ? h : k;
    const char *key = h ? "header" : "cookie";
    if (!cfg_want_scalar(c, v, key, "a name") || !cfg_check_token_item(c, v, key))
        return;
    if (!(r->sticky_name = cfg_strdup(c, v->str)))
        return;
    /* Header names are case-insensitive; cookie names are not (RFC 6265). */
    if (h)
        cfg_lower(r->sticky_name);
    r->sticky_kind = h ? SG_STICKY_HEADER : SG_STICKY_COOKIE;
}

static bool retry_on_check(struct cfg_ctx *c, const struct cfg_node *item, const char *key)
{
    (void)key;
    static const char *const names[] = { "connect-failure", "reset", "502", "503", "504", NULL };
    for (size_t i = 0; names[i]; i++)
        if (strcmp(names[i], item->str) == 0)
            return true;
    cfg_error(c, item, "invalid retry condition \"%s\" (expected connect-failure, reset, 502, 503, 504)", item->str);
    return false;
}

static uint32_t retry_bit(const char *s)
{
    static const char *const names[] = { "connect-failure", "reset", "502", "503", "504" };
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(names[i], s) == 0)
            return 1u << i;
    return 0;
}

enum { MAX_RETRY_ATTEMPTS = 10 };
enum { DEFAULT_BUDGET_PERCENT = 20, DEFAULT_BUDGET_MIN_PER_SECOND = 10 };

/* retries.budget (an addition to the contract): see retry_budget.h. */
static void compile_budget(struct cfg_ctx *c, const struct cfg_node *n, struct sg_retry_policy *p)
{
    static const char *const keys[] = { "percent", "min_retries_per_second", NULL };
    if (!cfg_want(c, n, CFG_MAP, "budget"))
        return;
    cfg_check_keys(c, n, "in retries budget", keys);
    cfg_get_u32(c, n, "percent", DEFAULT_BUDGET_PERCENT, 0, 100, &p->budget_percent);
    cfg_get_u32(c, n, "min_retries_per_second", DEFAULT_BUDGET_MIN_PER_SECOND, 0, 1000000,
                &p->budget_min_per_second);
}

/* Without a retries block nothing is retried; a block without attempts
 * means one retry, which is what writing the block asks for. */
static void compile_retries(struct cfg_ctx *c, const struct cfg_node *route_node, struct sg_retry_policy *p)
{
    static const char *const keys[] = { "attempts", "on", "per_try_timeout", "budget", NULL };
    const struct cfg_node *n = cfg_opt(route_node, "retries");
    p->attempts = 0;
    p->on = SG_RETRY_CONNECT_FAILURE | SG_RETRY_RESET;
    p->per_try_timeout_ms = 0;
    p->budget_percent = DEFAULT_BUDGET_PERCENT;
    p->budget_min_per_second = DEFAULT_BUDGET_MIN_PER_SECOND;
    if (!n || !cfg_want(c, n, CFG_MAP, "retries"))
        return;
    cfg_check_keys(c, n, "in retries", keys);
    const struct cfg_node *b = cfg_opt(n, "budget");
    if (b)
        compile_budget(c, b, p);
    cfg_get_u32(c, n, "attempts", 1, 0, MAX_RETRY_ATTEMPTS, &p->attempts);
    cfg_get_duration(c, n, "per_try_timeout", 0, true, &p->per_try_timeout_ms);
    char **on;
    size_t n_on;
    if (cfg_get_str_list(c, n, "on", retry_on_check, CFG_LIST_NONEMPTY, &on, &n_on) && on) {
        p->on = 0;
        for (size_t i = 0; i < n_on; i++)
            p->on |= retry_bit(on[i]);
    }
    for (size_t i = 0; on && i < n_on; i++)
        free(on[i]);
    free(on);
}

static void compile_rewrite(struct cfg_ctx *c, const struct cfg_node *route_node, struct sg_route *r)
{
    static const char *const keys[] = { "path_prefix", NULL };
    const struct cfg_node *n = cfg_opt(route_node, "rewrite");
    if (!n || !cfg_want(c, n, CFG_MAP, "rewrite"))
        return;
    cfg_check_keys(c, n, "in rewrite", keys);
    const struct cfg_node *v = cfg_opt(n, "path_prefix");
    if (!v || !cfg_want_scalar(c, v, "path_prefix", "a path"))
        return;
    if (!cfg_check_path(c, v, "rewrite.path_prefix", false))
        return;
    /* Only a prefix match says which part of the path to replace. */
    if (r->path_kind != SG_PM_PREFIX && !cfg_key(cfg_opt(route_node, "match"), "path_prefix")) {
        cfg_error(c, v, "rewrite.path_prefix needs match.path_prefix in the same route (it replaces that prefix)");
        return;
    }
    r->rewrite_prefix = cfg_strdup(c, v->str);
}

static void compile_route(struct cfg_ctx *c, const struct cfg_node *list, size_t i)
{
    const struct cfg_node *n = list->kids[i];
    struct sg_route *r = &c->cfg->routes[i];
    r->index = i;
    r->timeout_ms = 15 * 1000;
    if (!cfg_want(c, n, CFG_MAP, "route"))
        return;
    compile_route_name(c, list, i);
    char name[160], where[192];
    snprintf(name, sizeof name, "%s", r->name ? r->name : "?");
    if (r->name)
        snprintf(where, sizeof where, "in route \"%s\"", name);
    else
        snprintf(where, sizeof where, "in route");
    cfg_check_keys(c, n, where, route_keys);
    const struct cfg_node *match = cfg_opt(n, "match");
    if (match)
        cfg_compile_match(c, match, r);
    compile_rewrite(c, n, r);
    compile_destinations(c, n, r, name);
    const struct cfg_node *sticky = cfg_opt(n, "sticky");
    if (sticky)
        compile_sticky(c, sticky, r);
    cfg_compile_mirrors(c, cfg_opt(n, "mirror"), r, name);
    cfg_get_duration(c, n, "timeout", 15 * 1000, true, &r->timeout_ms);
    compile_retries(c, n, &r->retries);
    cfg_compile_header_edits(c, cfg_opt(n, "request_headers"), "request_headers", &r->request_headers);
    cfg_compile_header_edits(c, cfg_opt(n, "response_headers"), "response_headers", &r->response_headers);
}

void cfg_compile_routes(struct cfg_ctx *c, const struct cfg_node *root)
{
    const struct cfg_node *list = cfg_req(c, root, "routes", "at top level");
    if (!list || !cfg_want(c, list, CFG_SEQ, "routes"))
        return;
    if (list->n_kids == 0) {
        cfg_error(c, list, "routes: at least one route is required");
        return;
    }
    c->cfg->routes = cfg_calloc(c, list->n_kids, sizeof *c->cfg->routes);
    if (!c->cfg->routes)
        return;
    c->cfg->n_routes = list->n_kids;
    for (size_t i = 0; i < list->n_kids; i++)
        compile_route(c, list, i);
}
