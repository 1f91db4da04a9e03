/* Installing configurations: at start and on every reload. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/log.h"
#include "strangler/prober.h"
#include "strangler/tls.h"
#include "strangler/watch.h"
#include "strangler/worker.h"

/* ALPN offers h2 wherever the listener's alpn lists it (docs/http2.md). */
#define SG_TLS_OFFER_H2 true

bool sg_server_prepare(struct sg_config *cfg, char *errbuf, size_t errlen)
{
    return sg_tls_attach(cfg, SG_TLS_OFFER_H2, errbuf, errlen);
}

/* Appends an already formatted "FILE:LINE:COLUMN: message". */
static void add_error(struct sg_config_errors *errs, const char *msg_text)
{
    char *msg = strdup(msg_text);
    if (!msg)
        return;
    char **v = realloc(errs->msgs, (errs->n + 1) * sizeof *v);
    if (!v) {
        free(msg);
        return;
    }
    errs->msgs = v;
    errs->msgs[errs->n++] = msg;
}

/* Listener sockets are bound once, at start: a reload may change
 * everything about routing and upstreams, and the TLS files, but not the
 * set of listeners. */
static bool listeners_unchanged(const struct sg_config *old, const struct sg_config *cfg,
                                struct sg_config_errors *errs)
{
    bool same = old->n_listeners == cfg->n_listeners;
    for (size_t i = 0; same && i < cfg->n_listeners; i++) {
        const struct sg_listener *a = &old->listeners[i], *b = &cfg->listeners[i];
        same = strcmp(a->name, b->name) == 0 && strcmp(a->addr.host, b->addr.host) == 0 &&
               a->addr.port == b->addr.port && (a->tls == NULL) == (b->tls == NULL);
    }
    if (!same) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s:%u:%u: listeners differ from the running ones; a restart is needed to change "
                 "listeners", cfg->path, cfg->listeners_mark.line, cfg->listeners_mark.col);
        add_error(errs, msg);
    }
    return same;
}

static void warn_restart_only(const struct sg_config *old, const struct sg_config *cfg)
{
    if (old->workers != cfg->workers)
        sg_warn("reload: workers changed (%u -> %u); takes effect at the next restart", old->workers, cfg->workers);
    if (old->io_uring != cfg->io_uring)
        sg_warn("reload: io_uring changed (%s -> %s); takes effect at the next restart", old->io_uring ? "auto" : "off",
                cfg->io_uring ? "auto" : "off");
    if (strcmp(old->admin.host, cfg->admin.host) != 0 || old->admin.port != cfg->admin.port)
        sg_warn("reload: admin.address changed; takes effect at the next restart");
}

bool sg_server_reload(struct sg_server *srv, struct sg_config_errors *errs)
{
    memset(errs, 0, sizeof *errs);
    /* Remember what was tried, valid or not, so the watcher does not try
     * the same content again; the next real change is picked up. */
    sg_file_hash(srv->cfg->path, &srv->config_hash);
    struct sg_config *cfg = sg_config_load(srv->cfg->path, errs);
    char err[600];
    bool ok = cfg && listeners_unchanged(srv->cfg, cfg, errs);
    if (ok && !sg_server_prepare(cfg, err, sizeof err)) {
        add_error(errs, err);
        ok = false;
    }
    if (!ok) {
        sg_config_unref(cfg);
        sg_metrics_add(srv->shard, srv->reload_fail, 1);
        for (size_t i = 0; i < errs->n; i++)
            sg_error("%s", errs->msgs[i]);
        sg_error("reload of %s rejected; generation %llu keeps serving", srv->cfg->path,
                 (unsigned long long)srv->cfg->generation);
        return false;
    }
    warn_restart_only(srv->cfg, cfg);
    cfg->generation = atomic_fetch_add(&srv->generation, 1) + 1;
    for (size_t i = 0; i < srv->n_workers; i++)
        sg_worker_post_config(&srv->workers[i], cfg);
    sg_config_unref(srv->cfg);
    srv->cfg = cfg;
    sg_prober_update(srv->prober, cfg);
    sg_metrics_add(srv->shard, srv->reload_ok, 1);
    sg_metrics_gauge_set(srv->generation_gauge, (int64_t)cfg->generation);
    sg_info("configuration generation %llu loaded from %s", (unsigned long long)cfg->generation, cfg->path);
    return true;
}
