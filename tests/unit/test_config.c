/* The configuration loader: every field of the contract compiled to the
 * expected values, and every class of mistake reported with its exact
 * FILE:LINE:COLUMN message. Inline YAML goes through
 * sg_config_load_buffer("cfg.yaml", ...); whole files live in
 * $SG_TEST_DATA/config/. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "strangler/config.h"

/* A valid head that tests append routes to: 4 lines, so the first line
 * of what follows is line 5. Upstreams "a" and "b" exist. */
#define BASE                                                                                                  \
    "listeners: [{ name: l, address: 127.0.0.1:0 }]\n"                                                        \
    "upstreams:\n"                                                                                            \
    "  a: { endpoints: [127.0.0.1:1] }\n"                                                                     \
    "  b: { endpoints: [127.0.0.1:2] }\n"

/* One route that only needs a name and one destination. */
#define ROUTE_OK "routes: [{ name: r, destinations: [{ upstream: a }] }]\n"

static void print_errors(const struct sg_config_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        print_message("  got: %s\n", errs->msgs[i]);
}

static struct sg_config *load_ok(const char *yaml)
{
    struct sg_config_errors errs = { 0 };
    struct sg_config *cfg = sg_config_load_buffer("cfg.yaml", yaml, strlen(yaml), &errs);
    if (!cfg) {
        print_errors(&errs);
        sg_config_errors_free(&errs);
        fail_msg("expected the configuration to load");
    }
    assert_int_equal(errs.n, 0);
    return cfg;
}

/* Frees errs either way, so that a failing test does not also leak. */
static void check_errors(struct sg_config_errors *errs, const char *const *want, size_t n_want)
{
    bool same = errs->n == n_want;
    for (size_t i = 0; same && i < n_want; i++)
        same = strcmp(errs->msgs[i], want[i]) == 0;
    if (!same) {
        for (size_t i = 0; i < n_want; i++)
            print_message("  want: %s\n", want[i]);
        print_errors(errs);
    }
    sg_config_errors_free(errs);
    if (!same)
        fail_msg("errors differ");
}

static void expect_errors(const char *yaml, const char *const *want, size_t n_want)
{
    struct sg_config_errors errs = { 0 };
    struct sg_config *cfg = sg_config_load_buffer("cfg.yaml", yaml, strlen(yaml), &errs);
    sg_config_unref(cfg);
    assert_null(cfg);
    check_errors(&errs, want, n_want);
}

#define EXPECT_ERRORS(yaml, ...)                                                                              \
    do {                                                                                                      \
        const char *const want_[] = { __VA_ARGS__ };                                                         \
        expect_errors(yaml, want_, sizeof want_ / sizeof want_[0]);                                          \
    } while (0)

static char *data_path(const char *name)
{
    const char *dir = getenv("SG_TEST_DATA");
    if (!dir)
        fail_msg("SG_TEST_DATA is not set (it points at tests/data)");
    size_t n = strlen(dir) + strlen(name) + 16;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/config/%s", dir, name);
    return p;
}

static void expect_file_errors(const char *name, const char *const *want, size_t n_want)
{
    char *path = data_path(name);
    struct sg_config_errors errs = { 0 };
    struct sg_config *cfg = sg_config_load(path, &errs);
    sg_config_unref(cfg);
    assert_null(cfg);
    /* Messages start with the path as given; compare what follows it. */
    size_t plen = strlen(path);
    for (size_t i = 0; i < errs.n; i++) {
        if (strncmp(errs.msgs[i], path, plen) == 0 && errs.msgs[i][plen] == ':')
            memmove(errs.msgs[i], errs.msgs[i] + plen + 1, strlen(errs.msgs[i] + plen + 1) + 1);
    }
    free(path);
    check_errors(&errs, want, n_want);
}

#define EXPECT_FILE_ERRORS(name, ...)                                                                         \
    do {                                                                                                      \
        const char *const want_[] = { __VA_ARGS__ };                                                         \
        expect_file_errors(name, want_, sizeof want_ / sizeof want_[0]);                                     \
    } while (0)

/* ---- the full file: every field, compiled ---------------------------- */

static void check_full_listeners(const struct sg_config *cfg)
{
    assert_int_equal(cfg->n_listeners, 3);
    assert_string_equal(cfg->listeners[0].name, "public");
    assert_string_equal(cfg->listeners[0].addr.host, "0.0.0.0");
    assert_int_equal(cfg->listeners[0].addr.port, 8080);
    assert_null(cfg->listeners[0].tls);
    /* Positions kept for errors found after loading (reload, TLS files). */
    assert_int_equal(cfg->listeners_mark.line, 4);
    assert_int_equal(cfg->listeners_mark.col, 3);
    assert_int_equal(cfg->listeners[1].mark.line, 6);
    assert_int_equal(cfg->listeners[1].tls_mark.line, 9);
    const struct sg_listener *s = &cfg->listeners[1];
    assert_string_equal(s->addr.host, "::");
    assert_int_equal(s->addr.port, 8443);
    assert_non_null(s->tls);
    assert_string_equal(s->tls->certificate, "/etc/strangler/tls.crt");
    assert_string_equal(s->tls->private_key, "/etc/strangler/tls.key");
    assert_string_equal(s->tls->client_ca, "/etc/strangler/ca.crt");
    assert_int_equal(s->tls->n_alpn, 1);
    assert_string_equal(s->tls->alpn[0], "http/1.1");
    assert_int_equal(cfg->listeners[2].addr.port, 0);
    assert_string_equal(cfg->admin.host, "127.0.0.1");
    assert_int_equal(cfg->admin.port, 0);
}

static void check_full_monolith(const struct sg_upstream *u)
{
    assert_int_equal(u->index, 0);
    assert_int_equal(u->n_endpoints, 2);
    assert_string_equal(u->endpoints[0].host, "127.0.0.1");
    assert_int_equal(u->endpoints[0].port, 3000);
    assert_string_equal(u->endpoints[1].host, "::1");
    assert_int_equal(u->endpoints[1].port, 3001);
    assert_int_equal(u->protocol, SG_PROTO_HTTP1);
    assert_non_null(u->tls);
    assert_string_equal(u->tls->ca, "/etc/ssl/ca.crt");
    assert_string_equal(u->tls->sni, "monolith.internal");
    assert_false(u->tls->verify);
    assert_string_equal(u->tls->certificate, "/c.crt");
    assert_string_equal(u->tls->private_key, "/c.key");
    assert_int_equal(u->connect_timeout_ms, 250);
    assert_int_equal(u->idle_timeout_ms, 120000);
    assert_int_equal(u->max_connections, 512);
    assert_int_equal(u->balance, SG_BALANCE_LEAST_REQUEST);
    assert_int_equal(u->dns_refresh_ms, 3600000);
    assert_non_null(u->health_check);
    assert_string_equal(u->health_check->path, "/healthz");
    assert_int_equal(u->health_check->interval_ms, 10000);
    assert_int_equal(u->health_check->timeout_ms, 2000);
    assert_int_equal(u->health_check->healthy_threshold, 4);
    assert_int_equal(u->health_check->unhealthy_threshold, 5);
    assert_non_null(u->outlier_detection);
    assert_int_equal(u->outlier_detection->consecutive_failures, 7);
    assert_int_equal(u->outlier_detection->ejection_time_ms, 60000);
}

static void check_full_upstreams(const struct sg_config *cfg)
{
    assert_int_equal(cfg->n_upstreams, 4);
    check_full_monolith(&cfg->upstreams[0]);
    const struct sg_upstream *bar = sg_config_upstream(cfg, "bar-service");
    assert_ptr_equal(bar, &cfg->upstreams[1]);
    assert_string_equal(bar->endpoints[0].host, "bar.default.svc.cluster.local");
    const struct sg_upstream *grpc = sg_config_upstream(cfg, "grpc");
    assert_int_equal(grpc->protocol, SG_PROTO_H2);
    assert_int_equal(grpc->balance, SG_BALANCE_RANDOM);
    /* h2 without a tls block gets TLS defaults */
    assert_non_null(grpc->tls);
    assert_true(grpc->tls->verify);
    assert_null(grpc->tls->sni);
    const struct sg_upstream *h2c = sg_config_upstream(cfg, "cleartext");
    assert_int_equal(h2c->protocol, SG_PROTO_H2C);
    assert_null(h2c->tls);
    assert_null(sg_config_upstream(cfg, "nope"));
}

static void check_full_match(const struct sg_route *r)
{
    assert_int_equal(r->path_kind, SG_PM_PREFIX);
    assert_string_equal(r->path, "/bar");
    assert_int_equal(r->n_methods, 2);
    assert_string_equal(r->methods[0], "GET");
    assert_string_equal(r->methods[1], "POST");
    assert_string_equal(r->host, "api.example.com");
    assert_int_equal(r->n_headers, 5);
    assert_string_equal(r->headers[0].name, "x-tenant");
    assert_int_equal(r->headers[0].kind, SG_HM_EXACT);
    assert_string_equal(r->headers[0].value, "acme");
    assert_int_equal(r->headers[1].kind, SG_HM_PRESENT);
    assert_true(r->headers[1].present);
    assert_int_equal(r->headers[2].kind, SG_HM_PRESENT);
    assert_false(r->headers[2].present);
    assert_int_equal(r->headers[3].kind, SG_HM_PREFIX);
    assert_string_equal(r->headers[3].value, "v2");
    assert_int_equal(r->headers[4].kind, SG_HM_REGEX);
    assert_int_equal(regexec(&r->headers[4].re, "12345", 0, NULL, 0), 0);
    assert_int_not_equal(regexec(&r->headers[4].re, "12a", 0, NULL, 0), 0);
}

static void check_full_split(const struct sg_config *cfg, const struct sg_route *r)
{
    assert_string_equal(r->rewrite_prefix, "/");
    assert_int_equal(r->n_destinations, 3);
    assert_ptr_equal(r->destinations[0].upstream, &cfg->upstreams[0]);
    assert_int_equal(r->destinations[0].weight, 80);
    assert_int_equal(r->destinations[0].cum_weight, 80);
    assert_int_equal(r->destinations[1].weight, 20);
    assert_int_equal(r->destinations[1].cum_weight, 100);
    assert_int_equal(r->destinations[2].weight, 0);
    assert_int_equal(r->destinations[2].cum_weight, 100);
    assert_int_equal(r->total_weight, 100);
    assert_int_equal(r->sticky_kind, SG_STICKY_HEADER);
    assert_string_equal(r->sticky_name, "x-user-id");
}

static void check_full_mirrors(const struct sg_config *cfg, const struct sg_route *r)
{
    assert_int_equal(r->n_mirrors, 2);
    const struct sg_mirror *m = &r->mirrors[0];
    assert_ptr_equal(m->upstream, sg_config_upstream(cfg, "bar-service"));
    assert_true(m->always);
    assert_true(m->threshold == UINT64_MAX);
    assert_int_equal(m->timeout_ms, 2000);
    assert_int_equal(m->max_body_bytes, 64 * 1024);
    assert_string_equal(m->host_suffix, "-canary");
    assert_int_equal(m->n_methods, 2);
    assert_string_equal(m->methods[1], "HEAD");
    const struct sg_compare *k = m->compare;
    assert_non_null(k);
    assert_false(k->status);
    assert_int_equal(k->n_headers, 2);
    assert_string_equal(k->headers[0], "content-type");
    assert_int_equal(k->body, SG_CMP_BODY_JSON);
    assert_int_equal(k->n_ignore, 4);
    assert_string_equal(k->ignore[1], "/items/*/updated_at");
    assert_string_equal(k->ignore[2], "");
    /* pre-split for the diff walk: the second pointer is items, "*", updated_at */
    assert_non_null(k->ignore_ptrs);
    assert_int_equal(k->ignore_ptrs[1].n, 3);
    assert_string_equal(k->ignore_ptrs[1].seg[1], "*");
    assert_string_equal(k->ignore_ptrs[1].seg[2], "updated_at");
    assert_int_equal(k->ignore_ptrs[2].n, 0);
    assert_int_equal(k->max_body_bytes, 2 * 1024 * 1024);
    assert_true(k->noise_auto);
    assert_int_equal(k->log_rate, 3);
    const struct sg_mirror *m2 = &r->mirrors[1];
    assert_false(m2->always);
    assert_true(m2->threshold == UINT64_C(1) << 61); /* 12.5% of 2^64 */
    assert_string_equal(m2->host_suffix, "");
    assert_null(m2->compare);
    assert_int_equal(m2->n_methods, 0);
}

static void check_full_actions(const struct sg_route *r)
{
    assert_int_equal(r->timeout_ms, 30000);
    assert_int_equal(r->retries.attempts, 2);
    assert_int_equal(r->retries.on,
                     SG_RETRY_CONNECT_FAILURE | SG_RETRY_RESET | SG_RETRY_502 | SG_RETRY_503 | SG_RETRY_504);
    assert_int_equal(r->retries.per_try_timeout_ms, 2000);
    assert_int_equal(r->request_headers.n_set, 2);
    assert_string_equal(r->request_headers.set[0].name, "x-env");
    assert_string_equal(r->request_headers.set[0].value, "prod");
    assert_string_equal(r->request_headers.set[1].value, "");
    assert_int_equal(r->request_headers.n_remove, 1);
    assert_string_equal(r->request_headers.remove[0], "x-internal");
    assert_int_equal(r->response_headers.n_set, 0);
    assert_int_equal(r->response_headers.n_remove, 0);
}

static void check_full_other_routes(const struct sg_config *cfg)
{
    const struct sg_route *exact = &cfg->routes[1], *re = &cfg->routes[2], *def = &cfg->routes[3];
    assert_int_equal(exact->index, 1);
    assert_int_equal(exact->path_kind, SG_PM_EXACT);
    assert_string_equal(exact->path, "/exact");
    assert_int_equal(exact->timeout_ms, 0);
    /* a retries block without attempts means one retry */
    assert_int_equal(exact->retries.attempts, 1);
    assert_int_equal(exact->retries.on, SG_RETRY_CONNECT_FAILURE | SG_RETRY_RESET);
    assert_int_equal(re->path_kind, SG_PM_REGEX);
    assert_int_equal(regexec(&re->path_re, "/items/42", 0, NULL, 0), 0);
    assert_int_not_equal(regexec(&re->path_re, "/items/x", 0, NULL, 0), 0);
    assert_int_equal(re->sticky_kind, SG_STICKY_COOKIE);
    assert_string_equal(re->sticky_name, "Session"); /* cookie names keep their case */
    assert_int_equal(re->timeout_ms, 0);
    assert_int_equal(def->path_kind, SG_PM_ANY);
    assert_null(def->host);
    assert_int_equal(def->destinations[0].weight, 1);
}

static void test_full_file(void **state)
{
    (void)state;
    char *path = data_path("full.yaml");
    struct sg_config_errors errs = { 0 };
    struct sg_config *cfg = sg_config_load(path, &errs);
    print_errors(&errs);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, path);
    assert_int_equal(atomic_load(&cfg->refs), 1);
    assert_int_equal(cfg->workers, 4);
    assert_false(cfg->workers_auto);
    assert_false(cfg->io_uring);
    check_full_listeners(cfg);
    check_full_upstreams(cfg);
    assert_int_equal(cfg->n_routes, 4);
    assert_string_equal(cfg->routes[0].name, "bar");
    check_full_match(&cfg->routes[0]);
    check_full_split(cfg, &cfg->routes[0]);
    check_full_mirrors(cfg, &cfg->routes[0]);
    check_full_actions(&cfg->routes[0]);
    check_full_other_routes(cfg);
    assert_false(cfg->access_log);
    assert_int_equal(cfg->limits.max_header_bytes, 32 * 1024);
    assert_int_equal(cfg->limits.max_request_body_bytes, UINT64_C(1) << 30);
    assert_int_equal(cfg->limits.header_timeout_ms, 5000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 90000);
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->limits.shadow_max_in_flight, 64);
    assert_int_equal(cfg->limits.shadow_max_buffered_bytes, 8 * 1024 * 1024);
    assert_int_equal(cfg->drain_timeout_ms, 45000);
    assert_int_equal(cfg->n_secrets, 0);
    sg_config_unref(cfg);
    free(path);
}

/* ---- defaults --------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    struct sg_config *cfg = load_ok(BASE ROUTE_OK);
    assert_true(cfg->workers_auto);
    assert_true(cfg->workers >= 1 && cfg->workers <= 256);
    assert_true(cfg->io_uring);
    assert_string_equal(cfg->admin.host, "127.0.0.1");
    assert_int_equal(cfg->admin.port, 9901);
    assert_true(cfg->access_log);
    assert_int_equal(cfg->limits.max_header_bytes, 64 * 1024);
    assert_int_equal(cfg->limits.max_request_body_bytes, 0);
    assert_int_equal(cfg->limits.header_timeout_ms, 10000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 60000);
    assert_int_equal(cfg->limits.max_connections, 0);
    assert_int_equal(cfg->limits.shadow_max_in_flight, 1024);
    assert_int_equal(cfg->limits.shadow_max_buffered_bytes, 64 * 1024 * 1024);
    assert_int_equal(cfg->drain_timeout_ms, 30000);
    const struct sg_upstream *u = &cfg->upstreams[0];
    assert_int_equal(u->protocol, SG_PROTO_HTTP1);
    assert_null(u->tls);
    assert_int_equal(u->connect_timeout_ms, 1000);
    assert_int_equal(u->idle_timeout_ms, 60000);
    assert_int_equal(u->dns_refresh_ms, 30000);
    assert_int_equal(u->max_connections, 1024);
    assert_int_equal(u->balance, SG_BALANCE_ROUND_ROBIN);
    assert_null(u->health_check);
    assert_null(u->outlier_detection);
    const struct sg_route *r = &cfg->routes[0];
    assert_int_equal(r->path_kind, SG_PM_ANY);
    assert_null(r->path);
    assert_int_equal(r->n_methods, 0);
    assert_null(r->host);
    assert_int_equal(r->n_headers, 0);
    assert_null(r->rewrite_prefix);
    assert_int_equal(r->total_weight, 1);
    assert_int_equal(r->sticky_kind, SG_STICKY_NONE);
    assert_int_equal(r->n_mirrors, 0);
    assert_int_equal(r->timeout_ms, 15000);
    assert_int_equal(r->retries.attempts, 0);
    assert_int_equal(r->retries.on, SG_RETRY_CONNECT_FAILURE | SG_RETRY_RESET);
    assert_int_equal(r->retries.per_try_timeout_ms, 0);
    sg_config_unref(cfg);
}

static void test_block_defaults(void **state)
{
    (void)state;
    struct sg_config *cfg = load_ok(
        "listeners: [{ name: l, address: 127.0.0.1:0, tls: { certificate: c, private_key: k } }]\n"
        "upstreams:\n"
        "  a: { endpoints: [h:1], tls: {}, health_check: { path: /h }, outlier_detection: {} }\n"
        "routes:\n"
        "  - name: r\n"
        "    destinations: [{ upstream: a }]\n"
        "    mirror: [{ upstream: a, compare: {} }]\n");
    const struct sg_tls_server *t = cfg->listeners[0].tls;
    assert_int_equal(t->n_alpn, 2);
    assert_string_equal(t->alpn[0], "h2");
    assert_string_equal(t->alpn[1], "http/1.1");
    assert_null(t->client_ca);
    const struct sg_upstream *u = &cfg->upstreams[0];
    assert_true(u->tls->verify);
    assert_null(u->tls->ca);
    assert_int_equal(u->health_check->interval_ms, 5000);
    assert_int_equal(u->health_check->timeout_ms, 1000);
    assert_int_equal(u->health_check->healthy_threshold, 2);
    assert_int_equal(u->health_check->unhealthy_threshold, 3);
    assert_int_equal(u->outlier_detection->consecutive_failures, 5);
    assert_int_equal(u->outlier_detection->ejection_time_ms, 30000);
    const struct sg_mirror *m = &cfg->routes[0].mirrors[0];
    assert_true(m->percent == 100.0);
    assert_true(m->always);
    assert_true(m->threshold == UINT64_MAX);
    assert_int_equal(m->timeout_ms, 5000);
    assert_int_equal(m->max_body_bytes, 1024 * 1024);
    assert_string_equal(m->host_suffix, "-shadow");
    assert_null(m->methods);
    const struct sg_compare *k = m->compare;
    assert_true(k->status);
    assert_int_equal(k->n_headers, 0);
    assert_int_equal(k->body, SG_CMP_BODY_BYTES);
    assert_int_equal(k->n_ignore, 0);
    assert_int_equal(k->max_body_bytes, 1024 * 1024);
    assert_false(k->noise_auto);
    assert_int_equal(k->log_rate, 10);
    sg_config_unref(cfg);
}

/* A key with no value (YAML null) means "use the default". */
static void test_null_means_default(void **state)
{
    (void)state;
    struct sg_config *cfg = load_ok(BASE "routes:\n"
                                         "  - name: r\n"
                                         "    timeout:\n"
                                         "    match: ~\n"
                                         "    destinations: [{ upstream: a, weight: null }]\n"
                                         "limits:\n");
    assert_int_equal(cfg->routes[0].timeout_ms, 15000);
    assert_int_equal(cfg->routes[0].destinations[0].weight, 1);
    sg_config_unref(cfg);
}

/* ---- compiled values: weights, thresholds ------------------------------ */

static void test_cumulative_weights(void **state)
{
    (void)state;
    struct sg_config *cfg = load_ok(BASE "routes:\n"
                                         "  - name: r\n"
                                         "    destinations:\n"
                                         "      - { upstream: a, weight: 0 }\n"
                                         "      - { upstream: b, weight: 3 }\n"
                                         "      - { upstream: a }\n"
                                         "      - { upstream: b, weight: 4294967295 }\n");
    const struct sg_route *r = &cfg->routes[0];
    assert_int_equal(r->destinations[0].cum_weight, 0);
    assert_int_equal(r->destinations[1].cum_weight, 3);
    assert_int_equal(r->destinations[2].cum_weight, 4);
    assert_true(r->destinations[3].cum_weight == UINT64_C(4294967299));
    assert_true(r->total_weight == UINT64_C(4294967299));
    sg_config_unref(cfg);
}

static uint64_t threshold_of(const char *percent, bool *always)
{
    char yaml[512];
    snprintf(yaml, sizeof yaml, BASE "routes: [{ name: r, destinations: [{ upstream: a }], "
                                     "mirror: [{ upstream: b, percent: %s }] }]\n",
             percent);
    struct sg_config *cfg = load_ok(yaml);
    uint64_t t = cfg->routes[0].mirrors[0].threshold;
    *always = cfg->routes[0].mirrors[0].always;
    sg_config_unref(cfg);
    return t;
}

static void test_mirror_thresholds(void **state)
{
    (void)state;
    bool always;
    assert_true(threshold_of("0", &always) == 0);
    assert_false(always);
    assert_true(threshold_of("50", &always) == UINT64_C(1) << 63);
    assert_false(always);
    assert_true(threshold_of("25.0", &always) == UINT64_C(1) << 62);
    assert_true(threshold_of("100", &always) == UINT64_MAX);
    assert_true(always);
    assert_true(threshold_of("100.000", &always) == UINT64_MAX);
    assert_true(always);
    /* just below 100: a threshold just below 2^64, never wrapped to 0 */
    uint64_t t = threshold_of("99.9999999999999", &always);
    assert_true(t > UINT64_MAX - 20000);
    assert_false(always);
    t = threshold_of("0.001", &always);
    assert_true(t >= UINT64_C(184467440737095) && t <= UINT64_C(184467440737096)); /* 2^64 * 1e-5 */
    assert_false(always);
}

/* ---- ${ENV} ------------------------------------------------------------ */

static void test_env_substitution(void **state)
{
    (void)state;
    setenv("SG_T_HOST", "10.1.2.3", 1);
    setenv("SG_T_PORT", "8081", 1);
    setenv("SG_T_TOKEN", "s3cr3t", 1);
    setenv("SG_T_EMPTY", "", 1);
    unsetenv("SG_T_UNSET");
    struct sg_config *cfg = load_ok(
        "listeners: [{ name: l, address: \"${SG_T_HOST}:${SG_T_PORT}\" }]\n"
        "upstreams:\n"
        "  a: { endpoints: [\"${SG_T_UNSET:-up.internal}:${SG_T_EMPTY:-9000}\"] }\n"
        "routes:\n"
        "  - name: r\n"
        "    destinations: [{ upstream: a }]\n"
        "    request_headers:\n"
        "      set: { authorization: \"Bearer ${SG_T_TOKEN}\", x-cost: \"$$5 $ and $x ${SG_T_EMPTY}.\" }\n");
    assert_string_equal(cfg->listeners[0].addr.host, "10.1.2.3");
    assert_int_equal(cfg->listeners[0].addr.port, 8081);
    assert_string_equal(cfg->upstreams[0].endpoints[0].host, "up.internal");
    assert_int_equal(cfg->upstreams[0].endpoints[0].port, 9000);
    assert_string_equal(cfg->routes[0].request_headers.set[0].value, "Bearer s3cr3t");
    assert_string_equal(cfg->routes[0].request_headers.set[1].value, "$5 $ and $x .");
    /* values from the environment, once each; defaults and "" are not secrets */
    assert_int_equal(cfg->n_secrets, 3);
    assert_string_equal(cfg->secrets[0], "10.1.2.3");
    assert_string_equal(cfg->secrets[1], "8081");
    assert_string_equal(cfg->secrets[2], "s3cr3t");
    sg_config_unref(cfg);
}

static void test_env_unset(void **state)
{
    (void)state;
    unsetenv("SG_T_UNSET");
    unsetenv("SG_T_UNSET2");
    EXPECT_ERRORS(BASE "routes: [{ name: \"${SG_T_UNSET}-${SG_T_UNSET2}\", destinations: [{ upstream: a }] }]\n",
                  "cfg.yaml:5:18: environment variable \"SG_T_UNSET\" is not set (use ${SG_T_UNSET:-default} to "
                  "give a default)",
                  "cfg.yaml:5:18: environment variable \"SG_T_UNSET2\" is not set (use ${SG_T_UNSET2:-default} to "
                  "give a default)");
}

static void test_env_syntax(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes: [{ name: \"${A-b}\", destinations: [{ upstream: a }] }]\n"
                       "limits: { idle_timeout: \"${1X}\", header_timeout: \"${OPEN\" }\n",
                  "cfg.yaml:5:18: unsupported substitution \"${A-b}\" (expected ${NAME} or ${NAME:-default})",
                  "cfg.yaml:6:25: invalid variable name in \"${1X}\" (names are letters, digits and _, not starting "
                  "with a digit)",
                  "cfg.yaml:6:50: unterminated \"${\" in \"${OPEN\" (expected ${NAME} or ${NAME:-default}; write $$ "
                  "for a literal $)");
}

/* An environment value is data: its text is not parsed as YAML again. */
static void test_env_value_is_data(void **state)
{
    (void)state;
    setenv("SG_T_WEIGHT", "7", 1);
    setenv("SG_T_YAML", "[1, 2]", 1);
    struct sg_config *cfg = load_ok(BASE "routes: [{ name: \"${SG_T_YAML}\", destinations: [{ upstream: a, "
                                         "weight: \"${SG_T_WEIGHT}\" }] }]\n");
    assert_string_equal(cfg->routes[0].name, "[1, 2]");
    assert_int_equal(cfg->routes[0].destinations[0].weight, 7);
    sg_config_unref(cfg);
}

/* ---- one test per class of mistake ------------------------------------- */

static void test_unknown_key(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    destinations:\n"
                       "      - upstream: a\n"
                       "        wieght: 3\n"
                       "    retry: {}\n"
                       "lmits: {}\n",
                  "cfg.yaml:9:9: unknown key \"wieght\" in destination (expected upstream, weight)",
                  "cfg.yaml:10:5: unknown key \"retry\" in route \"r\" (expected name, match, rewrite, destinations, "
                  "sticky, mirror, timeout, retries, request_headers, response_headers)",
                  "cfg.yaml:11:1: unknown key \"lmits\" at top level (expected workers, io_uring, listeners, admin, upstreams, "
                  "routes, access_log, limits, shutdown)");
}

static void test_wrong_type(void **state)
{
    (void)state;
    EXPECT_ERRORS("listeners: { name: l, address: 127.0.0.1:0 }\n"
                  "upstreams:\n"
                  "  a: { endpoints: 127.0.0.1:1 }\n"
                  "  b: [x]\n"
                  "routes:\n"
                  "  - name: [r]\n"
                  "    destinations: [a]\n"
                  "    timeout: { s: 1 }\n"
                  "access_log: { enabled: yes }\n",
                  "cfg.yaml:1:12: listeners: expected a list, got a mapping",
                  "cfg.yaml:3:19: endpoints: expected a list, got \"127.0.0.1:1\"",
                  "cfg.yaml:4:6: b: expected a mapping, got a list",
                  "cfg.yaml:6:11: name: expected a string, got a list",
                  "cfg.yaml:7:20: destination: expected a mapping, got \"a\"",
                  "cfg.yaml:8:14: timeout: expected a duration, got a mapping",
                  "cfg.yaml:9:24: enabled: expected true or false, got \"yes\"");
}

static void test_bad_duration(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE ROUTE_OK "limits:\n"
                                "  header_timeout: 5x\n"
                                "  idle_timeout: 1.5s\n"
                                "shutdown: { drain_timeout: 99999999999999999999h }\n"
                                "upstreams2: 1\n",
                  "cfg.yaml:7:19: invalid duration \"5x\" (expected e.g. 250ms, 5s, 2m, 1h)",
                  "cfg.yaml:8:17: invalid duration \"1.5s\" (expected e.g. 250ms, 5s, 2m, 1h)",
                  "cfg.yaml:9:28: duration \"99999999999999999999h\" is too large",
                  "cfg.yaml:10:1: unknown key \"upstreams2\" at top level (expected workers, io_uring, listeners, admin, "
                  "upstreams, routes, access_log, limits, shutdown)");
}

static void test_zero_durations(void **state)
{
    (void)state;
    /* 0 disables a route timeout and a drain; a connect timeout cannot be 0 */
    struct sg_config *cfg = load_ok(BASE "routes: [{ name: r, destinations: [{ upstream: a }], timeout: 0 }]\n"
                                         "shutdown: { drain_timeout: 0s }\n");
    assert_int_equal(cfg->routes[0].timeout_ms, 0);
    assert_int_equal(cfg->drain_timeout_ms, 0);
    sg_config_unref(cfg);
    EXPECT_ERRORS("listeners: [{ name: l, address: 127.0.0.1:0 }]\n"
                  "upstreams: { a: { endpoints: [h:1], connect_timeout: 0ms } }\n" ROUTE_OK,
                  "cfg.yaml:2:54: connect_timeout: must be greater than 0");
}

static void test_bad_size(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE ROUTE_OK "limits:\n"
                                "  max_header_bytes: 512\n"
                                "  max_request_body_bytes: 10MB\n"
                                "routes2: 1\n",
                  "cfg.yaml:7:21: max_header_bytes: must be between 1024 and 16777216 bytes, got 512",
                  "cfg.yaml:8:27: invalid size \"10MB\" (expected bytes or KiB, MiB, GiB, e.g. 512, 64KiB, 1MiB)",
                  "cfg.yaml:9:1: unknown key \"routes2\" at top level (expected workers, io_uring, listeners, admin, "
                  "upstreams, routes, access_log, limits, shutdown)");
}

static void test_bad_address(void **state)
{
    (void)state;
    EXPECT_ERRORS("listeners:\n"
                  "  - { name: a, address: localhost }\n"
                  "  - { name: b, address: \"::1:80\" }\n"
                  "  - { name: c, address: \"[::1]:65536\" }\n"
                  "  - { name: d, address: \":80\" }\n"
                  "  - { name: e, address: \"[::zz]:80\" }\n"
                  "admin: { address: \"h:x\" }\n"
                  "upstreams: { a: { endpoints: [\"h:0\", \"bad host:1\"] } }\n" ROUTE_OK,
                  "cfg.yaml:2:25: invalid address \"localhost\": missing :PORT (expected HOST:PORT or [IPv6]:PORT)",
                  "cfg.yaml:3:25: invalid address \"::1:80\": IPv6 addresses must be in brackets, e.g. [::1]:8080 "
                  "(expected HOST:PORT or [IPv6]:PORT)",
                  "cfg.yaml:4:25: invalid address \"[::1]:65536\": the port must be between 0 and 65535 (expected "
                  "HOST:PORT or [IPv6]:PORT)",
                  "cfg.yaml:5:25: invalid address \":80\": missing host (use 0.0.0.0:PORT or [::]:PORT for every "
                  "address) (expected HOST:PORT or [IPv6]:PORT)",
                  "cfg.yaml:6:25: invalid address \"[::zz]:80\": invalid IPv6 address (expected HOST:PORT or "
                  "[IPv6]:PORT)",
                  "cfg.yaml:7:19: invalid address \"h:x\": the port is not a number (expected HOST:PORT or "
                  "[IPv6]:PORT)",
                  "cfg.yaml:8:31: invalid address \"h:0\": the port must be between 1 and 65535 (expected "
                  "HOST:PORT or [IPv6]:PORT)",
                  "cfg.yaml:8:38: invalid address \"bad host:1\": invalid host name (expected HOST:PORT or "
                  "[IPv6]:PORT)");
}

static void test_address_in_use(void **state)
{
    (void)state;
    EXPECT_ERRORS("listeners:\n"
                  "  - { name: a, address: 0.0.0.0:8080 }\n"
                  "  - { name: b, address: 0.0.0.0:8080 }\n"
                  "  - { name: c, address: 0.0.0.0:0 }\n"
                  "  - { name: d, address: 0.0.0.0:0 }\n"
                  "admin: { address: 0.0.0.0:8080 }\n"
                  "upstreams: { a: { endpoints: [h:1] } }\n" ROUTE_OK,
                  "cfg.yaml:3:25: address \"0.0.0.0:8080\" is already used by listener \"a\"",
                  "cfg.yaml:6:19: address \"0.0.0.0:8080\" is already used by listener \"a\"");
}

static void test_dangling_upstream(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: bar\n"
                       "    destinations:\n"
                       "      - upstream: a\n"
                       "      - upstream: bar-svc\n"
                       "    mirror:\n"
                       "      - upstream: shadow-svc\n",
                  "cfg.yaml:9:19: route \"bar\": unknown upstream \"bar-svc\"",
                  "cfg.yaml:11:19: route \"bar\": unknown upstream \"shadow-svc\"");
}

static void test_duplicate_route_name(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    destinations: [{ upstream: a }]\n"
                       "  - name: r\n"
                       "    destinations: [{ upstream: b }]\n",
                  "cfg.yaml:8:11: duplicate route name \"r\" (first at line 6)");
}

static void test_duplicate_key(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    destinations: [{ upstream: a, weight: 1, weight: 2 }]\n"
                       "    timeout: 1s\n"
                       "    timeout: 2s\n",
                  "cfg.yaml:7:46: duplicate key \"weight\" (first at line 7)",
                  "cfg.yaml:9:5: duplicate key \"timeout\" (first at line 8)");
}

static void test_two_path_kinds(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    match:\n"
                       "      path: /a\n"
                       "      path_prefix: /b\n"
                       "    destinations: [{ upstream: a }]\n",
                  "cfg.yaml:9:7: match: only one of path, path_prefix, path_regex may be given (path is at line "
                  "8)");
}

static void test_path_must_start_with_slash(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - { name: r, match: { path_prefix: bar }, destinations: [{ upstream: a }] }\n"
                       "  - { name: s, match: { path: \"/a?b=1\" }, destinations: [{ upstream: a }] }\n",
                  "cfg.yaml:6:38: path_prefix \"bar\" must start with '/'",
                  "cfg.yaml:7:31: path \"/a?b=1\" must not contain '?' or '#' (the query is not matched)");
}

static void test_bad_regex(void **state)
{
    (void)state;
    char want_path[256], want_header[256];
    regex_t re;
    char why[128];
    /* The text is glibc's: take it from regerror() rather than hard-code it. */
    int rc = regcomp(&re, "(", REG_EXTENDED | REG_NOSUB);
    assert_int_not_equal(rc, 0);
    regerror(rc, &re, why, sizeof why);
    snprintf(want_path, sizeof want_path, "cfg.yaml:8:19: invalid path_regex \"(\": %s", why);
    rc = regcomp(&re, "a{1", REG_EXTENDED | REG_NOSUB);
    assert_int_not_equal(rc, 0);
    regerror(rc, &re, why, sizeof why);
    snprintf(want_header, sizeof want_header, "cfg.yaml:10:23: invalid regex \"a{1\": %s", why);
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    match:\n"
                       "      path_regex: \"(\"\n"
                       "      headers:\n"
                       "        x-a: { regex: \"a{1\" }\n"
                       "    destinations: [{ upstream: a }]\n",
                  want_path, want_header);
}

static void test_all_zero_weights(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    destinations:\n"
                       "      - { upstream: a, weight: 0 }\n"
                       "      - { upstream: b, weight: 0 }\n"
                       "  - name: s\n"
                       "    destinations: []\n",
                  "cfg.yaml:8:7: route \"r\": every destination has weight 0; at least one must be positive",
                  "cfg.yaml:11:19: route \"s\": destinations must list at least one upstream");
}

static void test_bad_weight(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    destinations:\n"
                       "      - { upstream: a, weight: -1 }\n"
                       "      - { upstream: b, weight: 4294967296 }\n"
                       "      - { weight: 2 }\n",
                  "cfg.yaml:8:32: weight: expected a whole number, got \"-1\"",
                  "cfg.yaml:9:32: weight: must be between 0 and 4294967295, got 4294967296",
                  "cfg.yaml:10:9: missing required key \"upstream\" in destination");
}

static void test_rewrite_without_prefix(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    match: { path: /a }\n"
                       "    rewrite: { path_prefix: / }\n"
                       "    destinations: [{ upstream: a }]\n"
                       "  - name: s\n"
                       "    rewrite: { path_prefix: x }\n"
                       "    destinations: [{ upstream: a }]\n"
                       "  - name: t\n"
                       "    match: { path_prefix: /t }\n"
                       "    rewrite: { path_prefix: \"/a b\" }\n"
                       "    destinations: [{ upstream: a }]\n",
                  "cfg.yaml:8:29: rewrite.path_prefix needs match.path_prefix in the same route (it replaces that "
                  "prefix)",
                  "cfg.yaml:11:29: rewrite.path_prefix \"x\" must start with '/'",
                  "cfg.yaml:15:29: rewrite.path_prefix \"/a b\" must not contain spaces or control characters");
}

static void test_missing_sections(void **state)
{
    (void)state;
    EXPECT_ERRORS("workers: auto\n", "cfg.yaml:1:1: missing required key \"listeners\" at top level",
                  "cfg.yaml:1:1: missing required key \"upstreams\" at top level",
                  "cfg.yaml:1:1: missing required key \"routes\" at top level");
    EXPECT_ERRORS("listeners: []\nupstreams: {}\nroutes:\n",
                  "cfg.yaml:1:12: listeners: at least one listener is required",
                  "cfg.yaml:2:12: upstreams: at least one upstream is required",
                  "cfg.yaml:3:1: routes: a value is required");
}

static void test_empty_and_not_a_mapping(void **state)
{
    (void)state;
    EXPECT_ERRORS("", "cfg.yaml:1:1: the configuration is empty (it needs at least listeners, upstreams and routes)");
    EXPECT_ERRORS("# only a comment\n---\n",
                  "cfg.yaml:3:1: the configuration is empty (it needs at least listeners, upstreams and routes)");
    EXPECT_ERRORS("- a\n- b\n",
                  "cfg.yaml:1:1: the top level must be a mapping (workers, listeners, admin, upstreams, routes, "
                  "...)");
}

static void test_multiple_documents(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE ROUTE_OK "---\nworkers: 2\n",
                  "cfg.yaml:6:1: only one YAML document is allowed in the configuration file");
}

static void test_workers(void **state)
{
    (void)state;
    struct sg_config *cfg = load_ok("workers: 256\n" BASE ROUTE_OK);
    assert_int_equal(cfg->workers, 256);
    assert_false(cfg->workers_auto);
    sg_config_unref(cfg);
    EXPECT_ERRORS("workers: 0\n" BASE ROUTE_OK,
                  "cfg.yaml:1:10: workers: expected auto or a number between 1 and 256, got \"0\"");
    EXPECT_ERRORS("workers: 257\n" BASE ROUTE_OK,
                  "cfg.yaml:1:10: workers: expected auto or a number between 1 and 256, got \"257\"");
    EXPECT_ERRORS("workers: [4]\n" BASE ROUTE_OK,
                  "cfg.yaml:1:10: workers: expected auto or a number of threads, got a list");
}

static void test_io_uring(void **state)
{
    (void)state;
    struct sg_config *cfg = load_ok("io_uring: auto\n" BASE ROUTE_OK);
    assert_true(cfg->io_uring);
    sg_config_unref(cfg);
    cfg = load_ok("io_uring: off\n" BASE ROUTE_OK);
    assert_false(cfg->io_uring);
    sg_config_unref(cfg);
    EXPECT_ERRORS("io_uring: on\n" BASE ROUTE_OK, "cfg.yaml:1:11: invalid io_uring \"on\" (expected auto, off)");
    EXPECT_ERRORS("io_uring: false\n" BASE ROUTE_OK,
                  "cfg.yaml:1:11: invalid io_uring \"false\" (expected auto, off)");
}

static void test_listener_rules(void **state)
{
    (void)state;
    EXPECT_ERRORS("listeners:\n"
                  "  - { name: a, address: 127.0.0.1:1 }\n"
                  "  - { name: a, address: 127.0.0.1:2 }\n"
                  "  - { name: admin, address: 127.0.0.1:3 }\n"
                  "  - { name: \"x=y\", address: 127.0.0.1:4 }\n"
                  "  - { address: 127.0.0.1:5 }\n"
                  "upstreams: { a: { endpoints: [h:1] } }\n" ROUTE_OK,
                  "cfg.yaml:3:13: duplicate listener name \"a\" (first at line 2)",
                  "cfg.yaml:4:13: listener name \"admin\" is reserved for the admin port",
                  "cfg.yaml:5:13: listener name \"x=y\": no spaces, control characters or '='",
                  "cfg.yaml:6:5: missing required key \"name\" in listener");
}

static void test_tls_rules(void **state)
{
    (void)state;
    EXPECT_ERRORS("listeners:\n"
                  "  - name: s\n"
                  "    address: 127.0.0.1:0\n"
                  "    tls: { certificate: /c, alpn: [h3, http/1.1] }\n"
                  "upstreams:\n"
                  "  a: { endpoints: [h:1], tls: { certificate: /c, verify: maybe } }\n"
                  "  b: { endpoints: [h:1], protocol: h2c, tls: {} }\n"
                  "  c: { endpoints: [h:1], protocol: http3 }\n" ROUTE_OK,
                  "cfg.yaml:4:10: missing required key \"private_key\" in listener tls",
                  "cfg.yaml:4:36: invalid ALPN protocol \"h3\" (expected h2, http/1.1)",
                  "cfg.yaml:6:46: tls: certificate and private_key must be given together",
                  "cfg.yaml:6:58: verify: expected true or false, got \"maybe\"",
                  "cfg.yaml:7:46: tls: protocol h2c is HTTP/2 without TLS; use protocol: h2 for HTTP/2 over TLS",
                  "cfg.yaml:8:36: invalid protocol \"http3\" (expected http1, h2c, h2)");
}

static void test_upstream_rules(void **state)
{
    (void)state;
    EXPECT_ERRORS("listeners: [{ name: l, address: 127.0.0.1:0 }]\n"
                  "upstreams:\n"
                  "  a:\n"
                  "    endpoints: []\n"
                  "    max_connections: 0\n"
                  "    balance: fastest\n"
                  "    health_check: { path: healthz, healthy_threshold: 0 }\n"
                  "    outlier_detection: { consecutive_failures: 0, ejection_time: 0s }\n"
                  "  b: {}\n" ROUTE_OK,
                  "cfg.yaml:4:16: endpoints: at least one HOST:PORT is required",
                  "cfg.yaml:5:22: max_connections: must be at least 1, got 0",
                  "cfg.yaml:6:14: invalid balance \"fastest\" (expected round_robin, least_request, random)",
                  "cfg.yaml:7:27: path \"healthz\" must start with '/'",
                  "cfg.yaml:7:55: healthy_threshold: must be at least 1, got 0",
                  "cfg.yaml:8:48: consecutive_failures: must be at least 1, got 0",
                  "cfg.yaml:8:66: ejection_time: must be greater than 0",
                  "cfg.yaml:9:6: missing required key \"endpoints\" in upstream \"b\"");
}

static void test_match_rules(void **state)
{
    (void)state;
    struct sg_config *cfg = load_ok(BASE "routes:\n"
                                         "  - name: r\n"
                                         "    match: { host: \"[::1]:8080\", headers: { x-a: { exact: A } } }\n"
                                         "    destinations: [{ upstream: a }]\n"
                                         "  - name: s\n"
                                         "    match: { host: \"2001:DB8::1\" }\n"
                                         "    destinations: [{ upstream: a }]\n"
                                         "  - name: t\n"
                                         "    match: { host: \"[2001:DB8::1]\" }\n"
                                         "    destinations: [{ upstream: a }]\n");
    assert_string_equal(cfg->routes[0].host, "[::1]");
    assert_string_equal(cfg->routes[1].host, "2001:db8::1");
    assert_string_equal(cfg->routes[2].host, "[2001:db8::1]");
    assert_int_equal(cfg->routes[0].headers[0].kind, SG_HM_EXACT);
    assert_string_equal(cfg->routes[0].headers[0].value, "A");
    sg_config_unref(cfg);
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    match:\n"
                       "      methods: [GET, \"B A D\"]\n"
                       "      host: \"*.example.com:80\"\n"
                       "      headers:\n"
                       "        x-a: { prefix: a, regex: b }\n"
                       "        X-A: y\n"
                       "        x-b: { present: maybe }\n"
                       "        x-c: { contains: z }\n"
                       "    destinations: [{ upstream: a }]\n",
                  "cfg.yaml:8:22: methods: \"B A D\" is not a valid HTTP token (letters, digits and "
                  "!#$%&'*+-.^_`|~)",
                  "cfg.yaml:9:13: host \"*.example.com:80\" is not a valid host name (wildcards are not supported)",
                  "cfg.yaml:11:14: header \"x-a\": give exactly one of exact, prefix, regex, present",
                  "cfg.yaml:12:9: header \"x-a\" is matched twice (names are case-insensitive)",
                  "cfg.yaml:13:25: present: expected true or false, got \"maybe\"",
                  "cfg.yaml:14:16: unknown key \"contains\" in header match (expected exact, prefix, regex, "
                  "present)");
}

static void test_sticky_and_retries(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    destinations: [{ upstream: a }]\n"
                       "    sticky: { header: x-user, cookie: s }\n"
                       "    retries: { attempts: 11, on: [500], per_try_timeout: 2 }\n"
                       "  - name: s\n"
                       "    destinations: [{ upstream: a }]\n"
                       "    sticky: {}\n"
                       "    retries: { on: [] }\n",
                  "cfg.yaml:8:39: sticky: give either header or cookie, not both",
                  "cfg.yaml:9:26: attempts: must be between 0 and 10, got 11",
                  "cfg.yaml:9:35: invalid retry condition \"500\" (expected connect-failure, reset, 502, 503, 504)",
                  "cfg.yaml:9:58: invalid duration \"2\" (expected e.g. 250ms, 5s, 2m, 1h)",
                  "cfg.yaml:12:13: sticky: give a header or a cookie whose value is the key",
                  "cfg.yaml:13:20: on: the list must not be empty (leave the key out instead)");
}

static void test_mirror_rules(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    destinations: [{ upstream: a }]\n"
                       "    mirror:\n"
                       "      - upstream: b\n"
                       "        percent: 100.5\n"
                       "        host_suffix: \"/x\"\n"
                       "        methods: []\n"
                       "        compare: { body: xml, noise: on, ignore: [foo, /a~2], log_rate: -1 }\n"
                       "      - { percent: 50% }\n",
                  "cfg.yaml:10:18: percent: expected a number from 0 to 100 (decimals allowed), got \"100.5\"",
                  "cfg.yaml:11:22: host_suffix \"/x\" may only contain letters, digits, '-', '_' and '.'",
                  "cfg.yaml:12:18: methods: the list must not be empty (leave the key out instead)",
                  "cfg.yaml:13:26: invalid body \"xml\" (expected none, bytes, json)",
                  "cfg.yaml:13:38: invalid noise \"on\" (expected off, auto)",
                  "cfg.yaml:13:51: ignore: \"foo\" is not a JSON Pointer (it must be \"\" or start with '/')",
                  "cfg.yaml:13:56: ignore: \"/a~2\": '~' must be followed by 0 or 1 (~0 is '~', ~1 is '/')",
                  "cfg.yaml:13:73: log_rate: expected a whole number, got \"-1\"",
                  "cfg.yaml:14:9: missing required key \"upstream\" in mirror",
                  "cfg.yaml:14:20: percent: expected a number from 0 to 100 (decimals allowed), got \"50%\"");
}

static void test_header_edit_rules(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "routes:\n"
                       "  - name: r\n"
                       "    destinations: [{ upstream: a }]\n"
                       "    request_headers:\n"
                       "      set: { Host: x, \"bad name\": y, x-ok: \"a\\nb\", X-Dup: 1, x-dup: 2 }\n"
                       "      remove: [Transfer-Encoding, X-Request-Id]\n"
                       "    response_headers: { set: { content-length: 1, host: ok }, delete: [] }\n",
                  "cfg.yaml:9:14: request_headers: header \"host\" cannot be changed (Host is forwarded unchanged)",
                  "cfg.yaml:9:23: request_headers: \"bad name\" is not a valid HTTP token (letters, digits and "
                  "!#$%&'*+-.^_`|~)",
                  "cfg.yaml:9:44: request_headers: the value of \"x-ok\" must not contain CR or LF",
                  "cfg.yaml:9:62: request_headers: header \"x-dup\" is set twice (names are case-insensitive)",
                  "cfg.yaml:10:16: request_headers: header \"transfer-encoding\" cannot be changed (the proxy "
                  "manages it)",
                  "cfg.yaml:10:35: request_headers: header \"x-request-id\" cannot be changed (the proxy keeps or "
                  "generates it)",
                  "cfg.yaml:11:32: response_headers: header \"content-length\" cannot be changed (the proxy manages "
                  "it)",
                  "cfg.yaml:11:51: response_headers: header \"host\" cannot be changed (Host is forwarded unchanged)",
                  "cfg.yaml:11:63: unknown key \"delete\" in response_headers (expected set, remove)");
}

static void test_anchors_and_merge(void **state)
{
    (void)state;
    struct sg_config *cfg = load_ok("listeners: [{ name: l, address: 127.0.0.1:0 }]\n"
                                    "upstreams:\n"
                                    "  a: &defaults\n"
                                    "    endpoints: [h:1]\n"
                                    "    connect_timeout: 2s\n"
                                    "    max_connections: 7\n"
                                    "  b:\n"
                                    "    <<: *defaults\n"
                                    "    connect_timeout: 3s\n"
                                    "routes:\n"
                                    "  - &route { name: r, destinations: [{ upstream: b }] }\n");
    const struct sg_upstream *b = sg_config_upstream(cfg, "b");
    assert_int_equal(b->connect_timeout_ms, 3000);
    assert_int_equal(b->max_connections, 7);
    assert_string_equal(b->endpoints[0].host, "h");
    sg_config_unref(cfg);
    EXPECT_ERRORS(BASE "routes: [*nope]\n", "cfg.yaml:5:10: unknown anchor \"nope\" (an alias *nope needs an earlier "
                                            "&nope)");
}

static void test_nul_and_inline_syntax_error(void **state)
{
    (void)state;
    /* "\0" is a valid YAML escape, but no field can hold a NUL byte */
    EXPECT_ERRORS(BASE "routes: [{ name: \"a\\0b\", destinations: [{ upstream: a }] }]\n",
                  "cfg.yaml:5:18: the value contains a NUL character");
    EXPECT_ERRORS(BASE "routes: [{ name: r, destinations: [{ upstream: a }]\n",
                  "cfg.yaml:6:1: YAML syntax error: did not find expected ',' or '}' (while parsing a flow mapping "
                  "at line 5, column 10)");
}

/* ---- whole files -------------------------------------------------------- */

static void test_many_errors_file(void **state)
{
    (void)state;
    EXPECT_FILE_ERRORS("many_errors.yaml",
                       "7:22: invalid duration \"5x\" (expected e.g. 250ms, 5s, 2m, 1h)",
                       "8:22: max_connections: must be at least 1, got 0",
                       "10:17: invalid address \"bar:0\": the port must be between 1 and 65535 (expected HOST:PORT "
                       "or [IPv6]:PORT)",
                       "15:9: unknown key \"wieght\" in destination (expected upstream, weight)",
                       "16:19: route \"bar\": unknown upstream \"bar-svc\"",
                       "20:18: percent: expected a number from 0 to 100 (decimals allowed), got \"150\"",
                       "21:11: duplicate route name \"bar\" (first at line 12)",
                       "24:21: invalid size \"1MB\" (expected bytes or KiB, MiB, GiB, e.g. 512, 64KiB, 1MiB)");
}

static void test_syntax_error_file(void **state)
{
    (void)state;
    EXPECT_FILE_ERRORS("syntax_error.yaml", "5:4: YAML syntax error: did not find expected '-' indicator (while "
                                            "parsing a block collection at line 3, column 3)");
}

static void test_missing_file(void **state)
{
    (void)state;
    struct sg_config_errors errs = { 0 };
    assert_null(sg_config_load("/nonexistent/strangler.yaml", &errs));
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.msgs[0], "/nonexistent/strangler.yaml:1:1: cannot read the configuration file: "
                                      "No such file or directory");
    sg_config_errors_free(&errs);
    assert_int_equal(errs.n, 0);
    /* errs may be NULL when the caller only wants success or failure */
    assert_null(sg_config_load("/nonexistent/strangler.yaml", NULL));
}

/* ---- helpers and lifetime ------------------------------------------------ */

static void test_parse_duration(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(sg_parse_duration_ms("250ms", &v) && v == 250);
    assert_true(sg_parse_duration_ms("5s", &v) && v == 5000);
    assert_true(sg_parse_duration_ms("2m", &v) && v == 120000);
    assert_true(sg_parse_duration_ms("1h", &v) && v == 3600000);
    assert_true(sg_parse_duration_ms("0", &v) && v == 0);
    assert_true(sg_parse_duration_ms("0s", &v) && v == 0);
    assert_true(sg_parse_duration_ms("5124095576030h", &v) && v == UINT64_C(5124095576030) * 3600000);
    assert_false(sg_parse_duration_ms("5124095576031h", &v)); /* overflows uint64 ms */
    assert_false(sg_parse_duration_ms("99999999999999999999ms", &v));
    const char *bad[] = { "", "5", "5x", "1.5s", "-1s", " 5s", "5s ", "5 s", "1m30s", "s", "5S", "0x5s", NULL };
    for (size_t i = 0; bad[i]; i++)
        assert_false(sg_parse_duration_ms(bad[i], &v));
    assert_false(sg_parse_duration_ms(NULL, &v));
}

static void test_parse_size(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(sg_parse_size("512", &v) && v == 512);
    assert_true(sg_parse_size("0", &v) && v == 0);
    assert_true(sg_parse_size("64KiB", &v) && v == 65536);
    assert_true(sg_parse_size("1MiB", &v) && v == 1048576);
    assert_true(sg_parse_size("1GiB", &v) && v == 1073741824);
    assert_true(sg_parse_size("18446744073709551615", &v) && v == UINT64_MAX);
    assert_false(sg_parse_size("18446744073709551616", &v));
    assert_false(sg_parse_size("17179869184GiB", &v)); /* 2^34 GiB = 2^64 */
    const char *bad[] = { "", "1KB", "1MB", "1k", "1kib", "1.5MiB", "-1", "1 MiB", "1TiB", "1B", "MiB", NULL };
    for (size_t i = 0; bad[i]; i++)
        assert_false(sg_parse_size(bad[i], &v));
}

static void test_parse_hostport(void **state)
{
    (void)state;
    struct sg_hostport hp;
    assert_true(sg_parse_hostport("127.0.0.1:8080", &hp));
    assert_string_equal(hp.host, "127.0.0.1");
    assert_int_equal(hp.port, 8080);
    free(hp.host);
    assert_true(sg_parse_hostport("[2001:db8::1]:0", &hp));
    assert_string_equal(hp.host, "2001:db8::1");
    assert_int_equal(hp.port, 0);
    free(hp.host);
    assert_true(sg_parse_hostport("bar.default.svc.cluster.local:65535", &hp));
    assert_int_equal(hp.port, 65535);
    free(hp.host);
    const char *bad[] = { "", "host", "host:", ":80", "host:65536", "host:-1", "host:8x", "::1:80", "[::1]",
                          "[::1]80", "[nope]:80", "a b:80", "h/x:80", "[::1:80", NULL };
    for (size_t i = 0; bad[i]; i++) {
        hp.host = NULL;
        assert_false(sg_parse_hostport(bad[i], &hp));
        assert_null(hp.host);
    }
}

static void test_refcount(void **state)
{
    (void)state;
    struct sg_config *cfg = load_ok(BASE ROUTE_OK);
    assert_int_equal(atomic_load(&cfg->refs), 1);
    assert_ptr_equal(sg_config_ref(cfg), cfg);
    assert_int_equal(atomic_load(&cfg->refs), 2);
    sg_config_unref(cfg);
    assert_int_equal(atomic_load(&cfg->refs), 1);
    assert_string_equal(cfg->routes[0].name, "r"); /* still alive */
    sg_config_unref(cfg); /* frees; LeakSanitizer checks the rest */
    sg_config_unref(NULL);
    assert_null(sg_config_ref(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_block_defaults),
        cmocka_unit_test(test_null_means_default),
        cmocka_unit_test(test_cumulative_weights),
        cmocka_unit_test(test_mirror_thresholds),
        cmocka_unit_test(test_env_substitution),
        cmocka_unit_test(test_env_unset),
        cmocka_unit_test(test_env_syntax),
        cmocka_unit_test(test_env_value_is_data),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_bad_duration),
        cmocka_unit_test(test_zero_durations),
        cmocka_unit_test(test_bad_size),
        cmocka_unit_test(test_bad_address),
        cmocka_unit_test(test_address_in_use),
        cmocka_unit_test(test_dangling_upstream),
        cmocka_unit_test(test_duplicate_route_name),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_two_path_kinds),
        cmocka_unit_test(test_path_must_start_with_slash),
        cmocka_unit_test(test_bad_regex),
        cmocka_unit_test(test_all_zero_weights),
        cmocka_unit_test(test_bad_weight),
        cmocka_unit_test(test_rewrite_without_prefix),
        cmocka_unit_test(test_missing_sections),
        cmocka_unit_test(test_empty_and_not_a_mapping),
        cmocka_unit_test(test_multiple_documents),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_io_uring),
        cmocka_unit_test(test_listener_rules),
        cmocka_unit_test(test_tls_rules),
        cmocka_unit_test(test_upstream_rules),
        cmocka_unit_test(test_match_rules),
        cmocka_unit_test(test_sticky_and_retries),
        cmocka_unit_test(test_mirror_rules),
        cmocka_unit_test(test_header_edit_rules),
        cmocka_unit_test(test_anchors_and_merge),
        cmocka_unit_test(test_nul_and_inline_syntax_error),
        cmocka_unit_test(test_many_errors_file),
        cmocka_unit_test(test_syntax_error_file),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_hostport),
        cmocka_unit_test(test_refcount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
