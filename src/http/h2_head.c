/* HTTP/2 request heads and field lists (RFC 9113 section 8).
 *
 * nghttp2 already enforces most of the HTTP messaging rules before a field
 * reaches us (its "HTTP messaging" validation is left on). The checks here
 * repeat the ones a proxy cannot afford to get wrong, because what passes
 * them is turned into an HTTP/1.1 request upstream: pseudo-header rules
 * (8.3), connection-specific fields (8.2.2), field values (8.2.1),
 * content-length (8.1.1), :authority against Host (8.3.1). */
#include <stdlib.h>
#include <string.h>

#include "http/h2_internal.h"
#include "strangler/h1.h"
#include "strangler/h2_server.h"
#include "strangler/mem.h"

const char sg_h2_err_pseudo_dup[] = "duplicate pseudo-header field";
const char sg_h2_err_pseudo_unknown[] = "unknown pseudo-header field";
const char sg_h2_err_pseudo_late[] = "pseudo-header field after a regular field";
const char sg_h2_err_pseudo_missing[] = "missing :method, :scheme or :path";
const char sg_h2_err_path[] = "invalid :path";
const char sg_h2_err_authority[] = "invalid :authority or Host";
const char sg_h2_err_connection_field[] = "connection-specific header field";
const char sg_h2_err_te[] = "te other than trailers";
const char sg_h2_err_field_value[] = "invalid field name or value";
const char sg_h2_err_content_length[] = "invalid content-length";
const char sg_h2_err_nomem[] = "out of memory";

/* ---- arena ---------------------------------------------------------------- */

#define BLOCK_MIN 2048u

struct sg_h2_block {
    struct sg_h2_block *next;
    size_t used, cap;
    char data[];
};

/* Every stream has two arenas (its request head and its response head),
 * each at least one BLOCK_MIN block: past malloc's per-thread cache, so
 * with many streams in flight every block went through malloc's bins. Each
 * worker thread keeps up to BLOCK_CACHE freed BLOCK_MIN blocks. Not under
 * AddressSanitizer, so that a use after free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define BLOCK_CACHE 0
#else
#define BLOCK_CACHE 128
#endif
static _Thread_local struct {
    struct sg_h2_block *v[BLOCK_CACHE + 1];
    unsigned n;
} block_cache;

static struct sg_h2_block *block_new(size_t cap)
{
    if (cap == BLOCK_MIN && block_cache.n > 0)
        return block_cache.v[--block_cache.n];
    return malloc(sizeof(struct sg_h2_block) + cap);
}

static void block_free(struct sg_h2_block *b)
{
#if BLOCK_CACHE > 0
    if (b->cap == BLOCK_MIN && block_cache.n < BLOCK_CACHE) {
        block_cache.v[block_cache.n++] = b;
        return;
    }
#endif
    free(b);
}

void sg_h2_thread_exit(void)
{
    while (block_cache.n > 0)
        free(block_cache.v[--block_cache.n]);
}

char *sg_h2_arena_copy(struct sg_h2_arena *a, const void *p, size_t n)
{
    struct sg_h2_block *b = a->blocks;
    if (!b || b->cap - b->used < n + 1) {
        size_t cap = n + 1 > BLOCK_MIN ? n + 1 : BLOCK_MIN;
        b = block_new(cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->blocks;
        a->blocks = b;
    }
    char *out = b->data + b->used;
    if (n)
        memcpy(out, p, n);
    out[n] = '\0'; /* nghttp2 does not need it; debugging does */
    b->used += n + 1;
    return out;
}

void sg_h2_arena_free(struct sg_h2_arena *a)
{
    for (struct sg_h2_block *b = a->blocks, *next; b; b = next) {
        next = b->next;
        block_free(b);
    }
    a->blocks = NULL;
}

/* ---- outgoing field lists ------------------------------------------------- */

void sg_h2_nv_init(struct sg_h2_nvlist *l)
{
    memset(l, 0, sizeof *l);
}

void sg_h2_nv_free(struct sg_h2_nvlist *l)
{
    sg_mem_free(l->v);
    sg_h2_arena_free(&l->mem);
    sg_h2_nv_init(l);
}

static nghttp2_nv *nv_slot(struct sg_h2_nvlist *l)
{
    if (l->failed)
        return NULL;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        nghttp2_nv *v = sg_mem_realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->failed = true;
            return NULL;
        }
        l->v = v;
        l->cap = cap;
    }
    return &l->v[l->n];
}

void sg_h2_nv_ref(struct sg_h2_nvlist *l, struct sg_str name, struct sg_str value)
{
    nghttp2_nv *nv = nv_slot(l);
    if (!nv)
        return;
    *nv = (nghttp2_nv){ (uint8_t *)(uintptr_t)name.p, (uint8_t *)(uintptr_t)value.p, name.len, value.len,
                        NGHTTP2_NV_FLAG_NONE };
    l->n++;
}

void sg_h2_nv_add(struct sg_h2_nvlist *l, struct sg_str name, struct sg_str value)
{
    if (l->failed)
        return;
    char *n = sg_h2_arena_copy(&l->mem, name.p, name.len);
    char *v = sg_h2_arena_copy(&l->mem, value.p, value.len);
    if (!n || !v) {
        l->failed = true;
        return;
    }
    sg_h2_nv_ref(l, (struct sg_str){ n, name.len }, (struct sg_str){ v, value.len });
}

void sg_h2_nv_num(struct sg_h2_nvlist *l, struct sg_str name, uint64_t value)
{
    char buf[24];
    size_t n = sg_fmt_u64(buf, value, 10);
    if (sizeof l->num - l->num_used < n) {
        sg_h2_nv_add(l, name, (struct sg_str){ buf, n });
        return;
    }
    char *p = l->num + l->num_used;
    memcpy(p, buf, n);
    l->num_used += n;
    sg_h2_nv_ref(l, name, (struct sg_str){ p, n });
}

void sg_h2_nv_emit_ref(void *ctx, struct sg_str name, struct sg_str value)
{
    sg_h2_nv_ref(ctx, name, value);
}

void sg_h2_nv_add_trailers(struct sg_h2_nvlist *l, const struct sg_headers *trailers)
{
    for (size_t i = 0; i < trailers->n; i++) {
        struct sg_str name = trailers->v[i].name;
        if (sg_header_trailer_ok(name))
            sg_h2_nv_add(l, name, trailers->v[i].value);
    }
}

/* ---- request heads -------------------------------------------------------- */

enum pseudo { PS_METHOD = 1u, PS_SCHEME = 2u, PS_PATH = 4u, PS_AUTHORITY = 8u };

void sg_h2_head_init(struct sg_h2_head *h, size_t max_bytes)
{
    memset(h, 0, sizeof *h);
    sg_headers_init(&h->fields);
    h->max = max_bytes;
    h->content_length = -1;
}

void sg_h2_head_free(struct sg_h2_head *h)
{
    sg_headers_free(&h->fields);
    sg_h2_arena_free(&h->mem);
}

static void malformed(struct sg_h2_head *h, const char *why)
{
    if (!h->malformed)
        h->malformed = why;
}

/* RFC 9113 8.2.1: no CR, LF or NUL anywhere in a value, no leading or
 * trailing whitespace; HTTP/1.1 upstreams would read them differently. */
static bool value_ok(struct sg_str v)
{
    for (size_t i = 0; i < v.len; i++)
        if (v.p[i] == '\r' || v.p[i] == '\n' || v.p[i] == '\0')
            return false;
    return v.len == 0 || (v.p[0] != ' ' && v.p[0] != '\t' && v.p[v.len - 1] != ' ' && v.p[v.len - 1] != '\t');
}

/* Field names are lower-case tokens (RFC 9113 8.2.1, RFC 9110 5.1). */
static bool name_ok(struct sg_str n)
{
    if (!sg_h1_token(n))
        return false;
    for (size_t i = 0; i < n.len; i++)
        if (n.p[i] >= 'A' && n.p[i] <= 'Z')
            return false;
    return true;
}

static char *copy(struct sg_h2_head *h, struct sg_str s)
{
    char *p = sg_h2_arena_copy(&h->mem, s.p, s.len);
    if (!p)
        malformed(h, sg_h2_err_nomem);
    return p;
}

static void pseudo_field(struct sg_h2_head *h, struct sg_str name, struct sg_str value)
{
    static const struct {
        const char *name;
        unsigned bit;
    } known[] = { { ":method", PS_METHOD }, { ":scheme", PS_SCHEME }, { ":path", PS_PATH },
                  { ":authority", PS_AUTHORITY } };
    if (h->regular_seen) {
        malformed(h, sg_h2_err_pseudo_late); /* 8.3 */
        return;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (!sg_str_eq(name, sg_str_c(known[i].name)))
            continue;
        if (h->pseudo_seen & known[i].bit) {
            malformed(h, sg_h2_err_pseudo_dup);
            return;
        }
        h->pseudo_seen |= known[i].bit;
        char *p = copy(h, value);
        struct sg_str *slot = known[i].bit == PS_METHOD ? &h->method
                              : known[i].bit == PS_SCHEME ? &h->scheme
                              : known[i].bit == PS_PATH   ? &h->path
                                                          : &h->authority;
        if (p)
            *slot = (struct sg_str){ p, value.len };
        return;
    }
    malformed(h, sg_h2_err_pseudo_unknown); /* :status, :protocol (no extended CONNECT), ... */
}

/* RFC 9113 8.2.2: fields that only make sense on one HTTP/1.1 hop. */
static bool connection_specific(struct sg_str name)
{
    return sg_str_eq(name, SG_STR_LIT("connection")) || sg_str_eq(name, SG_STR_LIT("keep-alive")) ||
           sg_str_eq(name, SG_STR_LIT("proxy-connection")) || sg_str_eq(name, SG_STR_LIT("transfer-encoding")) ||
           sg_str_eq(name, SG_STR_LIT("upgrade"));
}

static bool parse_length(struct sg_str v, int64_t *out)
{
    if (v.len == 0 || v.len > 18)
        return false;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
        n = n * 10 + (v.p[i] - '0');
    }
    *out = n;
    return true;
}

/* Fields the proxy itself interprets, checked as they arrive. */
static void special_field(struct sg_h2_head *h, struct sg_str name, struct sg_str value)
{
    if (connection_specific(name)) {
        malformed(h, sg_h2_err_connection_field);
    } else if (sg_str_eq(name, SG_STR_LIT("te"))) {
        if (!sg_str_eq(value, SG_STR_LIT("trailers")))
            malformed(h, sg_h2_err_te);
    } else if (sg_str_eq(name, SG_STR_LIT("content-length"))) {
        int64_t n;
        if (!parse_length(value, &n) || (h->content_length >= 0 && h->content_length != n))
            malformed(h, sg_h2_err_content_length);
        else
            h->content_length = n;
    } else if (sg_str_eq(name, SG_STR_LIT("host"))) {
        h->n_host++;
    }
}

void sg_h2_head_field(struct sg_h2_head *h, const uint8_t *name, size_t namelen, const uint8_t *value,
                      size_t valuelen)
{
    struct sg_str n = { (const char *)name, namelen }, v = { (const char *)value, valuelen };
    h->size += namelen + valuelen + 32;
    if (h->size > h->max)
        h->too_large = true;
    if (h->too_large || h->malformed)
        return; /* decoding goes on (HPACK state), nothing more is kept */
    if (!value_ok(v)) {
        malformed(h, sg_h2_err_field_value);
        return;
    }
    if (namelen && name[0] == ':') {
        pseudo_field(h, n, v);
        return;
    }
    h->regular_seen = true;
    if (!name_ok(n)) {
        malformed(h, sg_h2_err_field_value);
        return;
    }
    special_field(h, n, v);
    char *pn = copy(h, n), *pv = copy(h, v);
    if (!pn || !pv)
        return;
    struct sg_str cn = { pn, namelen }, cv = { pv, valuelen };
    if (!sg_headers_add(&h->fields, cn, cv))
        malformed(h, sg_h2_err_nomem);
    if (sg_str_eq(cn, SG_STR_LIT("host")) && h->n_host == 1)
        h->host = cv;
}

/* RFC 9113 8.2.3: a client may split Cookie into one field per crumb; an
 * HTTP/1.1 upstream must see one field, the crumbs joined with "; ". */
static bool join_cookies(struct sg_h2_head *h)
{
    size_t count = 0, total = 0, first = 0;
    for (size_t i = 0; i < h->fields.n; i++)
        if (sg_str_eq(h->fields.v[i].name, SG_STR_LIT("cookie"))) {
            if (count++ == 0)
                first = i;
            total += h->fields.v[i].value.len + 2;
        }
    if (count < 2)
        return true;
    char *buf = malloc(total);
    if (!buf)
        return false;
    size_t len = 0, out = 0;
    for (size_t i = 0; i < h->fields.n; i++) {
        struct sg_header f = h->fields.v[i];
        if (!sg_str_eq(f.name, SG_STR_LIT("cookie"))) {
            h->fields.v[out++] = f;
            continue;
        }
        if (len && f.value.len) { /* empty crumbs add nothing, not a trailing "; " */
            memcpy(buf + len, "; ", 2);
            len += 2;
        }
        memcpy(buf + len, f.value.p, f.value.len);
        len += f.value.len;
        if (i == first)
            out++; /* its value is replaced below */
    }
    h->fields.n = out;
    char *joined = sg_h2_arena_copy(&h->mem, buf, len);
    free(buf);
    if (!joined)
        return false;
    h->fields.v[first].value = (struct sg_str){ joined, len };
    return true;
}

/* RFC 9113 8.3.1: origin-form only ("*" is answered separately), no
 * fragment, and the bytes an HTTP/1.1 request target may hold (RFC 9112
 * 3.2, visible ASCII: the same rule as the HTTP/1.1 side), since the path
 * may become one. Found by the h2_server fuzzer: bytes >= 0x80 were let
 * through into the upstream's request line. */
static bool path_ok(struct sg_str p)
{
    if (p.len == 0 || p.p[0] != '/')
        return false;
    for (size_t i = 0; i < p.len; i++) {
        unsigned char c = (unsigned char)p.p[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return false;
    }
    return true;
}

/* The same rule as the HTTP/1.1 Host check (sg_h1_authority_valid: no
 * userinfo, RFC 9113 8.3.1), so that what is valid here is valid in the
 * HTTP/1.1 request it may become. */
static bool authority_ok(struct sg_str a)
{
    return sg_h1_authority_valid(a);
}

static enum sg_h2_verdict check_target(struct sg_h2_head *h, int *status, const char **text)
{
    if (!(h->pseudo_seen & PS_METHOD) || h->method.len == 0) {
        malformed(h, sg_h2_err_pseudo_missing);
        return SG_H2_MALFORMED;
    }
    if (sg_str_eq(h->method, SG_STR_LIT("CONNECT"))) {
        /* 8.5: a well-formed CONNECT carries neither :scheme nor :path. */
        if (h->pseudo_seen & (PS_SCHEME | PS_PATH)) {
            malformed(h, sg_h2_err_pseudo_unknown);
            return SG_H2_MALFORMED;
        }
        *status = 405;
        *text = "CONNECT is not supported\n";
        return SG_H2_ANSWER;
    }
    if ((h->pseudo_seen & (PS_SCHEME | PS_PATH)) != (PS_SCHEME | PS_PATH) || h->scheme.len == 0) {
        malformed(h, sg_h2_err_pseudo_missing);
        return SG_H2_MALFORMED;
    }
    if (sg_str_eq(h->path, SG_STR_LIT("*")) && sg_str_eq(h->method, SG_STR_LIT("OPTIONS"))) {
        *status = 400;
        *text = "invalid request target\n";
        return SG_H2_ANSWER;
    }
    if (!path_ok(h->path)) {
        malformed(h, sg_h2_err_path);
        return SG_H2_MALFORMED;
    }
    return SG_H2_REQUEST;
}

/* The authority is :authority when present (8.3.1), else Host; both
 * present and different is malformed, so nothing downstream can pick the
 * other one. */
static bool pick_host(struct sg_h2_head *h, struct sg_str *host)
{
    if (h->n_host > 1)
        return false;
    *host = (h->pseudo_seen & PS_AUTHORITY) ? h->authority : h->host;
    if ((h->pseudo_seen & PS_AUTHORITY) && h->n_host && !sg_str_ieq(h->authority, h->host))
        return false;
    return host->len == 0 ? !(h->pseudo_seen & PS_AUTHORITY) && h->n_host == 0 : authority_ok(*host);
}

static void fill_request(struct sg_h2_head *h, bool end_stream, struct sg_request *req, struct sg_str host)
{
    const char *q = memchr(h->path.p, '?', h->path.len);
    req->method = h->method;
    req->target = h->path;
    req->path = (struct sg_str){ h->path.p, q ? (size_t)(q - h->path.p) : h->path.len };
    req->query = q ? (struct sg_str){ q + 1, h->path.len - (size_t)(q - h->path.p) - 1 } : SG_STR_NULL;
    req->host = host;
    req->protocol = SG_STR_LIT("HTTP/2");
    req->headers = &h->fields;
    /* 8.1: END_STREAM on HEADERS means no content; without it, DATA
     * follows and, lacking content-length, its length is unknown. */
    req->content_length = end_stream ? 0 : h->content_length;
    req->head_method = sg_str_eq(h->method, SG_STR_LIT("HEAD"));
    const struct sg_header *expect = sg_headers_get(&h->fields, SG_STR_LIT("expect"));
    req->expect_continue = !end_stream && expect && sg_str_ieq_c(expect->value, "100-continue");
    req->upgrade = false; /* 8.6: no Upgrade in HTTP/2 */
}

enum sg_h2_verdict sg_h2_head_finish(struct sg_h2_head *h, bool end_stream, struct sg_request *req, int *status,
                                     const char **text)
{
    if (h->too_large) {
        /* 10.5.1: 431 for a header section larger than we will handle. */
        *status = 431;
        *text = "request head too large\n";
        return SG_H2_ANSWER;
    }
    if (h->malformed)
        return SG_H2_MALFORMED;
    enum sg_h2_verdict v = check_target(h, status, text);
    if (v != SG_H2_REQUEST)
        return v;
    struct sg_str host;
    if (!pick_host(h, &host)) {
        malformed(h, sg_h2_err_authority);
        return SG_H2_MALFORMED;
    }
    /* 8.1.1: END_STREAM with a non-zero content-length is malformed. */
    if (end_stream && h->content_length > 0) {
        malformed(h, sg_h2_err_content_length);
        return SG_H2_MALFORMED;
    }
    if (!join_cookies(h)) {
        malformed(h, sg_h2_err_nomem);
        return SG_H2_MALFORMED;
    }
    fill_request(h, end_stream, req, host);
    return SG_H2_REQUEST;
}
