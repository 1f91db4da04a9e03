/* Prometheus metrics with per-worker shards and no locks on the hot path.
 *
 * A series (family + label set) is registered once, process-wide, and gets
 * a small integer id; registration takes a mutex and is meant for first use
 * only (callers memoise ids). Each worker owns a shard: a fixed array of
 * counters indexed by series id, written only by that worker with relaxed
 * atomics, summed over all shards when /metrics is scraped. */
#ifndef STRANGLER_METRICS_H
#define STRANGLER_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct sg_metrics_shard;

enum sg_metric_type { SG_METRIC_COUNTER, SG_METRIC_GAUGE, SG_METRIC_HISTOGRAM };

typedef int32_t sg_series_t; /* -1 = invalid / registry full */

/* Declares a family (idempotent). Must precede its series. */
void sg_metrics_family(const char *name, enum sg_metric_type type, const char *help);

/* `labels` is the already-escaped inside of the braces, e.g.
 * route="bar",upstream="monolith",code="200" (may be ""). Returns the same
 * id for the same family+labels. Use sg_metrics_label_escape for values. */
sg_series_t sg_metrics_series(const char *family, const char *labels);

/* Escapes a label value (\\, \", \n) into buf; returns buf. */
const char *sg_metrics_label_escape(const char *value, char *buf, size_t buflen);

/* Shards: one per worker, plus one for the main thread. */
struct sg_metrics_shard *sg_metrics_shard_new(void);

void sg_metrics_add(struct sg_metrics_shard *s, sg_series_t id, uint64_t v); /* counter */
void sg_metrics_gauge_add(struct sg_metrics_shard *s, sg_series_t id, int64_t delta); /* gauge */
void sg_metrics_observe(struct sg_metrics_shard *s, sg_series_t id, double value); /* histogram, seconds */

/* Process-wide gauge set by the main thread (e.g. config generation). */
void sg_metrics_gauge_set(sg_series_t id, int64_t value);

/* Renders every family in text format 0.0.4, summing shards. */
void sg_metrics_render(struct evbuffer *out);

/* Histogram buckets (seconds) used for every histogram family. */
extern const double sg_metrics_latency_buckets[];
extern const unsigned sg_metrics_latency_nbuckets;

/* Tests only: forgets every family and series, frees every shard (pointers
 * from sg_metrics_shard_new become invalid) and clears process-wide gauges.
 * Call only while no other thread uses the registry. */
void sg_metrics_reset_for_tests(void);

#endif
