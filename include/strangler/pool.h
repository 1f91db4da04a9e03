/* Upstream connection pools: per worker, per (upstream, endpoint).
 *
 * A pool hands out connected bufferevents, keeps finished keep-alive
 * connections on a LIFO idle list (warmest first), closes them after the
 * upstream's idle_timeout or when the peer closes them, and enforces the
 * upstream's max_connections (connections in use, across workers) with
 * process-wide atomics per upstream name. Endpoint names are resolved with evdns and re-resolved every
 * dns_refresh; IP literals never touch the resolver. */
#ifndef STRANGLER_POOL_H
#define STRANGLER_POOL_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/event_struct.h>
#include <event2/util.h>

#include "strangler/config.h"
#include "strangler/deadline.h"
#include "strangler/metrics.h"

struct bufferevent;
struct event;
struct sg_worker;
struct sg_pool;
struct sg_uconn;
struct sg_h2c_sess;
struct sg_endpoint;

/* Named error sentinels, compared by pointer, printed as they are. */
extern const char sg_err_connect[]; /* "upstream connect failed" */
extern const char sg_err_connect_timeout[]; /* "upstream connect timed out" */
extern const char sg_err_resolve[]; /* "upstream name did not resolve" */
extern const char sg_err_overloaded[]; /* "upstream max_connections reached" */
extern const char sg_err_reset[]; /* "upstream reset the connection" */
extern const char sg_err_invalid_response[]; /* "upstream sent an invalid response" */
extern const char sg_err_timeout[]; /* "upstream timed out" */
extern const char sg_err_tls[]; /* "upstream TLS handshake failed" */
extern const char sg_err_no_endpoint[]; /* "upstream unavailable: no healthy endpoint" */
extern const char sg_err_no_fd[]; /* "proxy out of file descriptors" (socket() failed locally) */

typedef void (*sg_acquire_cb)(void *arg, struct sg_uconn *c, const char *err);

/* A request waiting for a connection; embedded in its owner, cancellable. */
struct sg_acquire {
    sg_acquire_cb cb;
    void *arg;
    struct sg_uconn *conn; /* the connection being made for it, while pending */
    struct sg_h2c_sess *session; /* HTTP/2: the session it waits on / was given */
};

enum sg_uconn_state { SG_UC_RESOLVING, SG_UC_CONNECTING, SG_UC_ACTIVE, SG_UC_IDLE };

struct sg_uconn {
    struct sg_pool *pool;
    struct bufferevent *bev;
    enum sg_uconn_state state;
    struct sg_acquire *waiter; /* RESOLVING/CONNECTING on someone's behalf */
    unsigned requests; /* exchanges served on this connection */
    struct event timer; /* connect timeout, then idle timeout */
    struct sg_deadline deadline; /* of `timer`, kept lazily (deadline.h) */
    TAILQ_ENTRY(sg_uconn) link; /* idle list or resolving list */
};

TAILQ_HEAD(sg_uconn_list, sg_uconn);

/* Process-wide, per upstream name: survives snapshots. */
struct sg_upstream_shared {
    char *name;
    atomic_int conns; /* open: connecting, in use or idle */
    atomic_int busy; /* connecting or in use: what max_connections bounds */
    struct sg_upstream_shared *next;
};

struct sg_pool {
    struct sg_worker *worker;
    char *key; /* "upstream|host:port" */
    char *upstream_name;
    char *host;
    uint16_t port;
    bool literal; /* host is an IP address */
    bool mirror; /* carries shadows only */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool resolved, resolving;
    uint64_t resolved_at_ms;
    uint64_t dns_refresh_ms, connect_timeout_ms, idle_timeout_ms;
    uint32_t max_connections; /* of its upstream, across workers */
    struct ssl_ctx_st *ssl_ctx; /* upstream tls: a reference, NULL for plaintext */
    char *tls_name; /* SNI and the name the certificate must match */
    bool tls_verify;
    struct sg_upstream_shared *shared;
    struct sg_endpoint *ep; /* process-wide health of (upstream, host, port), health.h */
    struct sg_uconn_list idle, resolving_list;
    TAILQ_HEAD(, sg_h2c_sess) h2_sessions; /* protocol h2c/h2: multiplexed connections */
    bool h2; /* the upstream speaks HTTP/2 */
    unsigned n_idle, n_active; /* n_active: connecting + in use */
    unsigned in_flight; /* exchanges using it (least_request) */
    sg_series_t g_active, g_idle, c_connect_fail;
    uint64_t last_warn_ms; /* error-log rate limit */
    unsigned suppressed;
    struct sg_pool *next;
};

/* Per worker, per snapshot: the upstream's endpoints as pools. */
struct sg_upstream_rt {
    const struct sg_upstream *cfg;
    struct sg_pool **pools; /* one per endpoint */
    struct sg_pool **mirror_pools; /* the same endpoints, for shadows only */
    size_t n_pools;
    unsigned rr;
    struct sg_upstream_shared *shared;
};

/* Builds ws->ups for a snapshot, reusing the worker's pools by key. */
int sg_pools_attach(struct sg_worker *w, const struct sg_config *cfg, struct sg_upstream_rt **out);
void sg_pools_detach(struct sg_upstream_rt *ups, size_t n);
void sg_pools_free_all(struct sg_worker *w);

/* Picks an endpoint by the upstream's balance policy among those in
 * rotation (not failed by a health check, not ejected by outlier
 * detection), avoiding the `tried` pools (this request's earlier attempts)
 * while another exists; from the shadow-only pools when `mirror`. NULL when
 * no endpoint is in rotation: the caller answers 503 without trying to
 * connect. */
struct sg_pool *sg_upstream_pick(struct sg_upstream_rt *u, struct sg_worker *w, const struct sg_pool *const *tried,
                                 size_t n_tried, bool mirror);

enum sg_acquire_result { SG_ACQ_READY, SG_ACQ_PENDING, SG_ACQ_FAILED };

/* An idle connection (READY, *out set) or a new one (PENDING: a->cb runs
 * later, never before this returns) or FAILED (*err set). `fresh` skips the
 * idle list (a retry after a stale keep-alive connection failed). */
enum sg_acquire_result sg_pool_acquire(struct sg_pool *p, struct sg_acquire *a, bool fresh, struct sg_uconn **out,
                                       const char **err);
/* Withdraws a pending acquire; a connection already on its way is kept
 * for the idle list. */
void sg_acquire_cancel(struct sg_acquire *a);

/* Returns a connection after an exchange: to the idle list when `reuse`,
 * closed otherwise. The caller must have removed its own callbacks. */
void sg_uconn_release(struct sg_uconn *c, bool reuse);

/* The getaddrinfo hints every upstream name is resolved with (pools and
 * the health prober): TCP, IPv4 or IPv6, families this host has
 * addresses in. */
void sg_upstream_hints(struct evutil_addrinfo *hints);

/* Number of process-wide connections of an upstream (for tests/metrics). */
int sg_upstream_conns(const struct sg_upstream_rt *u);

#endif
