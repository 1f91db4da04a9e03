#include "strangler/worker.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "strangler/clock.h"
#include "strangler/exchange.h"
#include "strangler/h1_server.h"
#include "strangler/h2_client.h"
#include "strangler/h2_server.h"
#include "strangler/io.h"
#include "strangler/log.h"
#include "strangler/mem.h"
#include "strangler/mirror.h"
#include "strangler/pool.h"
#include "strangler/retry_budget.h"

#define LOG_FLUSH_BYTES (64u * 1024u)
#define MEMO_SIZE 1024u

/* ---- snapshots ------------------------------------------------------------ */

static struct sg_wsnap *wsnap_new(struct sg_worker *w, struct sg_config *cfg)
{
    struct sg_wsnap *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->budgets = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *s->budgets);
    if (!s->budgets || sg_pools_attach(w, cfg, &s->ups) < 0) {
        free(s->budgets);
        free(s);
        return NULL;
    }
    s->cfg = sg_config_ref(cfg);
    s->worker = w;
    return s;
}

static void wsnap_free(struct sg_wsnap *s)
{
    sg_pools_detach(s->ups, s->cfg->n_upstreams);
    free(s->budgets);
    sg_config_unref(s->cfg);
    free(s);
}

struct sg_wsnap *sg_wsnap_pin(struct sg_worker *w)
{
    w->snap->pins++;
    return w->snap;
}

void sg_wsnap_unpin(struct sg_wsnap *s)
{
    if (--s->pins == 0 && s->retired)
        wsnap_free(s);
}

/* Swaps the worker to a new snapshot; the old one lives on while requests
 * that started on it are pinned to it. */
static void worker_adopt(struct sg_worker *w, struct sg_config *cfg)
{
    struct sg_wsnap *s = wsnap_new(w, cfg);
    if (!s) {
        sg_error("worker %u: cannot adopt configuration generation %llu", w->id,
                 (unsigned long long)cfg->generation);
        return;
    }
    struct sg_wsnap *old = w->snap;
    w->snap = s;
    if (old) {
        old->retired = true;
        if (old->pins == 0)
            wsnap_free(old);
    }
}

/* ---- deferred frees ---------------------------------------------------- */

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_worker *w = arg;
    /* Frees may defer more frees: run until the list stays empty. */
    while (w->deferred) {
        struct sg_defer *d = w->deferred;
        w->deferred = NULL;
        while (d) {
            struct sg_defer *next = d->next;
            d->fn(d->arg);
            sg_mem_free(d);
            d = next;
        }
    }
}

void sg_worker_defer(struct sg_worker *w, sg_defer_fn fn, void *arg)
{
    struct sg_defer *d = sg_mem_malloc(sizeof *d);
    if (!d) { /* better a late free than a use after free */
        sg_error("out of memory deferring a free; leaking %p", arg);
        return;
    }
    d->fn = fn;
    d->arg = arg;
    d->next = w->deferred;
    w->deferred = d;
    event_active(w->defer_ev, EV_READ, 0);
}

/* ---- randomness and ids -------------------------------------------------- */

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256**: fast, per worker, seeded from getrandom. Not for secrets. */
uint64_t sg_worker_random(struct sg_worker *w)
{
    uint64_t *s = w->rng;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void sg_worker_request_id(struct sg_worker *w, char out[37])
{
    uint64_t a = sg_worker_random(w), b = sg_worker_random(w);
    a = (a & ~0xf000ull) | 0x4000ull; /* version 4 */
    b = (b & ~(3ull << 62)) | (2ull << 62); /* variant 10 */
    /* 8-4-4-4-12 lower-case hex digits, as "%08x-%04x-%04x-%04x-%012llx"
     * would print them (snprintf was the largest user-space cost of
     * starting an exchange). */
    static const char hex[] = "0123456789abcdef";
    char ha[16], hb[16];
    for (int i = 15; i >= 0; i--) {
        ha[i] = hex[a & 0xf];
        hb[i] = hex[b & 0xf];
        a >>= 4;
        b >>= 4;
    }
    memcpy(out, ha, 8);
    out[8] = '-';
    memcpy(out + 9, ha + 8, 4);
    out[13] = '-';
    memcpy(out + 14, ha + 12, 4);
    out[18] = '-';
    memcpy(out + 19, hb, 4);
    out[23] = '-';
    memcpy(out + 24, hb + 4, 12);
    out[36] = '\0';
}

/* ---- access log ------------------------------------------------------------ */

static void log_flush(struct sg_worker *w)
{
    while (evbuffer_get_length(w->access_log) > 0) {
        int n = evbuffer_write(w->access_log, STDOUT_FILENO);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) { /* stdout gone or broken: drop rather than block forever */
            evbuffer_drain(w->access_log, evbuffer_get_length(w->access_log));
            break;
        }
    }
}

static void log_cb(evutil_socket_t fd, short what, void *arg)
{
    log_flush(arg);
}

void sg_worker_log_commit(struct sg_worker *w)
{
    if (evbuffer_get_length(w->access_log) >= LOG_FLUSH_BYTES)
        log_flush(w);
    else
        event_active(w->log_ev, EV_READ, 0);
}

/* ---- metrics memo ------------------------------------------------------------ */

struct sg_metric_memo {
    const char *family, *route, *upstream, *extra;
    int code;
    sg_series_t id;
};

/* Keyed by pointers: the names of a snapshot and static label fragments.
 * A new snapshot just fills new entries; the registry hands back the same
 * series for the same label values. A collision only costs a lookup. */
sg_series_t sg_worker_series(struct sg_worker *w, const char *family, const char *route, const char *upstream,
                             const char *extra, int code)
{
    uintptr_t h = ((uintptr_t)family * 13u) ^ ((uintptr_t)route * 31u) ^ ((uintptr_t)upstream * 17u) ^
                  ((uintptr_t)extra * 7u) ^ (uintptr_t)(code + 1) * 2654435761u;
    struct sg_metric_memo *m = &w->memo[(h >> 4) % MEMO_SIZE];
    if (m->family == family && m->route == route && m->upstream == upstream && m->extra == extra &&
        m->code == code)
        return m->id;
    char r[256], u[256], labels[800];
    sg_metrics_label_escape(route, r, sizeof r);
    sg_metrics_label_escape(upstream, u, sizeof u);
    int n = snprintf(labels, sizeof labels, "route=\"%s\",upstream=\"%s\"%s", r, u, extra ? extra : "");
    if (code >= 0 && n > 0 && (size_t)n < sizeof labels)
        snprintf(labels + n, sizeof labels - (size_t)n, ",code=\"%d\"", code);
    *m = (struct sg_metric_memo){ family, route, upstream, extra, code, sg_metrics_series(family, labels) };
    return m->id;
}

sg_series_t sg_worker_series_requests(struct sg_worker *w, const char *route, const char *upstream, int code)
{
    return sg_worker_series(w, "strangler_requests_total", route, upstream, NULL, code);
}

sg_series_t sg_worker_series_duration(struct sg_worker *w, const char *route, const char *upstream)
{
    return sg_worker_series(w, "strangler_request_duration_seconds", route, upstream, NULL, -1);
}

/* ---- listeners ----------------------------------------------------------------- */

static void listeners_enable(struct sg_worker *w, bool on)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i].lev)
            (on ? evconnlistener_enable : evconnlistener_disable)(w->listeners[i].lev);
}

static bool over_connection_limit(struct sg_worker *w)
{
    uint32_t max = w->snap->cfg->limits.max_connections;
    return max && atomic_load_explicit(&w->server->conns, memory_order_relaxed) >= (long)max;
}

#define ACCEPT_PAUSE_MIN_MS 100u
#define ACCEPT_PAUSE_MAX_MS 1000u
#define ACCEPT_WARN_EVERY_MS 5000u

/* Accepting stops for a moment; it resumes when the timer fires, or
 * earlier when one of this worker's connections closes (which frees a slot
 * of limits.max_connections, or a file descriptor). One timer per worker,
 * however many listeners paused. */
static void accept_pause(struct sg_worker *w, uint64_t ms)
{
    listeners_enable(w, false);
    w->accept_paused = true;
    struct timeval tv = sg_tv_ms(ms);
    event_add(w->accept_ev, &tv);
}

static void accept_resume(struct sg_worker *w)
{
    if (!w->accept_paused || w->draining)
        return;
    w->accept_paused = false;
    event_del(w->accept_ev);
    listeners_enable(w, true);
}

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct sg_listener_rt *l = arg;
    struct sg_worker *w = l->worker;
    if (w->draining || over_connection_limit(w)) {
        close(fd);
        if (!w->draining)
            accept_pause(w, ACCEPT_PAUSE_MIN_MS);
        return;
    }
    w->accept_backoff_ms = 0; /* accept works again */
    atomic_fetch_add_explicit(&w->server->conns, 1, memory_order_relaxed);
    w->n_conns++;
    sg_h1s_accept(l, fd, sa, len);
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    accept_resume(arg);
}

/* accept() failed for a reason other than "try again": out of file
 * descriptors (EMFILE/ENFILE), or out of memory (ENOBUFS/ENOMEM). The
 * listening socket stays readable, so without a pause the loop would spin
 * at 100% CPU. Pause 100 ms, doubling up to 1 s while it keeps failing;
 * a connection closing resumes at once. Logged at most every 5 s per
 * worker, with the number of pauses in between. */
static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
    struct sg_listener_rt *l = arg;
    struct sg_worker *w = l->worker;
    int err = EVUTIL_SOCKET_ERROR();
    uint64_t ms = w->accept_backoff_ms ? w->accept_backoff_ms * 2 : ACCEPT_PAUSE_MIN_MS;
    w->accept_backoff_ms = ms < ACCEPT_PAUSE_MAX_MS ? ms : ACCEPT_PAUSE_MAX_MS;
    uint64_t now = sg_mono_ms();
    if (w->accept_warned_ms && now - w->accept_warned_ms < ACCEPT_WARN_EVERY_MS) {
        w->accept_suppressed++;
    } else {
        char more[64] = "";
        if (w->accept_suppressed)
            snprintf(more, sizeof more, " (%u more pauses since the last message)", w->accept_suppressed);
        sg_warn("listener %s: accept failed: %s; worker %u pauses accepting for %llums%s", l->name,
                evutil_socket_error_to_string(err), w->id, (unsigned long long)w->accept_backoff_ms, more);
        w->accept_warned_ms = now;
        w->accept_suppressed = 0;
    }
    accept_pause(w, w->accept_backoff_ms);
}

/* A draining worker stops once its clients and its shadows are done
 * (shadows end by their own deadline at the latest). */
void sg_worker_maybe_exit(struct sg_worker *w)
{
    if (w->draining && w->n_conns == 0 && w->n_shadows == 0)
        event_base_loopexit(w->base, NULL);
}

void sg_worker_conn_closed(struct sg_worker *w)
{
    atomic_fetch_sub_explicit(&w->server->conns, 1, memory_order_relaxed);
    w->n_conns--;
    if (w->draining) {
        sg_worker_maybe_exit(w);
        return;
    }
    if (!over_connection_limit(w))
        accept_resume(w);
}

/* ---- control messages from the main thread ------------------------------------- */

static void worker_drain(struct sg_worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    event_del(w->accept_ev);
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i].lev) {
            evconnlistener_free(w->listeners[i].lev);
            w->listeners[i].lev = NULL;
        }
    sg_h1s_drain_all(w);
    sg_h2s_drain_all(w); /* GOAWAY, then the final GOAWAY after a PING round trip */
    sg_worker_maybe_exit(w);
}

static void worker_stop(struct sg_worker *w);

/* The main thread's messages arrive through an eventfd, so the worker's
 * event base needs no locks (EVENT_BASE_FLAG_NOLOCK): nothing but this
 * file descriptor and the mutex-guarded mailbox crosses threads. */
static void mbox_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_worker *w = arg;
    uint64_t n;
    ssize_t r = read(fd, &n, sizeof n);
    (void)r;
    pthread_mutex_lock(&w->mbox_lock);
    struct sg_config *cfg = w->mbox_cfg;
    bool drain = w->mbox_drain, stop = w->mbox_stop;
    w->mbox_cfg = NULL;
    pthread_mutex_unlock(&w->mbox_lock);
    if (cfg) {
        worker_adopt(w, cfg);
        sg_config_unref(cfg);
    }
    if (stop)
        worker_stop(w);
    else if (drain)
        worker_drain(w);
}

static void mbox_kick(struct sg_worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->mbox_fd, &one, sizeof one);
    (void)r; /* EAGAIN: the counter is already non-zero, a wake-up is pending */
}

void sg_worker_post_config(struct sg_worker *w, struct sg_config *cfg)
{
    pthread_mutex_lock(&w->mbox_lock);
    if (w->mbox_cfg)
        sg_config_unref(w->mbox_cfg);
    w->mbox_cfg = sg_config_ref(cfg);
    pthread_mutex_unlock(&w->mbox_lock);
    mbox_kick(w);
}

void sg_worker_post_drain(struct sg_worker *w)
{
    pthread_mutex_lock(&w->mbox_lock);
    w->mbox_drain = true;
    pthread_mutex_unlock(&w->mbox_lock);
    mbox_kick(w);
}

/* ---- life cycle ------------------------------------------------------------------ */

/* Bufferevents add and delete their write interest around every response;
 * with the changelist, epoll sees one epoll_ctl per fd per loop turn with
 * the net change, instead of every intermediate one. */
static struct event_base *worker_base(void)
{
    struct event_config *ec = event_config_new();
    if (!ec)
        return NULL;
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK); /* see mbox_cb */
    struct event_base *base = event_base_new_with_config(ec);
    event_config_free(ec);
    return base ? base : event_base_new();
}

int sg_worker_init(struct sg_worker *w, struct sg_server *srv, unsigned id, struct sg_config *cfg)
{
    memset(w, 0, sizeof *w);
    w->mbox_fd = -1;
    w->id = id;
    w->server = srv;
    pthread_mutex_init(&w->mbox_lock, NULL);
    if (getrandom(w->rng, sizeof w->rng, 0) != sizeof w->rng)
        for (int i = 0; i < 4; i++)
            w->rng[i] = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)w ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull);
    w->base = worker_base();
    if (!w->base)
        return -1;
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!w->dns)
        w->dns = evdns_base_new(w->base, 0); /* no resolv.conf: /etc/hosts and literals still work */
    w->metrics = sg_metrics_shard_new();
    w->memo = calloc(MEMO_SIZE, sizeof *w->memo);
    w->access_log = evbuffer_new();
    w->defer_ev = event_new(w->base, -1, 0, defer_cb, w);
    w->log_ev = event_new(w->base, -1, 0, log_cb, w);
    w->accept_ev = evtimer_new(w->base, accept_resume_cb, w);
    w->mbox_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->mbox_ev = w->mbox_fd < 0 ? NULL : event_new(w->base, w->mbox_fd, EV_READ | EV_PERSIST, mbox_cb, w);
    if (w->mbox_ev)
        event_add(w->mbox_ev, NULL);
    if (!w->dns || !w->metrics || !w->memo || !w->access_log || !w->defer_ev || !w->log_ev || !w->mbox_ev ||
        !w->accept_ev)
        return -1;
    /* The log and the frees run after the turn's other callbacks. */
    event_priority_set(w->defer_ev, 0);
    worker_adopt(w, cfg);
    return w->snap ? 0 : -1;
}

/* fds[i]: this worker's bound socket for listener i. */
int sg_worker_listen(struct sg_worker *w, const int *fds, size_t n, char *const *names)
{
    w->listeners = calloc(n, sizeof *w->listeners);
    if (!w->listeners)
        return -1;
    w->n_listeners = n;
    for (size_t i = 0; i < n; i++) {
        struct sg_listener_rt *l = &w->listeners[i];
        l->worker = w;
        l->name = names[i];
        l->index = i;
        l->fd = fds[i];
        l->tls = w->snap->cfg->listeners[i].tls != NULL;
        char buf[300], labels[320];
        snprintf(labels, sizeof labels, "listener=\"%s\"", sg_metrics_label_escape(names[i], buf, sizeof buf));
        l->conn_gauge = sg_metrics_series("strangler_downstream_connections", labels);
        l->lev = evconnlistener_new(w->base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE, -1, fds[i]);
        if (!l->lev)
            return -1;
        evconnlistener_set_error_cb(l->lev, accept_error_cb);
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct sg_worker *w = arg;
    bool uring = w->snap->cfg->io_uring;
    int uerr, io = sg_io_thread_enter(w->base, uring, &uerr);
    if (io < 0)
        sg_warn("worker %u: write-through off (out of memory)", w->id);
    else if (uring && io == 0 && !w->server->io_uring_error)
        sg_warn("worker %u: io_uring: %s; plain system calls", w->id, strerror(uerr));
    event_base_dispatch(w->base);
    sg_h1s_close_all(w);
    sg_h2s_close_all(w);
    sg_shadows_abort_all(w);
    for (struct sg_pool *p = w->pools; p; p = p->next)
        sg_h2c_close_all(p); /* upstream HTTP/2 sessions, while the loop's objects still exist */
    defer_cb(-1, 0, w);
    /* A bufferevent freed with a deferred callback still queued (a read
     * trigger, an event report) is only released when that callback has
     * run; event_base_free cancels such callbacks without releasing it.
     * One more non-blocking turn lets them run (with the owners' callbacks
     * already cleared), then their frees. */
    event_base_loop(w->base, EVLOOP_NONBLOCK);
    defer_cb(-1, 0, w);
    sg_exchange_thread_exit();
    sg_h2_thread_exit();
    log_flush(w);
    sg_io_thread_leave();
    sg_mem_thread_exit(); /* last: what was freed above went to this thread's cache */
    if (w->server->on_worker_exit)
        w->server->on_worker_exit(w->server);
    return NULL;
}

int sg_worker_start(struct sg_worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void sg_worker_join(struct sg_worker *w)
{
    pthread_join(w->thread, NULL);
}

/* Forced end of a drain: every connection closes, the loop stops. */
static void worker_stop(struct sg_worker *w)
{
    worker_drain(w);
    sg_h1s_close_all(w);
    sg_h2s_close_all(w);
    event_base_loopexit(w->base, NULL);
}

void sg_worker_post_stop(struct sg_worker *w)
{
    pthread_mutex_lock(&w->mbox_lock);
    w->mbox_stop = true;
    pthread_mutex_unlock(&w->mbox_lock);
    mbox_kick(w);
}

void sg_worker_destroy(struct sg_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i].lev)
            evconnlistener_free(w->listeners[i].lev);
    free(w->listeners);
    sg_pools_free_all(w);
    if (w->snap) {
        w->snap->retired = true;
        if (w->snap->pins == 0)
            wsnap_free(w->snap);
    }
    if (w->mbox_cfg)
        sg_config_unref(w->mbox_cfg);
    if (w->dns)
        evdns_base_free(w->dns, 0);
    event_free(w->defer_ev);
    event_free(w->log_ev);
    if (w->accept_ev)
        event_free(w->accept_ev);
    event_free(w->mbox_ev);
    if (w->mbox_fd >= 0)
        close(w->mbox_fd);
    evbuffer_free(w->access_log);
    free(w->memo);
    if (w->base)
        event_base_free(w->base);
    pthread_mutex_destroy(&w->mbox_lock);
}
