/* Unit tests for src/observe/metrics.c. The registry is process-global, so
 * every test starts from sg_metrics_reset_for_tests() (see setup). */
#include "strangler/metrics.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Matches the capacities in metrics.c; the exhaustion tests check them. */
#define MAX_SERIES 8192
#define MAX_SLOTS 65536

static int setup(void **state)
{
    (void)state;
    sg_metrics_reset_for_tests();
    return 0;
}

/* Renders the registry into a malloc'd NUL-terminated string. */
static char *render(void)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    sg_metrics_render(b);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

/* Finds the sample whose name-and-labels part is exactly `key`. Safe off
 * the test thread (it does not use cmocka's assertions). */
static int find_sample(const char *text, const char *key, int64_t *value)
{
    size_t klen = strlen(key);
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            *value = strtoll(line + klen + 1, NULL, 10);
            return 1;
        }
        if (!nl)
            break;
        line = nl + 1;
    }
    return 0;
}

static int64_t sample(const char *text, const char *key)
{
    int64_t v = 0;
    if (!find_sample(text, key, &v))
        fail_msg("sample %s not found in:\n%s", key, text);
    return v;
}

static void test_same_labels_same_id(void **state)
{
    (void)state;
    sg_metrics_family("t_requests_total", SG_METRIC_COUNTER, "Requests.");
    sg_metrics_family("t_other_total", SG_METRIC_COUNTER, "Other.");
    sg_series_t a = sg_metrics_series("t_requests_total", "route=\"a\"");
    sg_series_t a2 = sg_metrics_series("t_requests_total", "route=\"a\"");
    sg_series_t b = sg_metrics_series("t_requests_total", "route=\"b\"");
    sg_series_t none = sg_metrics_series("t_requests_total", "");
    sg_series_t other = sg_metrics_series("t_other_total", "route=\"a\"");
    assert_true(a >= 0 && b >= 0 && none >= 0 && other >= 0);
    assert_int_equal(a, a2);
    assert_int_not_equal(a, b);
    assert_int_not_equal(a, none);
    assert_int_not_equal(a, other); /* same labels, different family */
    assert_int_equal(none, sg_metrics_series("t_requests_total", NULL));
}

static void test_family_idempotent_and_undeclared(void **state)
{
    (void)state;
    sg_metrics_family("t_x_total", SG_METRIC_COUNTER, "X.");
    sg_metrics_family("t_x_total", SG_METRIC_COUNTER, "X again.");
    sg_metrics_family("bad name", SG_METRIC_COUNTER, "Refused.");
    assert_int_equal(sg_metrics_series("t_undeclared", ""), -1);
    assert_int_equal(sg_metrics_series("bad name", ""), -1);
    char *text = render();
    assert_string_equal(text, "# HELP t_x_total X.\n# TYPE t_x_total counter\n");
    free(text);
}

static void test_counter_sums_over_shards(void **state)
{
    (void)state;
    struct sg_metrics_shard *s[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(s[i] = sg_metrics_shard_new());
    sg_metrics_family("t_c_total", SG_METRIC_COUNTER, "C.");
    sg_series_t id = sg_metrics_series("t_c_total", "k=\"v\"");
    sg_metrics_add(s[0], id, 1);
    sg_metrics_add(s[1], id, 10);
    sg_metrics_add(s[2], id, 100);
    sg_metrics_add(s[2], id, 1000);
    char *text = render();
    assert_int_equal(sample(text, "t_c_total{k=\"v\"}"), 1111);
    free(text);
}

static void test_gauge_add_sub_and_set(void **state)
{
    (void)state;
    struct sg_metrics_shard *a = sg_metrics_shard_new(), *b = sg_metrics_shard_new();
    sg_metrics_family("t_conns", SG_METRIC_GAUGE, "Connections.");
    sg_metrics_family("t_generation", SG_METRIC_GAUGE, "Generation.");
    sg_series_t g = sg_metrics_series("t_conns", "");
    sg_series_t gen = sg_metrics_series("t_generation", "");

    /* A connection opened on one worker may be counted down on another
     * only in theory, but per-shard sums going negative must still work. */
    sg_metrics_gauge_add(a, g, 5);
    sg_metrics_gauge_add(b, g, -2);
    char *text = render();
    assert_int_equal(sample(text, "t_conns"), 3);
    free(text);

    sg_metrics_gauge_add(a, g, -5);
    text = render();
    assert_int_equal(sample(text, "t_conns"), -2);
    assert_non_null(strstr(text, "\nt_conns -2\n"));
    free(text);

    sg_metrics_gauge_set(gen, 7);
    sg_metrics_gauge_set(gen, 42);
    text = render();
    assert_int_equal(sample(text, "t_generation"), 42);
    free(text);
}

static void test_histogram_boundaries(void **state)
{
    (void)state;
    assert_int_equal(sg_metrics_latency_nbuckets, 16);
    assert_true(sg_metrics_latency_buckets[0] == 0.0005);
    assert_true(sg_metrics_latency_buckets[15] == 60);
    struct sg_metrics_shard *s = sg_metrics_shard_new();
    sg_metrics_family("t_lat_seconds", SG_METRIC_HISTOGRAM, "Latency.");
    sg_series_t id = sg_metrics_series("t_lat_seconds", "");

    /* le is inclusive: a value equal to a bound belongs to that bucket. */
    for (unsigned i = 0; i < sg_metrics_latency_nbuckets; i++)
        sg_metrics_observe(s, id, sg_metrics_latency_buckets[i]);
    sg_metrics_observe(s, id, 60.000001); /* only in +Inf */
    sg_metrics_observe(s, id, -1);         /* clamped to 0: first bucket */

    char *text = render();
    assert_int_equal(sample(text, "t_lat_seconds_bucket{le=\"0.0005\"}"), 2);
    assert_int_equal(sample(text, "t_lat_seconds_bucket{le=\"0.001\"}"), 3);
    assert_int_equal(sample(text, "t_lat_seconds_bucket{le=\"0.5\"}"), 11);
    assert_int_equal(sample(text, "t_lat_seconds_bucket{le=\"60\"}"), 17);
    assert_int_equal(sample(text, "t_lat_seconds_bucket{le=\"+Inf\"}"), 18);
    assert_int_equal(sample(text, "t_lat_seconds_count"), 18);
    free(text);
}

static void test_histogram_nan_ignored(void **state)
{
    (void)state;
    struct sg_metrics_shard *s = sg_metrics_shard_new();
    sg_metrics_family("t_h", SG_METRIC_HISTOGRAM, "H.");
    sg_series_t id = sg_metrics_series("t_h", "");
    volatile double zero = 0;
    sg_metrics_observe(s, id, zero / zero);
    sg_metrics_observe(s, id, 1e300); /* huge: +Inf bucket, sum clamped */
    char *text = render();
    assert_int_equal(sample(text, "t_h_count"), 1);
    assert_int_equal(sample(text, "t_h_bucket{le=\"60\"}"), 0);
    assert_non_null(strstr(text, "\nt_h_sum 1000000000\n"));
    free(text);
}

static const char expected_text[] =
    "# HELP t_requests_total Requests handled.\n"
    "# TYPE t_requests_total counter\n"
    "t_requests_total{route=\"a\",code=\"200\"} 3\n"
    "t_requests_total{route=\"b\",code=\"503\"} 1\n"
    "# HELP t_empty_total Never used. Path C:\\\\x\\nsecond line.\n"
    "# TYPE t_empty_total counter\n"
    "# HELP t_conns Open connections.\n"
    "# TYPE t_conns gauge\n"
    "t_conns -1\n"
    "# HELP t_dur_seconds Duration.\n"
    "# TYPE t_dur_seconds histogram\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"0.0005\"} 0\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"0.001\"} 1\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"0.0025\"} 1\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"0.005\"} 1\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"0.01\"} 1\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"0.025\"} 1\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"0.05\"} 1\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"0.1\"} 1\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"0.25\"} 2\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"0.5\"} 2\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"1\"} 2\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"2.5\"} 2\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"5\"} 2\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"10\"} 2\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"30\"} 2\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"60\"} 2\n"
    "t_dur_seconds_bucket{route=\"a\",le=\"+Inf\"} 3\n"
    "t_dur_seconds_sum{route=\"a\"} 120.2015\n"
    "t_dur_seconds_count{route=\"a\"} 3\n";

static void test_text_format_exact(void **state)
{
    (void)state;
    struct sg_metrics_shard *a = sg_metrics_shard_new(), *b = sg_metrics_shard_new();
    sg_metrics_family("t_requests_total", SG_METRIC_COUNTER, "Requests handled.");
    sg_metrics_family("t_empty_total", SG_METRIC_COUNTER, "Never used. Path C:\\x\nsecond line.");
    sg_metrics_family("t_conns", SG_METRIC_GAUGE, "Open connections.");
    sg_metrics_family("t_dur_seconds", SG_METRIC_HISTOGRAM, "Duration.");
    sg_series_t ra = sg_metrics_series("t_requests_total", "route=\"a\",code=\"200\"");
    sg_series_t rb = sg_metrics_series("t_requests_total", "route=\"b\",code=\"503\"");
    sg_series_t c = sg_metrics_series("t_conns", "");
    sg_series_t d = sg_metrics_series("t_dur_seconds", "route=\"a\"");
    sg_metrics_add(a, ra, 2);
    sg_metrics_add(b, ra, 1);
    sg_metrics_add(b, rb, 1);
    sg_metrics_gauge_add(a, c, 1);
    sg_metrics_gauge_add(b, c, -2);
    sg_metrics_observe(a, d, 0.001);
    sg_metrics_observe(b, d, 0.2005);
    sg_metrics_observe(b, d, 120);

    char *text = render();
    assert_string_equal(text, expected_text);
    free(text);
}

static void test_unlabelled_histogram_lines(void **state)
{
    (void)state;
    struct sg_metrics_shard *s = sg_metrics_shard_new();
    sg_metrics_family("t_u_seconds", SG_METRIC_HISTOGRAM, "U.");
    sg_series_t id = sg_metrics_series("t_u_seconds", "");
    sg_metrics_observe(s, id, 2);
    char *text = render();
    assert_non_null(strstr(text, "\nt_u_seconds_bucket{le=\"1\"} 0\n"));
    assert_non_null(strstr(text, "\nt_u_seconds_bucket{le=\"2.5\"} 1\n"));
    assert_non_null(strstr(text, "\nt_u_seconds_bucket{le=\"+Inf\"} 1\n"));
    assert_non_null(strstr(text, "\nt_u_seconds_sum 2\n"));
    assert_non_null(strstr(text, "\nt_u_seconds_count 1\n"));
    free(text);
}

static void test_label_escape(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(sg_metrics_label_escape("plain", buf, sizeof buf), "plain");
    assert_string_equal(sg_metrics_label_escape("a\\b\"c\nd", buf, sizeof buf), "a\\\\b\\\"c\\nd");
    assert_string_equal(sg_metrics_label_escape("", buf, sizeof buf), "");
    assert_ptr_equal(sg_metrics_label_escape("x", buf, sizeof buf), buf);

    /* Truncation never leaves half an escape sequence behind. */
    char small[4];
    assert_string_equal(sg_metrics_label_escape("ab\"cd", small, sizeof small), "ab");
    assert_string_equal(sg_metrics_label_escape("abcdef", small, sizeof small), "abc");
}

static void test_capacity_series(void **state)
{
    (void)state;
    struct sg_metrics_shard *s = sg_metrics_shard_new();
    sg_metrics_family("t_many_total", SG_METRIC_COUNTER, "Many.");
    char labels[32];
    for (int i = 0; i < MAX_SERIES; i++) {
        snprintf(labels, sizeof labels, "i=\"%d\"", i);
        assert_int_equal(sg_metrics_series("t_many_total", labels), i);
    }
    assert_int_equal(sg_metrics_series("t_many_total", "i=\"overflow\""), -1);
    assert_int_equal(sg_metrics_series("t_many_total", "i=\"again\""), -1);
    /* Existing series are still found once full. */
    assert_int_equal(sg_metrics_series("t_many_total", "i=\"17\""), 17);
    sg_metrics_add(s, -1, 5);
    sg_metrics_gauge_add(s, -1, 5);
    sg_metrics_observe(s, -1, 0.1);
    sg_metrics_gauge_set(-1, 5);
    sg_metrics_add(s, 17, 4);
    char *text = render();
    assert_int_equal(sample(text, "t_many_total{i=\"17\"}"), 4);
    assert_int_equal(sample(text, "t_many_total{i=\"0\"}"), 0);
    free(text);
}

static void test_capacity_slots(void **state)
{
    (void)state;
    struct sg_metrics_shard *s = sg_metrics_shard_new();
    sg_metrics_family("t_hist_seconds", SG_METRIC_HISTOGRAM, "Hist.");
    unsigned per = sg_metrics_latency_nbuckets + 2;
    unsigned fit = MAX_SLOTS / per;
    char labels[32];
    sg_series_t last = -1;
    for (unsigned i = 0; i < fit; i++) {
        snprintf(labels, sizeof labels, "i=\"%u\"", i);
        last = sg_metrics_series("t_hist_seconds", labels);
        assert_int_equal(last, (int)i);
    }
    assert_int_equal(sg_metrics_series("t_hist_seconds", "i=\"full\""), -1);
    /* The last series' slots are the top of the slot space: writing them
     * must stay in bounds (ASan checks). */
    sg_metrics_observe(s, last, 1e9);
    sg_metrics_observe(s, -1, 1e9);
    char *text = render();
    snprintf(labels, sizeof labels, "t_hist_seconds_count{i=\"%u\"}", fit - 1);
    assert_int_equal(sample(text, labels), 1);
    free(text);
}

/* ---- concurrency --------------------------------------------------------- */

#define ITERATIONS 200000

struct worker_arg {
    struct sg_metrics_shard *shard;
    sg_series_t counter, gauge, hist;
};

static atomic_int workers_done;

static void *worker(void *p)
{
    struct worker_arg *w = p;
    for (int i = 0; i < ITERATIONS; i++) {
        sg_metrics_add(w->shard, w->counter, 1);
        sg_metrics_gauge_add(w->shard, w->gauge, 2);
        sg_metrics_gauge_add(w->shard, w->gauge, -1);
        sg_metrics_observe(w->shard, w->hist, (i % 2) ? 0.001 : 0.2);
    }
    atomic_fetch_add(&workers_done, 1);
    return NULL;
}

/* Scrapes until both workers finish; every scrape must be consistent:
 * counters never go backwards and +Inf always equals _count. cmocka's
 * assertions longjmp to the test thread, so this thread only counts
 * problems and the test asserts on the count afterwards. */
static atomic_int scrape_errors;

static int scrape_once(int64_t *prev)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return 1;
    sg_metrics_render(b);
    size_t n = evbuffer_get_length(b);
    char *text = malloc(n + 1);
    int bad = 1;
    if (text) {
        evbuffer_remove(b, text, n);
        text[n] = '\0';
        int64_t now, inf, count;
        bad = !find_sample(text, "t_conc_total", &now) ||
              !find_sample(text, "t_conc_seconds_bucket{le=\"+Inf\"}", &inf) ||
              !find_sample(text, "t_conc_seconds_count", &count) || now < *prev || inf != count;
        if (!bad)
            *prev = now;
    }
    free(text);
    evbuffer_free(b);
    return bad;
}

static void *scraper(void *p)
{
    (void)p;
    int64_t prev = 0;
    for (int scrapes = 0; atomic_load(&workers_done) < 2 || scrapes < 3; scrapes++)
        if (scrape_once(&prev))
            atomic_fetch_add(&scrape_errors, 1);
    return NULL;
}

static void test_concurrent_workers_and_scraper(void **state)
{
    (void)state;
    sg_metrics_family("t_conc_total", SG_METRIC_COUNTER, "Conc.");
    sg_metrics_family("t_conc_gauge", SG_METRIC_GAUGE, "Conc.");
    sg_metrics_family("t_conc_seconds", SG_METRIC_HISTOGRAM, "Conc.");
    struct worker_arg w[2];
    for (int i = 0; i < 2; i++) {
        w[i].shard = sg_metrics_shard_new();
        w[i].counter = sg_metrics_series("t_conc_total", "");
        w[i].gauge = sg_metrics_series("t_conc_gauge", "");
        w[i].hist = sg_metrics_series("t_conc_seconds", "");
    }
    atomic_store(&workers_done, 0);
    atomic_store(&scrape_errors, 0);
    pthread_t t[3];
    assert_int_equal(pthread_create(&t[0], NULL, scraper, NULL), 0);
    assert_int_equal(pthread_create(&t[1], NULL, worker, &w[0]), 0);
    assert_int_equal(pthread_create(&t[2], NULL, worker, &w[1]), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);

    assert_int_equal(atomic_load(&scrape_errors), 0);
    char *text = render();
    assert_int_equal(sample(text, "t_conc_total"), 2 * ITERATIONS);
    assert_int_equal(sample(text, "t_conc_gauge"), 2 * ITERATIONS);
    assert_int_equal(sample(text, "t_conc_seconds_count"), 2 * ITERATIONS);
    assert_int_equal(sample(text, "t_conc_seconds_bucket{le=\"0.001\"}"), ITERATIONS);
    /* 200000 x 0.001 + 200000 x 0.2 seconds, exact in microseconds. */
    assert_non_null(strstr(text, "\nt_conc_seconds_sum 40200\n"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_same_labels_same_id, setup),
        cmocka_unit_test_setup(test_family_idempotent_and_undeclared, setup),
        cmocka_unit_test_setup(test_counter_sums_over_shards, setup),
        cmocka_unit_test_setup(test_gauge_add_sub_and_set, setup),
        cmocka_unit_test_setup(test_histogram_boundaries, setup),
        cmocka_unit_test_setup(test_histogram_nan_ignored, setup),
        cmocka_unit_test_setup(test_text_format_exact, setup),
        cmocka_unit_test_setup(test_unlabelled_histogram_lines, setup),
        cmocka_unit_test_setup(test_label_escape, setup),
        cmocka_unit_test_setup(test_capacity_series, setup),
        cmocka_unit_test_setup(test_capacity_slots, setup),
        cmocka_unit_test_setup(test_concurrent_workers_and_scraper, setup),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    sg_metrics_reset_for_tests(); /* leave nothing for LeakSanitizer */
    return failed;
}
