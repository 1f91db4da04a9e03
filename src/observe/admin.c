#include "strangler/admin.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/compare.h"
#include "strangler/config_json.h"
#include "strangler/health.h"
#include "strangler/json.h"
#include "strangler/listen.h"
#include "strangler/metrics.h"
#include "strangler/worker.h"

struct sg_admin {
    struct evhttp *http;
    struct sg_server *srv;
};

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    evbuffer_add(b, text, strlen(text));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; charset=utf-8");
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

static bool is_get(struct evhttp_request *req)
{
    enum evhttp_cmd_type t = evhttp_request_get_command(req);
    return t == EVHTTP_REQ_GET || t == EVHTTP_REQ_HEAD;
}

static void metrics_cb(struct evhttp_request *req, void *arg)
{
    if (!is_get(req)) {
        reply_text(req, 405, "Method Not Allowed", "use GET\n");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    sg_endpoints_refresh_gauges(((struct sg_admin *)arg)->srv->cfg);
    sg_metrics_render(b);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; version=0.0.4");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void ready_cb(struct evhttp_request *req, void *arg)
{
    struct sg_admin *a = arg;
    if (atomic_load(&a->srv->draining))
        reply_text(req, 503, "Service Unavailable", "draining\n");
    else
        reply_text(req, 200, "OK", "ready\n");
}

static void live_cb(struct evhttp_request *req, void *arg)
{
    reply_text(req, 200, "OK", "live\n");
}

static void reply_json(struct evhttp_request *req, int code, const char *reason, struct evbuffer *b)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, reason, b);
}

/* A GET-only endpoint answering a JSON document that render writes. */
static void get_json(struct evhttp_request *req, void (*render)(struct evbuffer *b, void *ctx), void *ctx)
{
    if (!is_get(req)) {
        reply_text(req, 405, "Method Not Allowed", "use GET\n");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    render(b, ctx);
    reply_json(req, 200, "OK", b);
    evbuffer_free(b);
}

static void render_config(struct evbuffer *b, void *arg)
{
    struct sg_admin *a = arg;
    sg_config_json(b, a->srv->cfg);
}

static void config_cb(struct evhttp_request *req, void *arg)
{
    get_json(req, render_config, arg);
}

/* POST /reload: the same path as SIGHUP and the file watcher, with the
 * outcome (and every error) in the answer. */
static void reload_cb(struct evhttp_request *req, void *arg)
{
    struct sg_admin *a = arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        reply_text(req, 405, "Method Not Allowed", "use POST\n");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    struct sg_config_errors errs;
    if (sg_server_reload(a->srv, &errs)) {
        evbuffer_add_printf(b, "{\"result\":\"success\",\"generation\":%llu}\n",
                            (unsigned long long)a->srv->cfg->generation);
        reply_json(req, 200, "OK", b);
    } else {
        evbuffer_add_printf(b, "{\"result\":\"failure\",\"generation\":%llu,\"errors\":[",
                            (unsigned long long)a->srv->cfg->generation);
        for (size_t i = 0; i < errs.n; i++) {
            if (i)
                evbuffer_add(b, ",", 1);
            sg_json_str(b, errs.msgs[i], strlen(errs.msgs[i]), 0);
        }
        evbuffer_add(b, "]}\n", 3);
        reply_json(req, 400, "Bad Request", b);
    }
    sg_config_errors_free(&errs);
    evbuffer_free(b);
}

static void render_diffs(struct evbuffer *b, void *arg)
{
    (void)arg;
    sg_compare_report(b);
}

/* GET /mirror/diffs: comparison results per route and mirror upstream. */
static void diffs_cb(struct evhttp_request *req, void *arg)
{
    get_json(req, render_diffs, arg);
}

/* POST /mirror/diffs/reset: starts the report afresh (learnt noise and
 * metrics stay). */
static void diffs_reset_cb(struct evhttp_request *req, void *arg)
{
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        reply_text(req, 405, "Method Not Allowed", "use POST\n");
        return;
    }
    sg_compare_reset();
    reply_text(req, 200, "OK", "reset\n");
}

static void other_cb(struct evhttp_request *req, void *arg)
{
    reply_text(req, 404, "Not Found", "admin endpoints: GET /metrics /ready /live /config /mirror/diffs, POST /reload /mirror/diffs/reset\n");
}

struct sg_admin *sg_admin_start(struct event_base *base, struct sg_server *srv, const struct sg_hostport *addr,
                                char *bound, size_t bound_len, char *errbuf, size_t errlen)
{
    struct sg_admin *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->srv = srv;
    a->http = evhttp_new(base);
    if (!a->http) {
        free(a);
        return NULL;
    }
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_cb(a->http, "/metrics", metrics_cb, a);
    evhttp_set_cb(a->http, "/ready", ready_cb, a);
    evhttp_set_cb(a->http, "/live", live_cb, a);
    evhttp_set_cb(a->http, "/config", config_cb, a);
    evhttp_set_cb(a->http, "/reload", reload_cb, a);
    evhttp_set_cb(a->http, "/mirror/diffs", diffs_cb, a);
    evhttp_set_cb(a->http, "/mirror/diffs/reset", diffs_reset_cb, a);
    evhttp_set_gencb(a->http, other_cb, a);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(a->http, addr->host, addr->port);
    if (!bs) {
        snprintf(errbuf, errlen, "cannot bind admin address %s:%u", addr->host, addr->port);
        sg_admin_free(a);
        return NULL;
    }
    sg_sockname(evhttp_bound_socket_get_fd(bs), bound, bound_len);
    return a;
}

void sg_admin_free(struct sg_admin *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    free(a);
}
