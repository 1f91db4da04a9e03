/* Comparing shadow responses (see compare.h).
 *
 * Where the state lives, and who locks what:
 *
 * - A summary (struct sg_cmp) belongs to one shadow and only its worker
 *   touches it. It is filled as both responses stream past: the primary's
 *   through the exchange's pointer to the shadow, the shadow's (or noise
 *   probe's) from its own connection. Whichever side ends last runs
 *   sg_compare_run from a deferred callback, after the client's response
 *   has been handed to its connection.
 * - Statistics are per worker (struct cmp_ws, one per worker id): counts,
 *   differing pointers, recent mismatches. The worker updates them once per
 *   comparison under the worker's own mutex, which only the admin thread
 *   (GET /mirror/diffs) ever contends for; nothing on the request path waits
 *   for another worker.
 * - What must be the same in every worker lives in a process-wide entry per
 *   (route name, upstream name), struct cmp_g, under one mutex that the
 *   request path takes only when something new appears: a learnt noise
 *   pointer (bounded), a pointer label for the metric (bounded). Workers
 *   keep copies and notice changes with one atomic load of a generation.
 *   The mirror_diff rate limit (per process) is two atomics in that entry,
 *   touched only on a mismatch.
 *
 * Entries are keyed by names, not by snapshot objects, so statistics and
 * learnt noise survive reloads; they are kept until the process exits
 * (bounded by the (route, upstream) pairs ever configured). */
#include "strangler/compare.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "strangler/clock.h"
#include "strangler/json.h"
#include "strangler/log.h"
#include "strangler/metrics.h"
#include "strangler/worker.h"

#define PTR_MAX 512 /* a pointer longer than this is reported at its parent */
#define DEPTH_MAX 64 /* deeper subtrees are compared whole */
#define VALUE_MAX 256 /* bytes of a value in a mirror_diff line */
#define LINE_BODY_MAX 16 /* body differences listed per mirror_diff line */
#define DISTINCT_MAX 64 /* distinct pointers counted per comparison */
#define RECENT_MAX 50 /* mismatches kept per worker and reported */
#define WPTRS_MAX 128 /* distinct pointers counted per worker entry; the rest: "other" */
#define WHDRS_MAX 32 /* header names counted per worker entry */
#define FIELDS_MAX 20 /* pointer labels per (route, upstream) in the metric */
#define NOISE_MAX 32 /* learnt noise pointers per (route, upstream) */
#define REPORT_TOP 20 /* pointers listed per entry in the report */
#define MAX_WS 256 /* worker ids (config: workers <= 256) */
/* Noise probes: per worker and (route, upstream) at most one every
 * NOISE_PROBE_INTERVAL_US, and at most NOISE_PROBES_IN_FLIGHT per worker. */
#define NOISE_PROBE_INTERVAL_US 500000u
#define NOISE_PROBES_IN_FLIGHT 4u

static const char other_label[] = "other";

/* ==== JSON Pointers ======================================================== */

void sg_json_pointer_free(struct sg_json_pointer *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->seg[i]);
    free(p->seg);
    p->seg = NULL;
    p->n = 0;
}

static char *decode_segment(const char *s, size_t len)
{
    char *out = malloc(len + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '~') {
            if (i + 1 >= len || (s[i + 1] != '0' && s[i + 1] != '1')) {
                free(out);
                return NULL;
            }
            *o++ = s[i + 1] == '0' ? '~' : '/';
            i++;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

bool sg_json_pointer_parse(const char *s, struct sg_json_pointer *out)
{
    out->seg = NULL;
    out->n = 0;
    if (!*s)
        return true;
    if (*s != '/')
        return false;
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += *p == '/';
    out->seg = calloc(n, sizeof *out->seg);
    if (!out->seg)
        return false;
    const char *p = s + 1;
    for (;;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (!(out->seg[out->n] = decode_segment(p, len))) {
            sg_json_pointer_free(out);
            return false;
        }
        out->n++;
        if (!end)
            return true;
        p = end + 1;
    }
}

bool sg_json_pointer_match(const struct sg_json_pointer *pat, const char *const *seg, const size_t *seglen, size_t n)
{
    if (pat->n != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        const char *ps = pat->seg[i];
        if (ps[0] == '*' && ps[1] == '\0')
            continue;
        if (strlen(ps) != seglen[i] || memcmp(ps, seg[i], seglen[i]) != 0)
            return false;
    }
    return true;
}

/* ==== the diff walk ========================================================= */

static bool scalar_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b))
        return false;
    if (json_is_string(a))
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    return true; /* true, false, null */
}

bool sg_json_equal(const json_t *a, const json_t *b)
{
    if (json_is_object(a) && json_is_object(b)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *key;
        json_t *av;
        json_object_foreach ((json_t *)a, key, av) {
            const json_t *bv = json_object_get(b, key);
            if (!bv || !sg_json_equal(av, bv))
                return false;
        }
        return true;
    }
    if (json_is_array(a) && json_is_array(b)) {
        size_t n = json_array_size(a);
        if (n != json_array_size(b))
            return false;
        for (size_t i = 0; i < n; i++)
            if (!sg_json_equal(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    if (json_is_object(a) || json_is_object(b) || json_is_array(a) || json_is_array(b))
        return false;
    return scalar_equal(a, b);
}

struct walk {
    const struct sg_json_diff_opts *o;
    char ptr[PTR_MAX + 1], norm[PTR_MAX + 1];
    size_t plen, nlen;
    const char *seg[DEPTH_MAX];
    size_t seglen[DEPTH_MAX];
    size_t plen_at[DEPTH_MAX], nlen_at[DEPTH_MAX];
    char idx[DEPTH_MAX][24];
    size_t depth;
    size_t real, noise;
};

static size_t escaped_len(const char *s, size_t n)
{
    size_t e = n;
    for (size_t i = 0; i < n; i++)
        e += s[i] == '~' || s[i] == '/';
    return e;
}

static void append_escaped(char *buf, size_t *len, const char *s, size_t n)
{
    buf[(*len)++] = '/';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '~' || s[i] == '/') {
            buf[(*len)++] = '~';
            buf[(*len)++] = s[i] == '~' ? '0' : '1';
        } else {
            buf[(*len)++] = s[i];
        }
    }
    buf[*len] = '\0';
}

/* One level down: an object key, or an array index (normalised to "*"). */
static bool push(struct walk *w, const char *key, size_t klen, bool index)
{
    if (w->depth >= DEPTH_MAX || w->plen + 1 + escaped_len(key, klen) > PTR_MAX)
        return false;
    w->plen_at[w->depth] = w->plen;
    w->nlen_at[w->depth] = w->nlen;
    append_escaped(w->ptr, &w->plen, key, klen);
    if (index)
        append_escaped(w->norm, &w->nlen, "*", 1);
    else
        append_escaped(w->norm, &w->nlen, key, klen);
    w->seg[w->depth] = key;
    w->seglen[w->depth] = klen;
    w->depth++;
    return true;
}

static void pop(struct walk *w)
{
    w->depth--;
    w->plen = w->plen_at[w->depth];
    w->nlen = w->nlen_at[w->depth];
    w->ptr[w->plen] = '\0';
    w->norm[w->nlen] = '\0';
}

static bool matches_any(const struct walk *w, const struct sg_json_pointer *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (sg_json_pointer_match(&p[i], w->seg, w->seglen, w->depth))
            return true;
    return false;
}

static void report(struct walk *w, const json_t *a, const json_t *b, bool noise)
{
    if (noise)
        w->noise++;
    else
        w->real++;
    if (w->o->fn)
        w->o->fn(w->o->ctx, w->ptr, w->norm, a, b, noise);
}

static void node(struct walk *w, const json_t *a, const json_t *b);

static void child(struct walk *w, const char *key, size_t klen, bool index, const json_t *a, const json_t *b,
                  const json_t *pa, const json_t *pb, bool *reported_parent)
{
    if (push(w, key, klen, index)) {
        node(w, a, b);
        pop(w);
    } else if (!*reported_parent && !(a && b && sg_json_equal(a, b))) {
        /* Too long or too deep to name: the parent stands for it, once. */
        *reported_parent = true;
        report(w, pa, pb, false);
    }
}

static void objects(struct walk *w, const json_t *a, const json_t *b)
{
    const char *key;
    json_t *v;
    bool parent = false;
    json_object_foreach ((json_t *)a, key, v)
        child(w, key, strlen(key), false, v, json_object_get(b, key), a, b, &parent);
    json_object_foreach ((json_t *)b, key, v)
        if (!json_object_get(a, key))
            child(w, key, strlen(key), false, NULL, v, a, b, &parent);
}

static void arrays(struct walk *w, const json_t *a, const json_t *b)
{
    size_t na = json_array_size(a), nb = json_array_size(b), n = na > nb ? na : nb;
    bool parent = false;
    for (size_t i = 0; i < n; i++) {
        char *ix = w->depth < DEPTH_MAX ? w->idx[w->depth] : w->idx[0];
        int len = snprintf(ix, sizeof w->idx[0], "%zu", i);
        child(w, ix, (size_t)len, true, i < na ? json_array_get(a, i) : NULL, i < nb ? json_array_get(b, i) : NULL,
              a, b, &parent);
    }
}

static void node(struct walk *w, const json_t *a, const json_t *b)
{
    const struct sg_json_diff_opts *o = w->o;
    if ((!a && !b) || matches_any(w, o->ignore, o->n_ignore))
        return; /* absent on both sides (e.g. two empty bodies) is no difference */
    if (matches_any(w, o->noise, o->n_noise)) {
        if (!(a && b && sg_json_equal(a, b)))
            report(w, a, b, true);
        return;
    }
    if (!a || !b)
        report(w, a, b, false);
    else if (json_is_object(a) && json_is_object(b))
        objects(w, a, b);
    else if (json_is_array(a) && json_is_array(b))
        arrays(w, a, b);
    else if (json_is_object(a) || json_is_array(a) || json_is_object(b) || json_is_array(b) || !scalar_equal(a, b))
        report(w, a, b, false);
}

size_t sg_json_diff(const json_t *a, const json_t *b, const struct sg_json_diff_opts *o, size_t *noise_out)
{
    struct walk *w = calloc(1, sizeof *w); /* ~10 KiB: not on a worker's stack */
    if (!w)
        return a && b && sg_json_equal(a, b) ? 0 : 1;
    w->o = o;
    node(w, a, b);
    size_t real = w->real;
    if (noise_out)
        *noise_out = w->noise;
    free(w);
    return real;
}

/* ==== response summaries ========================================================= */

struct cmp_side {
    int status;
    bool head, done, too_large, no_budget;
    char *encoding; /* Content-Encoding, NULL: none */
    char **hvals; /* one per compare.headers; NULL: absent */
    char *body; /* json: the bytes so far */
    size_t len, cap;
    uint64_t body_len;
    EVP_MD_CTX *md; /* bytes: the running digest */
    unsigned char digest[32];
};

struct sg_cmp {
    const struct sg_compare *k;
    struct cmp_side side[2];
    uint64_t held; /* bytes counted in the worker's budget */
};

struct sg_cmp *sg_cmp_new(const struct sg_compare *k)
{
    struct sg_cmp *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->k = k;
    for (int i = 0; i < 2; i++) {
        if (k->n_headers && !(c->side[i].hvals = calloc(k->n_headers, sizeof(char *)))) {
            sg_cmp_free(c, (struct sg_cmp_budget){ NULL, 0 });
            return NULL;
        }
    }
    return c;
}

static bool charge(struct sg_cmp *c, struct cmp_side *s, size_t n, struct sg_cmp_budget b)
{
    if (s->no_budget)
        return false;
    if (*b.used + n > b.max) {
        s->no_budget = true;
        return false;
    }
    *b.used += n;
    c->held += n;
    return true;
}

static void uncharge(struct sg_cmp *c, uint64_t n, struct sg_cmp_budget b)
{
    if (n > c->held)
        n = c->held;
    c->held -= n;
    if (b.used)
        *b.used -= n;
}

/* All values of a field, joined with ", " (RFC 9110 5.3). */
static char *field_value(struct sg_cmp *c, struct cmp_side *s, const struct sg_headers *h, const char *name,
                         struct sg_cmp_budget b)
{
    size_t total = 0, n = 0;
    for (size_t i = 0; i < h->n; i++)
        if (sg_str_ieq_c(h->v[i].name, name)) {
            total += h->v[i].value.len + (n ? 2 : 0);
            n++;
        }
    if (n == 0 || !charge(c, s, total + 1, b))
        return NULL;
    char *out = malloc(total + 1), *o = out;
    if (!out) {
        s->no_budget = true;
        return NULL;
    }
    n = 0;
    for (size_t i = 0; i < h->n; i++)
        if (sg_str_ieq_c(h->v[i].name, name)) {
            if (n++) {
                memcpy(o, ", ", 2);
                o += 2;
            }
            memcpy(o, h->v[i].value.p, h->v[i].value.len);
            o += h->v[i].value.len;
        }
    *o = '\0';
    return out;
}

void sg_cmp_head(struct sg_cmp *c, enum sg_cmp_who who, int status, const struct sg_headers *h,
                 struct sg_cmp_budget b)
{
    struct cmp_side *s = &c->side[who];
    if (s->head)
        return;
    s->head = true;
    s->status = status;
    const struct sg_compare *k = c->k;
    for (size_t i = 0; i < k->n_headers; i++)
        s->hvals[i] = field_value(c, s, h, k->headers[i], b);
    s->encoding = field_value(c, s, h, "content-encoding", b);
    if (k->body == SG_CMP_BODY_BYTES) {
        s->md = EVP_MD_CTX_new();
        if (!s->md || !EVP_DigestInit_ex(s->md, EVP_sha256(), NULL))
            s->no_budget = true;
    }
}

void sg_cmp_body(struct sg_cmp *c, enum sg_cmp_who who, const char *p, size_t n, struct sg_cmp_budget b)
{
    struct cmp_side *s = &c->side[who];
    const struct sg_compare *k = c->k;
    if (!s->head || s->done || s->too_large || s->no_budget || k->body == SG_CMP_BODY_NONE || n == 0)
        return;
    s->body_len += n;
    if (s->body_len > k->max_body_bytes) {
        s->too_large = true;
        uncharge(c, s->cap, b);
        free(s->body);
        s->body = NULL;
        s->len = s->cap = 0;
        return;
    }
    if (k->body == SG_CMP_BODY_BYTES) {
        if (s->md && !EVP_DigestUpdate(s->md, p, n))
            s->no_budget = true;
        return;
    }
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n)
            cap *= 2;
        if (cap > k->max_body_bytes)
            cap = (size_t)k->max_body_bytes;
        if (!charge(c, s, cap - s->cap, b))
            return;
        char *nb = realloc(s->body, cap);
        if (!nb) {
            s->no_budget = true;
            return;
        }
        s->body = nb;
        s->cap = cap;
    }
    memcpy(s->body + s->len, p, n);
    s->len += n;
}

void sg_cmp_end(struct sg_cmp *c, enum sg_cmp_who who)
{
    struct cmp_side *s = &c->side[who];
    if (!s->head || s->done)
        return;
    s->done = true;
    unsigned int dl = 0;
    if (s->md && !s->too_large && !s->no_budget && !EVP_DigestFinal_ex(s->md, s->digest, &dl))
        s->no_budget = true;
}

void sg_cmp_free(struct sg_cmp *c, struct sg_cmp_budget b)
{
    if (!c)
        return;
    for (int i = 0; i < 2; i++) {
        struct cmp_side *s = &c->side[i];
        for (size_t j = 0; s->hvals && j < c->k->n_headers; j++)
            free(s->hvals[j]);
        free(s->hvals);
        free(s->encoding);
        free(s->body);
        EVP_MD_CTX_free(s->md);
    }
    uncharge(c, c->held, b);
    free(c);
}

/* ==== process-wide and per-worker state ========================================= */

struct noise_ptr {
    char *ptr; /* normalised */
    uint64_t seen; /* probes that saw it differ */
};

struct field_label {
    char *ptr;
    sg_series_t id;
};

/* Per (route, upstream), process-wide; guarded by g_lock except the atomics. */
struct cmp_g {
    struct cmp_g *next;
    char *route, *upstream;
    struct noise_ptr noise[NOISE_MAX];
    size_t n_noise;
    atomic_uint_fast64_t noise_gen;
    struct field_label fields[FIELDS_MAX];
    size_t n_fields;
    sg_series_t other_id;
    atomic_uint_fast64_t log_sec;
    atomic_uint log_count;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cmp_g *g_first, **g_tail = &g_first;

struct counted {
    char *key;
    uint64_t n;
};

struct recent {
    uint64_t ts_us;
    char *json; /* the mirror_diff object */
};

/* Per worker and (route, upstream). Counts, tables and the ring are
 * guarded by the worker's lock; the caches below them are the worker's. */
struct cmp_we {
    struct cmp_we *next;
    struct cmp_g *g;
    uint64_t results[4]; /* by enum sg_cmp_result */
    uint64_t noise_only; /* matches that had noise differences */
    uint64_t status_diffs, log_suppressed, probes;
    struct counted ptrs[WPTRS_MAX];
    size_t n_ptrs;
    uint64_t ptrs_other;
    struct counted noise_hits[WPTRS_MAX];
    size_t n_noise_hits;
    struct counted hdrs[WHDRS_MAX];
    size_t n_hdrs;
    struct recent recent[RECENT_MAX];
    size_t recent_next;
    /* worker only: */
    uint64_t noise_gen;
    struct sg_json_pointer noise[NOISE_MAX];
    size_t n_noise;
    struct field_label fcache[FIELDS_MAX];
    size_t n_fcache;
    bool fields_full;
    uint64_t probe_next_us;
};

struct cmp_ws {
    pthread_mutex_t lock;
    struct cmp_we *first; /* appended by the worker under lock */
    unsigned probes_in_flight; /* worker only */
};

static _Atomic(struct cmp_ws *) wstates[MAX_WS];

static struct cmp_ws *ws_get(struct sg_worker *w)
{
    if (w->id >= MAX_WS)
        return NULL;
    struct cmp_ws *ws = atomic_load_explicit(&wstates[w->id], memory_order_acquire);
    if (ws)
        return ws;
    if (!(ws = calloc(1, sizeof *ws)))
        return NULL;
    pthread_mutex_init(&ws->lock, NULL);
    atomic_store_explicit(&wstates[w->id], ws, memory_order_release);
    return ws;
}

static struct cmp_g *g_get(const char *route, const char *upstream)
{
    pthread_mutex_lock(&g_lock);
    struct cmp_g *g = g_first;
    for (; g; g = g->next)
        if (strcmp(g->route, route) == 0 && strcmp(g->upstream, upstream) == 0)
            break;
    if (!g && (g = calloc(1, sizeof *g))) {
        g->route = strdup(route);
        g->upstream = strdup(upstream);
        if (!g->route || !g->upstream) {
            free(g->route);
            free(g->upstream);
            free(g);
            g = NULL;
        } else {
            char r[256], u[256], labels[640];
            snprintf(labels, sizeof labels, "route=\"%s\",upstream=\"%s\",pointer=\"%s\"",
                     sg_metrics_label_escape(route, r, sizeof r), sg_metrics_label_escape(upstream, u, sizeof u),
                     other_label);
            g->other_id = sg_metrics_series("strangler_mirror_diff_fields_total", labels);
            *g_tail = g;
            g_tail = &g->next;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return g;
}

static struct cmp_we *we_get(struct cmp_ws *ws, const char *route, const char *upstream)
{
    if (!ws)
        return NULL;
    for (struct cmp_we *e = ws->first; e; e = e->next)
        if (strcmp(e->g->route, route) == 0 && strcmp(e->g->upstream, upstream) == 0)
            return e;
    struct cmp_g *g = g_get(route, upstream);
    struct cmp_we *e = g ? calloc(1, sizeof *e) : NULL;
    if (!e)
        return NULL;
    e->g = g;
    pthread_mutex_lock(&ws->lock);
    struct cmp_we **t = &ws->first;
    while (*t)
        t = &(*t)->next;
    *t = e;
    pthread_mutex_unlock(&ws->lock);
    return e;
}

/* The worker's copy of the learnt noise, refreshed when it changed. */
static void noise_refresh(struct cmp_we *e)
{
    uint64_t gen = atomic_load_explicit(&e->g->noise_gen, memory_order_acquire);
    if (gen == e->noise_gen)
        return;
    for (size_t i = 0; i < e->n_noise; i++)
        sg_json_pointer_free(&e->noise[i]);
    e->n_noise = 0;
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < e->g->n_noise; i++)
        if (sg_json_pointer_parse(e->g->noise[i].ptr, &e->noise[e->n_noise]))
            e->n_noise++;
    e->noise_gen = atomic_load_explicit(&e->g->noise_gen, memory_order_relaxed);
    pthread_mutex_unlock(&g_lock);
}

/* Series of strangler_mirror_diff_fields_total for a pointer: the first
 * FIELDS_MAX distinct pointers of a (route, upstream) get their own label,
 * process-wide; later ones count as pointer="other". */
static sg_series_t field_series(struct cmp_we *e, const char *ptr)
{
    for (size_t i = 0; i < e->n_fcache; i++)
        if (strcmp(e->fcache[i].ptr, ptr) == 0)
            return e->fcache[i].id;
    if (e->fields_full)
        return e->g->other_id;
    struct cmp_g *g = e->g;
    sg_series_t id = -2;
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g->n_fields; i++)
        if (strcmp(g->fields[i].ptr, ptr) == 0)
            id = g->fields[i].id;
    if (id == -2 && g->n_fields < FIELDS_MAX) {
        char r[256], u[256], p[PTR_MAX * 2 + 1], labels[PTR_MAX * 2 + 600];
        snprintf(labels, sizeof labels, "route=\"%s\",upstream=\"%s\",pointer=\"%s\"",
                 sg_metrics_label_escape(g->route, r, sizeof r), sg_metrics_label_escape(g->upstream, u, sizeof u),
                 sg_metrics_label_escape(ptr, p, sizeof p));
        char *copy = strdup(ptr);
        if (copy) {
            id = sg_metrics_series("strangler_mirror_diff_fields_total", labels);
            g->fields[g->n_fields++] = (struct field_label){ copy, id };
        }
    }
    /* The set is full: copy all of it once, then "other" needs no lock. */
    if (id == -2 && g->n_fields == FIELDS_MAX) {
        for (size_t i = e->n_fcache; i < FIELDS_MAX; i++)
            e->fcache[i].ptr = NULL;
        for (size_t i = 0; i < FIELDS_MAX; i++) {
            bool have = false;
            for (size_t j = 0; j < e->n_fcache; j++)
                have = have || strcmp(e->fcache[j].ptr, g->fields[i].ptr) == 0;
            if (!have && (e->fcache[e->n_fcache].ptr = strdup(g->fields[i].ptr)))
                e->fcache[e->n_fcache++].id = g->fields[i].id;
        }
        e->fields_full = true;
    }
    pthread_mutex_unlock(&g_lock);
    if (id == -2)
        return g->other_id;
    if (e->n_fcache < FIELDS_MAX) {
        char *copy = strdup(ptr);
        if (copy)
            e->fcache[e->n_fcache++] = (struct field_label){ copy, id };
    }
    return id;
}

/* Learns pointers from a probe; true when any pointer differed. */
static void noise_learn(struct cmp_g *g, char *const *ptrs, size_t n)
{
    bool added = false;
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < n; i++) {
        if (!ptrs[i][0])
            continue; /* never the whole document: that would hide everything */
        size_t j = 0;
        while (j < g->n_noise && strcmp(g->noise[j].ptr, ptrs[i]) != 0)
            j++;
        if (j < g->n_noise) {
            g->noise[j].seen++;
        } else if (g->n_noise < NOISE_MAX && (g->noise[j].ptr = strdup(ptrs[i]))) {
            g->noise[j].seen = 1;
            g->n_noise++;
            added = true;
        }
    }
    if (added)
        atomic_fetch_add_explicit(&g->noise_gen, 1, memory_order_release);
    pthread_mutex_unlock(&g_lock);
}

/* Adds one to key's count in a bounded table; false when full. */
static bool count_key(struct counted *t, size_t *n, size_t max, const char *key)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(t[i].key, key) == 0) {
            t[i].n++;
            return true;
        }
    if (*n == max)
        return false;
    char *copy = strdup(key);
    if (!copy)
        return false;
    t[*n] = (struct counted){ copy, 1 };
    (*n)++;
    return true;
}

/* ==== one comparison ========================================================== */

struct side_text {
    char *text; /* NULL: the side lacks the pointer */
    bool json; /* text is a JSON value (else it is raw text to quote) */
};

struct body_item {
    char *ptr;
    struct side_text v[2];
};

struct diffs {
    struct body_item items[LINE_BODY_MAX];
    size_t n_items;
    char *real[DISTINCT_MAX], *noise[DISTINCT_MAX];
    size_t n_real, n_noise;
};

static void add_distinct(char **set, size_t *n, const char *ptr)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(set[i], ptr) == 0)
            return;
    if (*n < DISTINCT_MAX && (set[*n] = strdup(ptr)))
        (*n)++;
}

static struct side_text json_text(const json_t *v)
{
    if (!v)
        return (struct side_text){ NULL, false };
    return (struct side_text){ json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY), true };
}

static void on_diff(void *ctx, const char *ptr, const char *norm, const json_t *a, const json_t *b, bool noise)
{
    struct diffs *d = ctx;
    if (noise) {
        add_distinct(d->noise, &d->n_noise, norm);
        return;
    }
    add_distinct(d->real, &d->n_real, norm);
    if (d->n_items < LINE_BODY_MAX) {
        struct body_item *it = &d->items[d->n_items++];
        it->ptr = strdup(ptr);
        it->v[0] = json_text(a);
        it->v[1] = json_text(b);
    }
}

static void diffs_free(struct diffs *d)
{
    for (size_t i = 0; i < d->n_items; i++) {
        free(d->items[i].ptr);
        free(d->items[i].v[0].text);
        free(d->items[i].v[1].text);
    }
    for (size_t i = 0; i < d->n_real; i++)
        free(d->real[i]);
    for (size_t i = 0; i < d->n_noise; i++)
        free(d->noise[i]);
}

static bool same_bytes(const struct cmp_side *p, const struct cmp_side *s)
{
    return p->len == s->len && (p->len == 0 || memcmp(p->body, s->body, p->len) == 0);
}

static json_t *parse(const struct cmp_side *s)
{
    if (s->len == 0)
        return NULL;
    json_error_t err;
    size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL;
    json_t *v = json_loadb(s->body, s->len, flags, &err);
    if (!v && json_error_code(&err) == json_error_numeric_overflow)
        v = json_loadb(s->body, s->len, flags | JSON_DECODE_INT_AS_REAL, &err);
    return v;
}

static struct side_text raw_text(const struct cmp_side *s)
{
    size_t n = s->len < VALUE_MAX ? s->len : VALUE_MAX;
    char *t = malloc(n + 1);
    if (t) {
        memcpy(t, s->body ? s->body : "", n);
        t[n] = '\0';
    }
    return (struct side_text){ t, false };
}

static void whole_body_item(struct diffs *d, struct side_text p, struct side_text s)
{
    add_distinct(d->real, &d->n_real, "");
    if (d->n_items == LINE_BODY_MAX) {
        free(p.text);
        free(s.text);
        return;
    }
    struct body_item *it = &d->items[d->n_items++];
    it->ptr = strdup("");
    it->v[0] = p;
    it->v[1] = s;
}

static struct side_text digest_text(const struct cmp_side *s)
{
    static const char hex[] = "0123456789abcdef";
    char *t = malloc(7 + 64 + 1);
    if (t) {
        memcpy(t, "sha256:", 7);
        for (int i = 0; i < 32; i++) {
            t[7 + 2 * i] = hex[s->digest[i] >> 4];
            t[8 + 2 * i] = hex[s->digest[i] & 15];
        }
        t[71] = '\0';
    }
    return (struct side_text){ t, false };
}

static void body_json(struct diffs *d, const struct cmp_side *p, const struct cmp_side *s,
                      const struct sg_compare *k, const struct cmp_we *e)
{
    json_t *a = parse(p), *b = parse(s);
    bool a_bad = !a && p->len, b_bad = !b && s->len;
    if (a_bad || b_bad) {
        /* Not JSON on a side: equal bytes still match. */
        if (!same_bytes(p, s))
            whole_body_item(d, a_bad ? raw_text(p) : json_text(a), b_bad ? raw_text(s) : json_text(b));
    } else {
        struct sg_json_diff_opts o = {
            .ignore = k->ignore_ptrs,
            .n_ignore = k->ignore_ptrs ? k->n_ignore : 0,
            .noise = e ? e->noise : NULL,
            .n_noise = e ? e->n_noise : 0,
            .fn = on_diff,
            .ctx = d,
        };
        sg_json_diff(a, b, &o, NULL);
    }
    json_decref(a);
    json_decref(b);
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_encoding(const char *a, const char *b)
{
    if (a && strcasecmp(a, "identity") == 0)
        a = NULL;
    if (b && strcasecmp(b, "identity") == 0)
        b = NULL;
    return (!a && !b) || (a && b && strcasecmp(a, b) == 0);
}

/* Fills d with the body differences. */
static void body_diffs(struct diffs *d, const struct sg_cmp *c, const struct cmp_we *e)
{
    const struct cmp_side *p = &c->side[0], *s = &c->side[1];
    switch (c->k->body) {
    case SG_CMP_BODY_NONE:
        return;
    case SG_CMP_BODY_BYTES:
        if (memcmp(p->digest, s->digest, sizeof p->digest) != 0)
            whole_body_item(d, digest_text(p), digest_text(s));
        return;
    case SG_CMP_BODY_JSON:
        if (p->encoding) { /* same encoding on both sides, not decoded: the bytes */
            if (!same_bytes(p, s))
                whole_body_item(d, raw_text(p), raw_text(s));
            return;
        }
        body_json(d, p, s, c->k, e);
        return;
    }
}

static enum sg_cmp_result precheck(const struct sg_cmp *c)
{
    const struct cmp_side *p = &c->side[0], *s = &c->side[1];
    if (!p->done || !s->done || p->status <= 0 || s->status <= 0)
        return SG_CMP_ERROR;
    if (p->no_budget || s->no_budget || p->too_large || s->too_large)
        return SG_CMP_SKIPPED;
    if (c->k->body != SG_CMP_BODY_NONE && !same_encoding(p->encoding, s->encoding))
        return SG_CMP_SKIPPED;
    return SG_CMP_MATCH;
}

/* ---- the mirror_diff object ---------------------------------------------- */

static void add_lit(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, s, strlen(s));
}

static void add_value(struct evbuffer *b, struct side_text t)
{
    size_t len = t.text ? strlen(t.text) : 0;
    if (!t.text)
        add_lit(b, "null");
    else if (t.json && len <= VALUE_MAX)
        evbuffer_add(b, t.text, len);
    else
        sg_json_str(b, t.text, len, VALUE_MAX); /* cut at a character, quoted */
}

static void add_key_str(struct evbuffer *b, const char *key, struct sg_str v, size_t max)
{
    add_lit(b, key);
    sg_json_str(b, v.p ? v.p : "", v.len, max);
}

static void add_ts(struct evbuffer *b, uint64_t us)
{
    time_t sec = (time_t)(us / 1000000u);
    struct tm tm;
    if (!gmtime_r(&sec, &tm))
        memset(&tm, 0, sizeof tm);
    evbuffer_add_printf(b, ",\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\"", tm.tm_year + 1900, tm.tm_mon + 1,
                        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(us / 1000u % 1000u));
}

static void format_diff(struct evbuffer *b, const struct sg_cmp *c, const struct sg_cmp_request *r,
                        const struct diffs *d, const bool *hdiff, uint64_t now_us)
{
    const struct sg_compare *k = c->k;
    add_lit(b, "{\"type\":\"mirror_diff\"");
    add_ts(b, now_us);
    add_key_str(b, ",\"request_id\":", r->request_id, VALUE_MAX);
    add_key_str(b, ",\"route\":", sg_str_c(r->route->name), VALUE_MAX);
    add_key_str(b, ",\"upstream\":", sg_str_c(r->mirror->upstream->name), VALUE_MAX);
    add_key_str(b, ",\"method\":", r->method, VALUE_MAX);
    add_key_str(b, ",\"path\":", r->path, 4096);
    evbuffer_add_printf(b, ",\"status\":[%d,%d],\"headers\":{", c->side[0].status, c->side[1].status);
    bool first = true;
    for (size_t i = 0; i < k->n_headers; i++) {
        if (!hdiff[i])
            continue;
        if (!first)
            add_lit(b, ",");
        first = false;
        sg_json_str(b, k->headers[i], strlen(k->headers[i]), VALUE_MAX);
        add_lit(b, ":[");
        add_value(b, (struct side_text){ c->side[0].hvals[i], false });
        add_lit(b, ",");
        add_value(b, (struct side_text){ c->side[1].hvals[i], false });
        add_lit(b, "]");
    }
    add_lit(b, "},\"body\":[");
    for (size_t i = 0; i < d->n_items; i++) {
        const struct body_item *it = &d->items[i];
        if (i)
            add_lit(b, ",");
        add_lit(b, "{\"pointer\":");
        sg_json_str(b, it->ptr ? it->ptr : "", it->ptr ? strlen(it->ptr) : 0, 0);
        add_lit(b, ",\"primary\":");
        add_value(b, it->v[0]);
        add_lit(b, ",\"shadow\":");
        add_value(b, it->v[1]);
        add_lit(b, "}");
    }
    add_lit(b, "]");
    if (d->n_noise) {
        add_lit(b, ",\"noise\":[");
        for (size_t i = 0; i < d->n_noise; i++) {
            if (i)
                add_lit(b, ",");
            sg_json_str(b, d->noise[i], strlen(d->noise[i]), 0);
        }
        add_lit(b, "]");
    }
    add_lit(b, "}");
}

static char *diff_json(const struct sg_cmp *c, const struct sg_cmp_request *r, const struct diffs *d,
                       const bool *hdiff, uint64_t now_us)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return NULL;
    format_diff(b, c, r, d, hdiff, now_us);
    size_t n = evbuffer_get_length(b);
    char *json = malloc(n + 1);
    if (json) {
        evbuffer_copyout(b, json, n);
        json[n] = '\0';
    }
    evbuffer_free(b);
    return json;
}

static bool log_allowed(struct cmp_g *g, uint32_t rate)
{
    if (rate == 0)
        return false;
    uint64_t sec = sg_mono_us() / 1000000u;
    uint_fast64_t cur = atomic_load_explicit(&g->log_sec, memory_order_relaxed);
    if (cur != sec && atomic_compare_exchange_strong(&g->log_sec, &cur, sec))
        atomic_store_explicit(&g->log_count, 0, memory_order_relaxed);
    return atomic_fetch_add_explicit(&g->log_count, 1, memory_order_relaxed) < rate;
}

static const char *const result_labels[] = {
    ",result=\"match\"",
    ",result=\"mismatch\"",
    ",result=\"skipped\"",
    ",result=\"error\"",
};
static const char *const probe_labels[] = { ",result=\"learnt\"", ",result=\"same\"", ",result=\"failed\"" };

static void count_probe(struct sg_worker *w, const struct sg_cmp_request *r, int which)
{
    sg_metrics_add(w->metrics, sg_worker_series(w, "strangler_mirror_noise_probes_total", r->route->name,
                                                r->mirror->upstream->name, probe_labels[which], -1),
                   1);
}

/* Takes json (the mismatch object, may be NULL). */
static void record(struct cmp_ws *ws, struct cmp_we *e, enum sg_cmp_result res, const struct diffs *d,
                   bool status_diff, const bool *hdiff, const struct sg_compare *k, char *json, uint64_t now_us,
                   bool suppressed)
{
    pthread_mutex_lock(&ws->lock);
    e->results[res]++;
    if (res == SG_CMP_MATCH && d->n_noise)
        e->noise_only++;
    if (suppressed)
        e->log_suppressed++;
    if (res == SG_CMP_MISMATCH) {
        e->status_diffs += status_diff;
        for (size_t i = 0; i < k->n_headers; i++)
            if (hdiff[i])
                count_key(e->hdrs, &e->n_hdrs, WHDRS_MAX, k->headers[i]);
        for (size_t i = 0; i < d->n_real; i++)
            if (!count_key(e->ptrs, &e->n_ptrs, WPTRS_MAX, d->real[i]))
                e->ptrs_other++;
        struct recent *slot = &e->recent[e->recent_next];
        free(slot->json);
        *slot = (struct recent){ now_us, json };
        json = NULL;
        e->recent_next = (e->recent_next + 1) % RECENT_MAX;
    }
    if (res == SG_CMP_MATCH || res == SG_CMP_MISMATCH)
        for (size_t i = 0; i < d->n_noise; i++)
            count_key(e->noise_hits, &e->n_noise_hits, WPTRS_MAX, d->noise[i]);
    pthread_mutex_unlock(&ws->lock);
    free(json);
}

static enum sg_cmp_result run_probe(struct sg_worker *w, struct sg_cmp *c, const struct sg_cmp_request *r,
                                    struct cmp_we *e)
{
    enum sg_cmp_result res = precheck(c);
    if (res != SG_CMP_MATCH || c->k->body != SG_CMP_BODY_JSON || c->side[0].encoding) {
        count_probe(w, r, 2);
        return res;
    }
    /* What differs between two answers of the primary, known noise included
     * (it is counted as seen again). */
    struct diffs d = { 0 };
    body_json(&d, &c->side[0], &c->side[1], c->k, NULL);
    if (e && d.n_real)
        noise_learn(e->g, d.real, d.n_real);
    count_probe(w, r, d.n_real ? 0 : 1);
    if (e) {
        struct cmp_ws *ws = ws_get(w);
        pthread_mutex_lock(&ws->lock);
        e->probes++;
        pthread_mutex_unlock(&ws->lock);
    }
    diffs_free(&d);
    return d.n_real ? SG_CMP_MISMATCH : SG_CMP_MATCH;
}

enum sg_cmp_result sg_compare_run(struct sg_worker *w, struct sg_cmp *c, const struct sg_cmp_request *r)
{
    const char *route = r->route->name, *up = r->mirror->upstream->name;
    struct cmp_ws *ws = ws_get(w);
    struct cmp_we *e = we_get(ws, route, up);
    if (r->probe)
        return run_probe(w, c, r, e);
    if (e)
        noise_refresh(e);
    const struct sg_compare *k = c->k;
    enum sg_cmp_result res = precheck(c);
    struct diffs d = { 0 };
    bool status_diff = false;
    bool hdiff_buf[64], *hdiff = k->n_headers <= 64 ? hdiff_buf : calloc(k->n_headers, sizeof *hdiff);
    if (!hdiff)
        res = SG_CMP_ERROR;
    if (res == SG_CMP_MATCH) {
        bool any = false;
        status_diff = k->status && c->side[0].status != c->side[1].status;
        any = status_diff;
        for (size_t i = 0; i < k->n_headers; i++) {
            hdiff[i] = !same_str(c->side[0].hvals[i], c->side[1].hvals[i]);
            any = any || hdiff[i];
        }
        body_diffs(&d, c, e);
        if (any || d.n_real)
            res = SG_CMP_MISMATCH;
    }
    sg_metrics_add(w->metrics, sg_worker_series(w, "strangler_mirror_comparisons_total", route, up,
                                                result_labels[res], -1),
                   1);
    char *json = NULL;
    bool suppressed = false;
    uint64_t now_us = sg_wall_us();
    if (res == SG_CMP_MISMATCH) {
        for (size_t i = 0; e && i < d.n_real; i++)
            sg_metrics_add(w->metrics, field_series(e, d.real[i]), 1);
        json = diff_json(c, r, &d, hdiff, now_us);
        if (json && e && log_allowed(e->g, k->log_rate)) {
            evbuffer_add(w->access_log, json, strlen(json));
            evbuffer_add(w->access_log, "\n", 1);
            sg_worker_log_commit(w);
        } else {
            suppressed = true;
        }
    }
    if (e)
        record(ws, e, res, &d, status_diff, hdiff, k, json, now_us, suppressed);
    else
        free(json);
    if (hdiff != hdiff_buf)
        free(hdiff);
    diffs_free(&d);
    return res;
}

/* ==== noise probes =============================================================== */

bool sg_noise_probe_wanted(struct sg_worker *w, const struct sg_route *route, const struct sg_mirror *m,
                           struct sg_str method)
{
    const struct sg_compare *k = m->compare;
    if (!k || !k->noise_auto || k->body != SG_CMP_BODY_JSON)
        return false;
    if (!sg_str_eq(method, SG_STR_LIT("GET")) && !sg_str_eq(method, SG_STR_LIT("HEAD")))
        return false; /* never a second unsafe request */
    struct cmp_ws *ws = ws_get(w);
    if (!ws || ws->probes_in_flight >= NOISE_PROBES_IN_FLIGHT)
        return false;
    struct cmp_we *e = we_get(ws, route->name, m->upstream->name);
    uint64_t now = sg_mono_us();
    if (!e || now < e->probe_next_us)
        return false;
    e->probe_next_us = now + NOISE_PROBE_INTERVAL_US;
    ws->probes_in_flight++;
    return true;
}

void sg_noise_probe_done(struct sg_worker *w, const struct sg_route *route, const struct sg_mirror *m,
                         bool failed)
{
    struct cmp_ws *ws = ws_get(w);
    if (ws && ws->probes_in_flight)
        ws->probes_in_flight--;
    if (failed) {
        struct sg_cmp_request r = { .route = route, .mirror = m };
        count_probe(w, &r, 2);
    }
}

void sg_compare_init(void)
{
    json_object_seed(0);
}

/* ==== the report ================================================================ */

struct agg {
    uint64_t results[4], noise_only, status_diffs, log_suppressed, probes, ptrs_other;
    struct counted *ptrs, *noise_hits, *hdrs;
    size_t n_ptrs, n_noise_hits, n_hdrs;
    struct recent *recent;
    size_t n_recent;
};

static void merge(struct counted **t, size_t *n, const struct counted *src, size_t n_src)
{
    for (size_t i = 0; i < n_src; i++) {
        size_t j = 0;
        while (j < *n && strcmp((*t)[j].key, src[i].key) != 0)
            j++;
        if (j < *n) {
            (*t)[j].n += src[i].n;
            continue;
        }
        struct counted *nt = realloc(*t, (*n + 1) * sizeof **t);
        if (!nt)
            return;
        *t = nt;
        nt[*n] = (struct counted){ src[i].key, src[i].n }; /* borrowed: copied below */
        if (!(nt[*n].key = strdup(src[i].key)))
            return;
        (*n)++;
    }
}

static void agg_add(struct agg *a, const struct cmp_we *e)
{
    for (int i = 0; i < 4; i++)
        a->results[i] += e->results[i];
    a->noise_only += e->noise_only;
    a->status_diffs += e->status_diffs;
    a->log_suppressed += e->log_suppressed;
    a->probes += e->probes;
    a->ptrs_other += e->ptrs_other;
    merge(&a->ptrs, &a->n_ptrs, e->ptrs, e->n_ptrs);
    merge(&a->noise_hits, &a->n_noise_hits, e->noise_hits, e->n_noise_hits);
    merge(&a->hdrs, &a->n_hdrs, e->hdrs, e->n_hdrs);
    for (size_t i = 0; i < RECENT_MAX; i++) {
        if (!e->recent[i].json)
            continue;
        struct recent *nr = realloc(a->recent, (a->n_recent + 1) * sizeof *nr);
        if (!nr)
            return;
        a->recent = nr;
        if ((nr[a->n_recent].json = strdup(e->recent[i].json)))
            nr[a->n_recent++].ts_us = e->recent[i].ts_us;
    }
}

static void agg_free(struct agg *a)
{
    for (size_t i = 0; i < a->n_ptrs; i++)
        free(a->ptrs[i].key);
    for (size_t i = 0; i < a->n_noise_hits; i++)
        free(a->noise_hits[i].key);
    for (size_t i = 0; i < a->n_hdrs; i++)
        free(a->hdrs[i].key);
    for (size_t i = 0; i < a->n_recent; i++)
        free(a->recent[i].json);
    free(a->ptrs);
    free(a->noise_hits);
    free(a->hdrs);
    free(a->recent);
}

static int by_count_desc(const void *x, const void *y)
{
    const struct counted *a = x, *b = y;
    if (a->n != b->n)
        return a->n < b->n ? 1 : -1;
    return strcmp(a->key, b->key);
}

/* qsort's arguments must not be NULL, even for no elements. */
static void sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
    if (n > 1)
        qsort(base, n, size, cmp);
}

static int by_ts_desc(const void *x, const void *y)
{
    const struct recent *a = x, *b = y;
    return a->ts_us < b->ts_us ? 1 : a->ts_us > b->ts_us ? -1 : 0;
}

static void share(struct evbuffer *out, uint64_t n, uint64_t of)
{
    evbuffer_add_printf(out, "%.4f", of ? (double)n / (double)of : 0.0);
}

static void report_counted(struct evbuffer *out, const char *key, struct counted *t, size_t n, uint64_t other,
                           uint64_t compared)
{
    sort(t, n, sizeof *t, by_count_desc);
    evbuffer_add_printf(out, ",\"%s\":[", key);
    size_t shown = n < REPORT_TOP ? n : REPORT_TOP;
    for (size_t i = shown; i < n; i++)
        other += t[i].n;
    for (size_t i = 0; i < shown; i++) {
        if (i)
            add_lit(out, ",");
        add_lit(out, "{\"pointer\":");
        sg_json_str(out, t[i].key, strlen(t[i].key), 0);
        evbuffer_add_printf(out, ",\"count\":%" PRIu64 ",\"share\":", t[i].n);
        share(out, t[i].n, compared);
        add_lit(out, "}");
    }
    if (other) {
        if (shown)
            add_lit(out, ",");
        evbuffer_add_printf(out, "{\"pointer\":\"%s\",\"other\":true,\"count\":%" PRIu64 ",\"share\":", other_label,
                            other);
        share(out, other, compared);
        add_lit(out, "}");
    }
    add_lit(out, "]");
}

static void report_entry(struct evbuffer *out, const struct cmp_g *g, struct agg *a)
{
    uint64_t matched = a->results[SG_CMP_MATCH], mismatched = a->results[SG_CMP_MISMATCH];
    uint64_t compared = matched + mismatched;
    add_lit(out, "{\"route\":");
    sg_json_str(out, g->route, strlen(g->route), 0);
    add_lit(out, ",\"upstream\":");
    sg_json_str(out, g->upstream, strlen(g->upstream), 0);
    evbuffer_add_printf(out,
                        ",\"compared\":%" PRIu64 ",\"matched\":%" PRIu64 ",\"mismatched\":%" PRIu64
                        ",\"skipped\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"match_rate\":",
                        compared, matched, mismatched, a->results[SG_CMP_SKIPPED], a->results[SG_CMP_ERROR]);
    if (compared)
        share(out, matched, compared);
    else
        add_lit(out, "null");
    evbuffer_add_printf(out, ",\"matched_with_noise\":%" PRIu64 ",\"status_mismatches\":%" PRIu64, a->noise_only,
                        a->status_diffs);
    add_lit(out, ",\"header_mismatches\":{");
    sort(a->hdrs, a->n_hdrs, sizeof *a->hdrs, by_count_desc);
    for (size_t i = 0; i < a->n_hdrs; i++) {
        if (i)
            add_lit(out, ",");
        sg_json_str(out, a->hdrs[i].key, strlen(a->hdrs[i].key), 0);
        evbuffer_add_printf(out, ":%" PRIu64, a->hdrs[i].n);
    }
    add_lit(out, "}");
    report_counted(out, "top_pointers", a->ptrs, a->n_ptrs, a->ptrs_other, compared);
    /* Learnt noise: every pointer, with how often it differed between two
     * answers of the primary and how often it was left out of a comparison. */
    evbuffer_add_printf(out, ",\"noise_probes\":%" PRIu64 ",\"noise\":[", a->probes);
    for (size_t i = 0; i < g->n_noise; i++) {
        uint64_t hits = 0;
        for (size_t j = 0; j < a->n_noise_hits; j++)
            if (strcmp(a->noise_hits[j].key, g->noise[i].ptr) == 0)
                hits = a->noise_hits[j].n;
        if (i)
            add_lit(out, ",");
        add_lit(out, "{\"pointer\":");
        sg_json_str(out, g->noise[i].ptr, strlen(g->noise[i].ptr), 0);
        evbuffer_add_printf(out, ",\"learnt_from\":%" PRIu64 ",\"ignored\":%" PRIu64 "}", g->noise[i].seen, hits);
    }
    evbuffer_add_printf(out, "],\"log_suppressed\":%" PRIu64 ",\"recent_mismatches\":[", a->log_suppressed);
    sort(a->recent, a->n_recent, sizeof *a->recent, by_ts_desc);
    for (size_t i = 0; i < a->n_recent && i < RECENT_MAX; i++) {
        if (i)
            add_lit(out, ",");
        add_lit(out, a->recent[i].json);
    }
    add_lit(out, "]}");
}

void sg_compare_report(struct evbuffer *out)
{
    add_lit(out, "{\"mirrors\":[");
    pthread_mutex_lock(&g_lock);
    bool first = true;
    for (struct cmp_g *g = g_first; g; g = g->next) {
        struct agg a = { 0 };
        for (size_t i = 0; i < MAX_WS; i++) {
            struct cmp_ws *ws = atomic_load_explicit(&wstates[i], memory_order_acquire);
            if (!ws)
                continue;
            pthread_mutex_lock(&ws->lock);
            for (struct cmp_we *e = ws->first; e; e = e->next)
                if (e->g == g)
                    agg_add(&a, e);
            pthread_mutex_unlock(&ws->lock);
        }
        if (!first)
            add_lit(out, ",");
        first = false;
        report_entry(out, g, &a);
        agg_free(&a);
    }
    pthread_mutex_unlock(&g_lock);
    add_lit(out, "]}\n");
}

static void clear_counted(struct counted *t, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free(t[i].key);
    *n = 0;
}

void sg_compare_reset(void)
{
    for (size_t i = 0; i < MAX_WS; i++) {
        struct cmp_ws *ws = atomic_load_explicit(&wstates[i], memory_order_acquire);
        if (!ws)
            continue;
        pthread_mutex_lock(&ws->lock);
        for (struct cmp_we *e = ws->first; e; e = e->next) {
            memset(e->results, 0, sizeof e->results);
            e->noise_only = e->status_diffs = e->log_suppressed = e->probes = e->ptrs_other = 0;
            clear_counted(e->ptrs, &e->n_ptrs);
            clear_counted(e->noise_hits, &e->n_noise_hits);
            clear_counted(e->hdrs, &e->n_hdrs);
            for (size_t j = 0; j < RECENT_MAX; j++) {
                free(e->recent[j].json);
                e->recent[j] = (struct recent){ 0, NULL };
            }
            e->recent_next = 0;
        }
        pthread_mutex_unlock(&ws->lock);
    }
}
