/* A worker: one thread, one event loop, its own listener sockets, upstream
 * pools, metrics shard and access-log buffer. Nothing here is shared with
 * other workers except through the few atomics in struct sg_server. */
#ifndef STRANGLER_WORKER_H
#define STRANGLER_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strangler/config.h"
#include "strangler/metrics.h"

struct event;
struct event_base;
struct evdns_base;
struct evbuffer;
struct evconnlistener;
struct sg_worker;
struct sg_pool;
struct sg_upstream_rt;
struct sg_shadow;
struct sg_h1s;
struct sg_metric_memo;
struct sg_retry_budget;
struct sg_prober;

/* The worker's view of one snapshot. Requests pin it with a plain counter
 * (no atomics on the request path); it is dropped once it has been
 * replaced and the last request that started on it has finished. */
struct sg_wsnap {
    struct sg_config *cfg; /* one reference held */
    struct sg_worker *worker;
    struct sg_upstream_rt *ups; /* per upstream, indexed like cfg->upstreams */
    struct sg_retry_budget *budgets; /* per route, indexed like cfg->routes (retry_budget.h) */
    unsigned pins;
    bool retired;
};

struct sg_listener_rt {
    struct sg_worker *worker;
    const char *name; /* points into the server's listener names */
    size_t index;
    int fd;
    struct evconnlistener *lev;
    sg_series_t conn_gauge;
    bool tls; /* contexts come from the snapshot: sg_tls_ctx(cfg, index) */
};

typedef void (*sg_defer_fn)(void *arg);

struct sg_defer {
    sg_defer_fn fn;
    void *arg;
    struct sg_defer *next;
};

struct sg_worker {
    unsigned id;
    struct sg_server *server;
    pthread_t thread;
    struct event_base *base;
    struct evdns_base *dns;
    struct sg_metrics_shard *metrics;
    struct sg_wsnap *snap;
    struct sg_listener_rt *listeners;
    size_t n_listeners;
    struct sg_pool *pools; /* every endpoint pool this worker has */
    struct sg_defer *deferred; /* freed after the current callbacks return */
    struct event *defer_ev;
    struct evbuffer *access_log; /* whole lines waiting for one write(2) */
    struct event *log_ev;
    uint64_t rng[4];
    /* Control messages from the main thread (config swap, drain). */
    pthread_mutex_t mbox_lock;
    struct sg_config *mbox_cfg;
    bool mbox_drain, mbox_stop;
    int mbox_fd; /* eventfd: the only way other threads wake this loop */
    struct event *mbox_ev;
    struct event *drain_ev;
    bool draining;
    /* Accepting paused (limits.max_connections, or accept() out of file
     * descriptors): accept_ev resumes it. */
    struct event *accept_ev;
    bool accept_paused;
    uint64_t accept_backoff_ms, accept_warned_ms;
    unsigned accept_suppressed;
    size_t n_conns; /* open client connections */
    struct sg_h1s *conns; /* list of open client connections */
    struct sg_metric_memo *memo;
    /* Shadows in flight (mirror.c) and the body bytes they hold: the
     * budgets of limits.shadow_max_in_flight / shadow_max_buffered_bytes. */
    struct sg_shadow *shadows;
    size_t n_shadows;
    uint64_t shadow_bytes;
};

/* Process-wide state, owned by main. */
struct sg_server {
    struct sg_worker *workers;
    size_t n_workers;
    struct sg_config *cfg; /* current snapshot (main thread's reference) */
    atomic_uint_fast64_t generation;
    atomic_int draining;
    atomic_long conns; /* client connections, all workers (limits.max_connections) */
    char **listener_names;
    size_t n_listener_names;
    /* Called from each worker thread as it ends (must be thread-safe). */
    void (*on_worker_exit)(struct sg_server *srv);
    void *main_ctx;
    /* Main thread's metrics and the reload counters. */
    struct sg_metrics_shard *shard;
    sg_series_t reload_ok, reload_fail, generation_gauge;
    uint64_t config_hash; /* of the file content last loaded (the watcher skips identical writes) */
    struct sg_prober *prober; /* active health checks, on the main thread (may be NULL) */
    int io_uring_error; /* why io_uring is not available here (errno), 0 if it is or is off */
};

/* Loads srv->cfg->path again and, when valid, installs it on every worker
 * (TLS contexts rebuilt: certificate files are re-read). Counts the result.
 * On failure returns false and fills errs; the old snapshot keeps serving. */
bool sg_server_reload(struct sg_server *srv, struct sg_config_errors *errs);
/* Builds what a snapshot needs at run time (TLS contexts); for start-up. */
bool sg_server_prepare(struct sg_config *cfg, char *errbuf, size_t errlen);

int sg_worker_init(struct sg_worker *w, struct sg_server *srv, unsigned id, struct sg_config *cfg);
/* Wraps this worker's bound sockets (one per listener) in evconnlisteners. */
int sg_worker_listen(struct sg_worker *w, const int *fds, size_t n, char *const *names);
int sg_worker_start(struct sg_worker *w);
void sg_worker_join(struct sg_worker *w);
void sg_worker_destroy(struct sg_worker *w);

/* Main thread -> worker: adopt a new snapshot / start draining. */
void sg_worker_post_config(struct sg_worker *w, struct sg_config *cfg);
void sg_worker_post_drain(struct sg_worker *w);
/* End of drain_timeout: close everything and stop. */
void sg_worker_post_stop(struct sg_worker *w);

/* Pin/unpin the current snapshot for one request. */
struct sg_wsnap *sg_wsnap_pin(struct sg_worker *w);
void sg_wsnap_unpin(struct sg_wsnap *s);

/* Runs fn(arg) once the current event callbacks have returned: the way to
 * free an object from inside its own callback chain. */
void sg_worker_defer(struct sg_worker *w, sg_defer_fn fn, void *arg);

uint64_t sg_worker_random(struct sg_worker *w);
/* 36-char UUIDv4 text + NUL into out[37]. */
void sg_worker_request_id(struct sg_worker *w, char out[37]);

/* Access-log lines are formatted straight into w->access_log; this makes
 * sure they are written soon (batched: one write(2) per loop turn or per
 * 64 KiB, whichever comes first). */
void sg_worker_log_commit(struct sg_worker *w);

/* Memoised series ids for per-request metrics: labels route, upstream,
 * then `extra` (a static, escaped fragment such as ",outcome=\"sent\"",
 * compared by pointer; may be NULL), then code when code >= 0. `family`
 * must be a string literal (compared by pointer). */
sg_series_t sg_worker_series(struct sg_worker *w, const char *family, const char *route, const char *upstream,
                             const char *extra, int code);
sg_series_t sg_worker_series_requests(struct sg_worker *w, const char *route, const char *upstream, int code);
sg_series_t sg_worker_series_duration(struct sg_worker *w, const char *route, const char *upstream);

void sg_worker_maybe_exit(struct sg_worker *w);
/* Called when a client connection closes, to let a paused listener resume. */
void sg_worker_conn_closed(struct sg_worker *w);

#endif
