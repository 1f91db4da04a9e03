/* Prometheus metrics: a process-wide registry of families and series, and
 * per-worker shards of counters that are summed when /metrics is scraped.
 *
 * The hot path (add, gauge_add, observe) takes no lock and issues no locked
 * instruction: each shard has exactly one writer, so a relaxed load followed
 * by a relaxed store cannot lose an update, and the atomics only exist so the
 * scraping thread may read the slots at the same time without a data race.
 * Registration and rendering take the registry mutex; registration happens
 * once per series because callers memoise the ids.
 *
 * Slot layout: a counter or gauge series owns one slot. A histogram series
 * owns nbuckets + 2 slots: nbuckets + 1 non-cumulative buckets (the last one
 * for values above the largest bound) and the sum. The count is not stored:
 * rendering derives it as the total of all buckets, so `+Inf` and `_count`
 * always agree with the cumulative buckets even when a scrape races with an
 * observation (a separate count slot could be read before its bucket).
 *
 * The histogram sum is kept as integer microseconds, not as a double: integer
 * sums are exact and independent of the order in which shards are added, and
 * 2^64 us is ~584,000 years of accumulated latency (nanoseconds would wrap
 * after ~21 days at 100k requests/s of 100 ms). Microseconds are well below
 * the smallest bucket (500 us). */
#include "strangler/metrics.h"

#include "strangler/log.h"

#include <assert.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAMILIES 256
#define MAX_SERIES 8192
#define MAX_SLOTS 65536
#define INDEX_SIZE (2 * MAX_SERIES) /* open addressing, load factor <= 1/2 */
#define NBUCKETS 16
#define HIST_SLOTS (NBUCKETS + 2)
#define SUM_SLOT (NBUCKETS + 1) /* offset of the sum within a histogram */
#define MAX_SUM_SECONDS 1e9     /* clamp so the microsecond conversion fits */

const double sg_metrics_latency_buckets[NBUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};
const unsigned sg_metrics_latency_nbuckets = NBUCKETS;

struct family {
    char *name;
    char *help; /* already escaped for the HELP line */
    enum sg_metric_type type;
    int32_t first, last; /* chain of this family's series, in registration order */
};

struct series {
    uint32_t slot;   /* first slot in every shard */
    uint16_t family; /* index into reg.families */
    int32_t next;    /* next series of the same family, -1 at the end */
    char *labels;
};

struct sg_metrics_shard {
    struct sg_metrics_shard *next; /* registry list, guarded by reg.lock */
    _Atomic uint64_t slot[];       /* MAX_SLOTS, never reallocated */
};

/* Everything but the slots and gauge bases is guarded by `lock`. The hot path
 * reads series[id].slot without it: that field is written once, before the id
 * is handed out, so whoever legitimately holds the id already sees it. */
static struct {
    pthread_mutex_t lock;
    struct family families[MAX_FAMILIES];
    unsigned nfamilies;
    struct series series[MAX_SERIES];
    unsigned nseries;
    uint32_t nslots;
    int32_t index[INDEX_SIZE]; /* series id + 1, 0 = empty */
    struct sg_metrics_shard *shards;
    bool warned_full;
    char le_text[NBUCKETS][32]; /* bucket bounds as printed, built on first render */
    bool le_ready;
} reg = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Absolute values from sg_metrics_gauge_set, indexed by series id. Rendered
 * as base + the shards' deltas, so a gauge may also be moved with gauge_add. */
static _Atomic int64_t gauge_base[MAX_SERIES];

/* ---- hot path ------------------------------------------------------------ */

static inline bool id_valid(sg_series_t id)
{
    return (uint32_t)id < MAX_SERIES; /* rejects -1 and other negatives too */
}

static inline enum sg_metric_type series_type(sg_series_t id)
{
    return reg.families[reg.series[id].family].type;
}

/* Single writer per shard: load + store is enough and avoids a lock prefix. */
static inline void slot_add(struct sg_metrics_shard *s, uint32_t i, uint64_t v)
{
    uint64_t old = atomic_load_explicit(&s->slot[i], memory_order_relaxed);
    atomic_store_explicit(&s->slot[i], old + v, memory_order_relaxed);
}

void sg_metrics_add(struct sg_metrics_shard *s, sg_series_t id, uint64_t v)
{
    if (!s || !id_valid(id))
        return;
    assert(series_type(id) == SG_METRIC_COUNTER);
    slot_add(s, reg.series[id].slot, v);
}

void sg_metrics_gauge_add(struct sg_metrics_shard *s, sg_series_t id, int64_t delta)
{
    if (!s || !id_valid(id))
        return;
    assert(series_type(id) == SG_METRIC_GAUGE);
    /* Two's complement wrap-around: unsigned addition of the converted delta
     * is the signed addition, and it is well defined. */
    slot_add(s, reg.series[id].slot, (uint64_t)delta);
}

/* Index of the first bucket whose inclusive upper bound holds v; NBUCKETS
 * for values above the last bound. Linear: proxy latencies mostly land in
 * the first few buckets, so this usually exits after a handful of compares. */
static inline unsigned bucket_index(double v)
{
    unsigned i = 0;
    while (i < NBUCKETS && v > sg_metrics_latency_buckets[i])
        i++;
    return i;
}

static inline uint64_t seconds_to_micros(double v)
{
    if (v > MAX_SUM_SECONDS)
        v = MAX_SUM_SECONDS;
    return (uint64_t)(v * 1e6 + 0.5);
}

void sg_metrics_observe(struct sg_metrics_shard *s, sg_series_t id, double value)
{
    if (!s || !id_valid(id) || value != value) /* NaN has no bucket */
        return;
    assert(series_type(id) == SG_METRIC_HISTOGRAM);
    if (value < 0) /* a clock step backwards; count it as instantaneous */
        value = 0;
    uint32_t base = reg.series[id].slot;
    slot_add(s, base + bucket_index(value), 1);
    slot_add(s, base + SUM_SLOT, seconds_to_micros(value));
}

void sg_metrics_gauge_set(sg_series_t id, int64_t value)
{
    if (!id_valid(id))
        return;
    assert(series_type(id) == SG_METRIC_GAUGE);
    atomic_store_explicit(&gauge_base[id], value, memory_order_relaxed);
}

/* ---- escaping ------------------------------------------------------------ */

/* Escapes `in` into buf, truncating at a character boundary so that an
 * escape sequence is never cut in half. `quote` says whether '"' is escaped:
 * label values need it, HELP text does not (text format 0.0.4). */
static void escape_into(const char *in, char *buf, size_t buflen, bool quote)
{
    size_t o = 0;
    for (; *in; in++) {
        char e = 0;
        if (*in == '\\')
            e = '\\';
        else if (*in == '\n')
            e = 'n';
        else if (*in == '"' && quote)
            e = '"';
        size_t need = e ? 2 : 1;
        if (o + need >= buflen)
            break;
        if (e) {
            buf[o++] = '\\';
            buf[o++] = e;
        } else {
            buf[o++] = *in;
        }
    }
    buf[o] = '\0';
}

const char *sg_metrics_label_escape(const char *value, char *buf, size_t buflen)
{
    if (buflen == 0)
        return buf;
    escape_into(value ? value : "", buf, buflen, true);
    return buf;
}

/* ---- registration -------------------------------------------------------- */

/* [a-zA-Z_:][a-zA-Z0-9_:]*, the Prometheus metric name syntax. A bad name
 * would make the whole scrape unparseable, so it is refused up front. */
static bool valid_metric_name(const char *n)
{
    if (!*n || (*n >= '0' && *n <= '9'))
        return false;
    for (; *n; n++) {
        char c = *n;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == ':';
        if (!ok)
            return false;
    }
    return true;
}

static int find_family(const char *name)
{
    for (unsigned i = 0; i < reg.nfamilies; i++)
        if (strcmp(reg.families[i].name, name) == 0)
            return (int)i;
    return -1;
}

static char *escape_help(const char *help)
{
    size_t cap = 2 * strlen(help) + 1; /* every byte may double */
    char *buf = malloc(cap);
    if (buf)
        escape_into(help, buf, cap, false);
    return buf;
}

static void add_family(const char *name, enum sg_metric_type type, const char *help)
{
    if (reg.nfamilies == MAX_FAMILIES) {
        sg_warn("metrics: too many families, %s not registered", name);
        return;
    }
    struct family *f = &reg.families[reg.nfamilies];
    f->name = strdup(name);
    f->help = escape_help(help ? help : "");
    if (!f->name || !f->help) {
        free(f->name);
        free(f->help);
        sg_warn("metrics: out of memory registering %s", name);
        return;
    }
    f->type = type;
    f->first = f->last = -1;
    reg.nfamilies++;
}

void sg_metrics_family(const char *name, enum sg_metric_type type, const char *help)
{
    if (!name || !valid_metric_name(name)) {
        sg_warn("metrics: invalid family name \"%s\"", name ? name : "(null)");
        return;
    }
    pthread_mutex_lock(&reg.lock);
    int i = find_family(name);
    if (i < 0)
        add_family(name, type, help);
    else if (reg.families[i].type != type)
        sg_warn("metrics: family %s redeclared with another type; keeping the first", name);
    pthread_mutex_unlock(&reg.lock);
}

/* FNV-1a over the labels, seeded with the family so that equal label sets of
 * different families spread out too. */
static uint32_t series_hash(unsigned family, const char *labels)
{
    uint32_t h = 2166136261u ^ (family * 16777619u);
    for (const unsigned char *p = (const unsigned char *)labels; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

/* Returns the index slot where family+labels lives, or the empty slot where
 * it would be inserted. The table is never more than half full, so the probe
 * always ends. */
static uint32_t index_probe(unsigned family, const char *labels)
{
    uint32_t i = series_hash(family, labels) & (INDEX_SIZE - 1);
    for (;; i = (i + 1) & (INDEX_SIZE - 1)) {
        int32_t e = reg.index[i];
        if (e == 0)
            return i;
        const struct series *s = &reg.series[e - 1];
        if (s->family == family && strcmp(s->labels, labels) == 0)
            return i;
    }
}

static uint32_t slots_for(enum sg_metric_type type)
{
    return type == SG_METRIC_HISTOGRAM ? HIST_SLOTS : 1;
}

/* Logged once: a full registry is a configuration-sized problem (too many
 * routes x upstreams x codes), and one line per request would flood stderr. */
static sg_series_t registry_full(const char *family)
{
    if (!reg.warned_full) {
        reg.warned_full = true;
        sg_warn("metrics: registry full (%d series, %d slots); %s and later series are not recorded",
                MAX_SERIES, MAX_SLOTS, family);
    }
    return -1;
}

static sg_series_t add_series(unsigned fi, const char *labels, uint32_t at)
{
    struct family *f = &reg.families[fi];
    uint32_t need = slots_for(f->type);
    if (reg.nseries == MAX_SERIES || MAX_SLOTS - reg.nslots < need)
        return registry_full(f->name);
    char *copy = strdup(labels);
    if (!copy) {
        sg_warn("metrics: out of memory registering a series of %s", f->name);
        return -1;
    }
    sg_series_t id = (sg_series_t)reg.nseries++;
    reg.series[id] = (struct series){ .slot = reg.nslots, .family = (uint16_t)fi, .next = -1, .labels = copy };
    reg.nslots += need;
    reg.index[at] = id + 1;
    if (f->last < 0)
        f->first = id;
    else
        reg.series[f->last].next = id;
    f->last = id;
    return id;
}

sg_series_t sg_metrics_series(const char *family, const char *labels)
{
    if (!family)
        return -1;
    if (!labels)
        labels = "";
    pthread_mutex_lock(&reg.lock);
    sg_series_t id = -1;
    int fi = find_family(family);
    if (fi < 0) {
        sg_warn("metrics: series of undeclared family %s", family);
    } else {
        uint32_t at = index_probe((unsigned)fi, labels);
        id = reg.index[at] ? reg.index[at] - 1 : add_series((unsigned)fi, labels, at);
    }
    pthread_mutex_unlock(&reg.lock);
    return id;
}

struct sg_metrics_shard *sg_metrics_shard_new(void)
{
    struct sg_metrics_shard *s = calloc(1, sizeof *s + MAX_SLOTS * sizeof s->slot[0]);
    if (!s) {
        sg_warn("metrics: out of memory allocating a shard");
        return NULL;
    }
    pthread_mutex_lock(&reg.lock);
    s->next = reg.shards;
    reg.shards = s;
    pthread_mutex_unlock(&reg.lock);
    return s;
}

/* ---- rendering ----------------------------------------------------------- */

/* Sums n consecutive slots starting at `base` over every shard into out[]. */
static void sum_slots(uint32_t base, unsigned n, uint64_t *out)
{
    memset(out, 0, n * sizeof *out);
    for (const struct sg_metrics_shard *s = reg.shards; s; s = s->next)
        for (unsigned i = 0; i < n; i++)
            out[i] += atomic_load_explicit(&s->slot[base + i], memory_order_relaxed);
}

/* Converts without relying on implementation-defined unsigned-to-signed
 * conversion: the sum of deltas is a two's complement value. */
static int64_t u64_to_i64(uint64_t u)
{
    return u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

/* Shortest decimal that reads back as the same double, as Prometheus clients
 * print `le` (0.0005, not 0.00050000000000000001). %g switches to exponent
 * form when the exponent reaches the precision ("1e+01" for 10 at %.1g), so
 * for magnitudes a plain decimal can express, the precision keeps growing
 * until it is plain. */
static void format_double(double v, char *buf, size_t len)
{
    double mag = v < 0 ? -v : v;
    bool plain_possible = mag == 0 || (mag >= 1e-4 && mag < 1e17);
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v && !(plain_possible && strchr(buf, 'e')))
            return;
    }
}

/* Exact decimal seconds from microseconds, without trailing zeros. */
static void format_micros(uint64_t us, char *buf, size_t len)
{
    uint64_t frac = us % 1000000;
    int n = snprintf(buf, len, "%" PRIu64, us / 1000000);
    if (frac == 0 || n < 0 || (size_t)n >= len)
        return;
    snprintf(buf + n, len - (size_t)n, ".%06" PRIu64, frac);
    char *end = buf + strlen(buf) - 1;
    while (*end == '0')
        *end-- = '\0';
}

static void prepare_le_text(void)
{
    if (reg.le_ready)
        return;
    for (unsigned i = 0; i < NBUCKETS; i++)
        format_double(sg_metrics_latency_buckets[i], reg.le_text[i], sizeof reg.le_text[i]);
    reg.le_ready = true;
}

static const char *const type_names[] = {
    [SG_METRIC_COUNTER] = "counter",
    [SG_METRIC_GAUGE] = "gauge",
    [SG_METRIC_HISTOGRAM] = "histogram",
};

/* `name{labels} value`, or `name value` when there are no labels. */
static void render_sample(struct evbuffer *out, const char *name, const char *suffix, const char *labels,
                          const char *value)
{
    if (*labels)
        evbuffer_add_printf(out, "%s%s{%s} %s\n", name, suffix, labels, value);
    else
        evbuffer_add_printf(out, "%s%s %s\n", name, suffix, value);
}

static void render_scalar(struct evbuffer *out, const struct family *f, const struct series *s, sg_series_t id)
{
    uint64_t sum;
    char value[32];
    sum_slots(s->slot, 1, &sum);
    if (f->type == SG_METRIC_GAUGE) {
        sum += (uint64_t)atomic_load_explicit(&gauge_base[id], memory_order_relaxed);
        snprintf(value, sizeof value, "%" PRId64, u64_to_i64(sum));
    } else {
        snprintf(value, sizeof value, "%" PRIu64, sum);
    }
    render_sample(out, f->name, "", s->labels, value);
}

static void render_bucket(struct evbuffer *out, const struct family *f, const struct series *s, const char *le,
                          uint64_t count)
{
    evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", f->name, s->labels, *s->labels ? "," : "",
                        le, count);
}

static void render_histogram(struct evbuffer *out, const struct family *f, const struct series *s)
{
    uint64_t v[HIST_SLOTS];
    char text[32];
    sum_slots(s->slot, HIST_SLOTS, v);
    uint64_t cumulative = 0;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        cumulative += v[i];
        render_bucket(out, f, s, reg.le_text[i], cumulative);
    }
    cumulative += v[NBUCKETS];
    render_bucket(out, f, s, "+Inf", cumulative);
    format_micros(v[SUM_SLOT], text, sizeof text);
    render_sample(out, f->name, "_sum", s->labels, text);
    snprintf(text, sizeof text, "%" PRIu64, cumulative);
    render_sample(out, f->name, "_count", s->labels, text);
}

static void render_family(struct evbuffer *out, const struct family *f)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, type_names[f->type]);
    for (int32_t id = f->first; id >= 0; id = reg.series[id].next) {
        const struct series *s = &reg.series[id];
        if (f->type == SG_METRIC_HISTOGRAM)
            render_histogram(out, f, s);
        else
            render_scalar(out, f, s, id);
    }
}

/* Holds the mutex for the whole scrape so the family and shard lists cannot
 * change under it; a worker registering a brand-new series waits at most one
 * scrape, and counting itself never waits. */
void sg_metrics_render(struct evbuffer *out)
{
    pthread_mutex_lock(&reg.lock);
    prepare_le_text();
    for (unsigned i = 0; i < reg.nfamilies; i++)
        render_family(out, &reg.families[i]);
    pthread_mutex_unlock(&reg.lock);
}

/* ---- tests --------------------------------------------------------------- */

void sg_metrics_reset_for_tests(void)
{
    pthread_mutex_lock(&reg.lock);
    for (unsigned i = 0; i < reg.nfamilies; i++) {
        free(reg.families[i].name);
        free(reg.families[i].help);
    }
    for (unsigned i = 0; i < reg.nseries; i++) {
        free(reg.series[i].labels);
        atomic_store_explicit(&gauge_base[i], 0, memory_order_relaxed);
    }
    while (reg.shards) {
        struct sg_metrics_shard *next = reg.shards->next;
        free(reg.shards);
        reg.shards = next;
    }
    reg.nfamilies = reg.nseries = reg.nslots = 0;
    memset(reg.index, 0, sizeof reg.index);
    reg.warned_full = false;
    pthread_mutex_unlock(&reg.lock);
}
