/* strangler: command line, start-up, signals. */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "strangler/admin.h"
#include "strangler/compare.h"
#include "strangler/config.h"
#include "strangler/h1_client.h"
#include "strangler/h1_server.h"
#include "strangler/h2_server.h"
#include "strangler/health.h"
#include "strangler/io.h"
#include "strangler/listen.h"
#include "strangler/log.h"
#include "strangler/mem.h"
#include "strangler/metrics.h"
#include "strangler/prober.h"
#include "strangler/watch.h"
#include "strangler/worker.h"

enum { EXIT_CONFIG = 1, EXIT_RUNTIME = 2 };

struct options {
    const char *config;
    const char *ready_file;
    bool check;
};

struct app {
    struct sg_server srv;
    struct event_base *base;
    struct sg_admin *admin;
    struct event *sig_term, *sig_int, *sig_hup, *worker_exit_ev, *drain_timer;
    atomic_uint exited;
    struct sg_watch *watch;
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: strangler [-c FILE] [--check] [--ready-file PATH]\n"
            "\n"
            "  -c, --config FILE     configuration (default: $STRANGLER_CONFIG, then\n"
            "                        /etc/strangler/strangler.yaml)\n"
            "      --check           validate the configuration and exit (0 valid, 1 invalid)\n"
            "      --ready-file PATH once every listener and the admin port are bound, write\n"
            "                        name=HOST:PORT lines (listeners, then admin=) to PATH\n"
            "      --log-level LEVEL debug | info | warn | error (default info)\n"
            "  -v, --version         print the version\n"
            "  -h, --help            this help\n"
            "\n"
            "Exit codes: 0 clean exit, 1 configuration error, 2 runtime failure at start.\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' }, { "check", no_argument, NULL, 'C' },
        { "ready-file", required_argument, NULL, 'r' }, { "log-level", required_argument, NULL, 'l' },
        { "version", no_argument, NULL, 'v' }, { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': o->config = optarg; break;
        case 'C': o->check = true; break;
        case 'r': o->ready_file = optarg; break;
        case 'l':
            if (!strcmp(optarg, "debug")) sg_log_threshold = SG_LOG_DEBUG;
            else if (!strcmp(optarg, "info")) sg_log_threshold = SG_LOG_INFO;
            else if (!strcmp(optarg, "warn")) sg_log_threshold = SG_LOG_WARN;
            else if (!strcmp(optarg, "error")) sg_log_threshold = SG_LOG_ERROR;
            else {
                fprintf(stderr, "strangler: unknown log level '%s'\n", optarg);
                return EXIT_CONFIG;
            }
            break;
        case 'v': printf("strangler %s\n", SG_VERSION); exit(0);
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return EXIT_CONFIG;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "strangler: unexpected argument '%s'\n", argv[optind]);
        return EXIT_CONFIG;
    }
    if (!o->config)
        o->config = getenv("STRANGLER_CONFIG");
    if (!o->config || !*o->config)
        o->config = "/etc/strangler/strangler.yaml";
    return 0;
}

static struct sg_config *load(const char *path)
{
    struct sg_config_errors errs = { 0 };
    struct sg_config *cfg = sg_config_load(path, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.msgs[i]);
    sg_config_errors_free(&errs);
    return cfg;
}

static void register_metrics(struct app *a)
{
    sg_metrics_family("strangler_requests_total", SG_METRIC_COUNTER, "Client requests by route, upstream and status.");
    sg_metrics_family("strangler_request_duration_seconds", SG_METRIC_HISTOGRAM,
                      "Time from request head to the end of the response.");
    sg_metrics_family("strangler_upstream_connect_failures_total", SG_METRIC_COUNTER,
                      "Failed connection attempts to upstream endpoints.");
    sg_metrics_family("strangler_upstream_connections", SG_METRIC_GAUGE, "Upstream connections by state.");
    sg_metrics_family("strangler_mirror_requests_total", SG_METRIC_COUNTER, "Shadow requests sent or dropped.");
    sg_metrics_family("strangler_mirror_responses_total", SG_METRIC_COUNTER, "Shadow responses by status.");
    sg_metrics_family("strangler_mirror_comparisons_total", SG_METRIC_COUNTER,
                      "Shadow responses compared with the primary's, by result.");
    sg_metrics_family("strangler_mirror_diff_fields_total", SG_METRIC_COUNTER,
                      "Mismatches by differing JSON Pointer (the first 20 per route and upstream; the rest: other).");
    sg_metrics_family("strangler_mirror_noise_probes_total", SG_METRIC_COUNTER,
                      "Noise probes (a GET/HEAD sent twice to the primary's upstream) by result.");
    sg_compare_init();
    sg_metrics_family("strangler_downstream_connections", SG_METRIC_GAUGE, "Open client connections by listener.");
    sg_metrics_family("strangler_config_reloads_total", SG_METRIC_COUNTER, "Configuration reloads by result.");
    sg_metrics_family("strangler_config_generation", SG_METRIC_GAUGE, "Generation of the configuration in use.");
    sg_metrics_family("strangler_retries_total", SG_METRIC_COUNTER,
                      "Retries by route and upstream: sent, or denied by the retry budget.");
    sg_health_register_metrics();
    a->srv.reload_ok = sg_metrics_series("strangler_config_reloads_total", "result=\"success\"");
    a->srv.reload_fail = sg_metrics_series("strangler_config_reloads_total", "result=\"failure\"");
    a->srv.generation_gauge = sg_metrics_series("strangler_config_generation", "");
}

/* ---- signals and shutdown ---------------------------------------------------- */

static void on_worker_exit(struct sg_server *srv)
{
    struct app *a = srv->main_ctx;
    atomic_fetch_add(&a->exited, 1);
    event_active(a->worker_exit_ev, EV_READ, 0);
}

static void worker_exit_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    if (atomic_load(&a->exited) == a->srv.n_workers)
        event_base_loopexit(a->base, NULL);
}

static void drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    sg_warn("drain timeout reached: closing the remaining connections");
    for (size_t i = 0; i < a->srv.n_workers; i++)
        sg_worker_post_stop(&a->srv.workers[i]);
}

static void begin_drain(struct app *a, uint64_t timeout_ms)
{
    if (atomic_exchange(&a->srv.draining, 1)) {
        drain_timeout_cb(-1, 0, a); /* second signal: stop now */
        return;
    }
    sg_info("draining: no new connections, finishing in-flight requests (at most %llums)",
            (unsigned long long)timeout_ms);
    for (size_t i = 0; i < a->srv.n_workers; i++)
        sg_worker_post_drain(&a->srv.workers[i]);
    struct timeval tv = { (time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000 * 1000) };
    a->drain_timer = evtimer_new(a->base, drain_timeout_cb, a);
    evtimer_add(a->drain_timer, &tv);
}

static void sigterm_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    begin_drain(a, a->srv.cfg->drain_timeout_ms);
}

static void sigint_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    uint64_t t = a->srv.cfg->drain_timeout_ms;
    begin_drain(a, t < 2000 ? t : 2000); /* interactive: the same, faster */
}

static void sighup_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    struct sg_config_errors errs;
    sg_server_reload(&a->srv, &errs);
    sg_config_errors_free(&errs);
}

/* ---- start ---------------------------------------------------------------------- */

static int write_ready_file(const char *path, char **lines, size_t n)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s\n", lines[i]);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return -1;
    return 0;
}

/* Binds every listener (one socket per worker) and hands them out. */
static int bind_listeners(struct app *a, char **ready, size_t *n_ready)
{
    struct sg_config *cfg = a->srv.cfg;
    size_t nw = a->srv.n_workers, nl = cfg->n_listeners;
    int *fds = calloc(nw * nl, sizeof *fds);
    int *row = calloc(nl, sizeof *row);
    a->srv.listener_names = calloc(nl, sizeof *a->srv.listener_names);
    if (!fds || !row || !a->srv.listener_names) {
        free(fds);
        free(row);
        return -1;
    }
    int rc = 0;
    for (size_t l = 0; l < nl && rc == 0; l++) {
        char bound[300], err[300];
        a->srv.listener_names[l] = strdup(cfg->listeners[l].name);
        a->srv.n_listener_names = l + 1;
        if (sg_listen_bind(&cfg->listeners[l].addr, nw, fds + l * nw, bound, sizeof bound, err, sizeof err) < 0) {
            sg_error("listener %s (%s:%u): %s", cfg->listeners[l].name, cfg->listeners[l].addr.host,
                     cfg->listeners[l].addr.port, err);
            rc = -1;
            break;
        }
        if (asprintf(&ready[(*n_ready)++], "%s=%s", cfg->listeners[l].name, bound) < 0)
            rc = -1;
        sg_info("listener %s on %s (%zu workers)", cfg->listeners[l].name, bound, nw);
    }
    for (size_t w = 0; w < nw && rc == 0; w++) {
        for (size_t l = 0; l < nl; l++)
            row[l] = fds[l * nw + w];
        if (sg_worker_listen(&a->srv.workers[w], row, nl, a->srv.listener_names) < 0)
            rc = -1;
    }
    free(fds);
    free(row);
    return rc;
}

/* What the workers' sockets go through, for the start-up line. */
static const char *io_mode(const struct sg_server *srv, char *buf, size_t len)
{
    if (!srv->cfg->io_uring)
        return "plain system calls (io_uring: off)";
    if (!srv->io_uring_error)
        return "io_uring";
    snprintf(buf, len, "plain system calls (io_uring unavailable: %s)", strerror(srv->io_uring_error));
    return buf;
}

static int start_workers(struct app *a, const struct options *o, char **ready, size_t *n_ready)
{
    struct sg_config *cfg = a->srv.cfg;
    if (cfg->n_listeners > 64 || bind_listeners(a, ready, n_ready) < 0)
        return -1;
    char bound[300], err[300];
    a->admin = sg_admin_start(a->base, &a->srv, &cfg->admin, bound, sizeof bound, err, sizeof err);
    if (!a->admin) {
        sg_error("%s", err);
        return -1;
    }
    sg_info("admin on %s", bound);
    if (asprintf(&ready[(*n_ready)++], "admin=%s", bound) < 0)
        return -1;
    /* Once here rather than in every worker: each worker still sets up
     * its own ring, and says so only if it fails where this did not. */
    a->srv.io_uring_error = cfg->io_uring ? sg_io_uring_probe() : 0;
    for (size_t i = 0; i < cfg->workers; i++)
        if (sg_worker_start(&a->srv.workers[i]) < 0)
            return -1;
    if (o->ready_file && write_ready_file(o->ready_file, ready, *n_ready) < 0) {
        sg_error("cannot write ready file %s: %s", o->ready_file, strerror(errno));
        return -1;
    }
    return 0;
}

static int start(struct app *a, const struct options *o)
{
    struct sg_config *cfg = a->srv.cfg;
    char err[600];
    if (!sg_server_prepare(cfg, err, sizeof err)) {
        sg_error("%s", err);
        return -1;
    }
    sg_h1s_io_register(); /* the parsers io.c may hand reads to */
    sg_h1c_io_register();
    sg_h2s_io_register();
    a->srv.n_workers = cfg->workers;
    a->srv.workers = calloc(cfg->workers, sizeof *a->srv.workers);
    a->srv.on_worker_exit = on_worker_exit;
    a->srv.main_ctx = a;
    if (!a->srv.workers)
        return -1;
    for (unsigned i = 0; i < cfg->workers; i++)
        if (sg_worker_init(&a->srv.workers[i], &a->srv, i, cfg) < 0) {
            sg_error("cannot initialise worker %u", i);
            return -1;
        }
    char *ready[64 + 1] = { 0 };
    size_t n_ready = 0;
    int rc = start_workers(a, o, ready, &n_ready);
    for (size_t i = 0; i < n_ready; i++)
        free(ready[i]);
    return rc;
}

static void setup_signals(struct app *a)
{
    signal(SIGPIPE, SIG_IGN);
    a->sig_term = evsignal_new(a->base, SIGTERM, sigterm_cb, a);
    a->sig_int = evsignal_new(a->base, SIGINT, sigint_cb, a);
    a->sig_hup = evsignal_new(a->base, SIGHUP, sighup_cb, a);
    evsignal_add(a->sig_term, NULL);
    evsignal_add(a->sig_int, NULL);
    evsignal_add(a->sig_hup, NULL);
    a->worker_exit_ev = event_new(a->base, -1, 0, worker_exit_cb, a);
}

static void cleanup(struct app *a)
{
    for (size_t i = 0; i < a->srv.n_workers; i++)
        sg_worker_destroy(&a->srv.workers[i]);
    free(a->srv.workers);
    for (size_t i = 0; i < a->srv.n_listener_names; i++)
        free(a->srv.listener_names[i]);
    free(a->srv.listener_names);
    sg_watch_free(a->watch);
    sg_prober_free(a->srv.prober);
    sg_admin_free(a->admin);
    event_free(a->sig_term);
    event_free(a->sig_int);
    event_free(a->sig_hup);
    event_free(a->worker_exit_ev);
    if (a->drain_timer)
        event_free(a->drain_timer);
    event_base_free(a->base);
    sg_config_unref(a->srv.cfg);
}

int main(int argc, char **argv)
{
    sg_mem_install(); /* before anything touches libevent */
    struct options o = { 0 };
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    struct sg_config *cfg = load(o.config);
    if (!cfg)
        return EXIT_CONFIG;
    if (o.check) {
        printf("%s: configuration valid (%zu listeners, %zu upstreams, %zu routes)\n", o.config, cfg->n_listeners,
               cfg->n_upstreams, cfg->n_routes);
        sg_config_unref(cfg);
        return 0;
    }
    evthread_use_pthreads();
    static struct app a;
    a.srv.cfg = cfg;
    cfg->generation = 1;
    atomic_store(&a.srv.generation, 1);
    a.base = event_base_new();
    if (!a.base)
        return EXIT_RUNTIME;
    a.srv.shard = sg_metrics_shard_new();
    register_metrics(&a);
    sg_metrics_gauge_set(a.srv.generation_gauge, 1);
    setup_signals(&a);
    if (start(&a, &o) < 0)
        return EXIT_RUNTIME; /* nothing started yet: workers start last */
    /* Any kind of write to the file reloads it (watch.c). */
    a.watch = sg_watch_start(a.base, &a.srv);
    /* Active health checks run here, on the main thread: once per endpoint
     * per interval for the process, whatever the number of workers. */
    a.srv.prober = sg_prober_new(a.base, a.srv.shard);
    sg_prober_update(a.srv.prober, a.srv.cfg);
    char io[160];
    sg_info("strangler %s running with %zu workers; socket I/O: %s", SG_VERSION, a.srv.n_workers,
            io_mode(&a.srv, io, sizeof io));
    event_base_dispatch(a.base);
    for (size_t i = 0; i < a.srv.n_workers; i++)
        sg_worker_join(&a.srv.workers[i]);
    sg_info("stopped");
    cleanup(&a);
    return 0;
}
