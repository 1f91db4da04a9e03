/* The snapshot's lifetime: shared read-only by every worker, freed when
 * the last request holding it finishes. cfg_free also frees the partial
 * snapshots of failed loads, so it accepts any mix of NULLs and zeroes. */
#include <stdlib.h>

#include "config/internal.h"
#include "strangler/compare.h"

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_listener(struct sg_listener *l)
{
    free(l->name);
    free(l->addr.host);
    if (l->tls) {
        free(l->tls->certificate);
        free(l->tls->private_key);
        free(l->tls->client_ca);
        free_strv(l->tls->alpn, l->tls->n_alpn);
        free(l->tls);
    }
}

static void free_upstream(struct sg_upstream *u)
{
    free(u->name);
    for (size_t i = 0; i < u->n_endpoints; i++)
        free(u->endpoints[i].host);
    free(u->endpoints);
    if (u->tls) {
        free(u->tls->ca);
        free(u->tls->sni);
        free(u->tls->certificate);
        free(u->tls->private_key);
        free(u->tls);
    }
    if (u->health_check)
        free(u->health_check->path);
    free(u->health_check);
    free(u->outlier_detection);
}

static void free_mirror(struct sg_mirror *m)
{
    free(m->host_suffix);
    free_strv(m->methods, m->n_methods);
    if (m->compare) {
        free_strv(m->compare->headers, m->compare->n_headers);
        for (size_t i = 0; m->compare->ignore_ptrs && i < m->compare->n_ignore; i++)
            sg_json_pointer_free(&m->compare->ignore_ptrs[i]);
        free(m->compare->ignore_ptrs);
        free_strv(m->compare->ignore, m->compare->n_ignore);
        free(m->compare);
    }
}

static void free_edits(struct sg_header_edits *e)
{
    for (size_t i = 0; i < e->n_set; i++) {
        free(e->set[i].name);
        free(e->set[i].value);
    }
    free(e->set);
    free_strv(e->remove, e->n_remove);
}

/* A regex_t is only ever freed when its kind says it was compiled: the
 * compile steps set the kind after regcomp() succeeded. */
static void free_route(struct sg_route *r)
{
    free(r->name);
    if (r->path_kind == SG_PM_REGEX)
        regfree(&r->path_re);
    free(r->path);
    free_strv(r->methods, r->n_methods);
    free(r->host);
    for (size_t i = 0; i < r->n_headers; i++) {
        if (r->headers[i].kind == SG_HM_REGEX)
            regfree(&r->headers[i].re);
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->rewrite_prefix);
    free(r->destinations);
    free(r->sticky_name);
    for (size_t i = 0; i < r->n_mirrors; i++)
        free_mirror(&r->mirrors[i]);
    free(r->mirrors);
    free_edits(&r->request_headers);
    free_edits(&r->response_headers);
}

void cfg_free(struct sg_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    for (size_t i = 0; i < cfg->n_listeners; i++)
        free_listener(&cfg->listeners[i]);
    free(cfg->listeners);
    free(cfg->admin.host);
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        free_upstream(&cfg->upstreams[i]);
    free(cfg->upstreams);
    for (size_t i = 0; i < cfg->n_routes; i++)
        free_route(&cfg->routes[i]);
    free(cfg->routes);
    free_strv(cfg->secrets, cfg->n_secrets);
    if (cfg->runtime_free)
        cfg->runtime_free(cfg->runtime);
    free(cfg);
}

struct sg_config *sg_config_ref(struct sg_config *cfg)
{
    if (cfg)
        atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

/* Release on every unref and acquire before the free, so that the last
 * owner sees every other thread's reads done before it frees. */
void sg_config_unref(struct sg_config *cfg)
{
    if (cfg && atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        cfg_free(cfg);
}
