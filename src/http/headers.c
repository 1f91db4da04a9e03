/* HTTP field lists and the rules for forwarding them through the proxy.
 *
 * The rules come from RFC 9110 section 7.6.1 (Connection and hop-by-hop
 * fields), 7.6.2 and 7.8 (Upgrade), 10.1.1 (Expect), 10.1.4 (TE) and the
 * behaviour contract (x-forwarded-*, x-request-id). Nothing here knows
 * HTTP/1.1 or HTTP/2 framing: the callers serialise what is emitted. */
#include "strangler/headers.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/config.h"
#include "strangler/mem.h"

void sg_headers_init(struct sg_headers *h)
{
    h->v = NULL;
    h->n = 0;
    h->cap = 0;
}

void sg_headers_free(struct sg_headers *h)
{
    sg_mem_free(h->v);
    sg_headers_init(h);
}

bool sg_headers_add(struct sg_headers *h, struct sg_str name, struct sg_str value)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        if (cap > SIZE_MAX / sizeof *h->v)
            return false;
        struct sg_header *v = sg_mem_realloc(h->v, cap * sizeof *v);
        if (!v)
            return false;
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n++] = (struct sg_header){ name, value };
    return true;
}

const struct sg_header *sg_headers_get(const struct sg_headers *h, struct sg_str name)
{
    for (size_t i = 0; i < h->n; i++)
        if (sg_str_ieq(h->v[i].name, name))
            return &h->v[i];
    return NULL;
}

size_t sg_headers_count(const struct sg_headers *h, struct sg_str name)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++)
        if (sg_str_ieq(h->v[i].name, name))
            n++;
    return n;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static struct sg_str trim_ows(struct sg_str s)
{
    while (s.len && is_ows(s.p[0])) {
        s.p++;
        s.len--;
    }
    while (s.len && is_ows(s.p[s.len - 1]))
        s.len--;
    return s;
}

/* Splits off the next element of a comma-separated list (RFC 9110 5.6.1).
 * Recipients must accept and ignore empty elements ("a, ,b"), so an
 * element may come back empty; callers skip those. */
static bool list_next(struct sg_str *rest, struct sg_str *elem)
{
    if (!rest->p || rest->len == 0)
        return false;
    const char *comma = memchr(rest->p, ',', rest->len);
    size_t n = comma ? (size_t)(comma - rest->p) : rest->len;
    *elem = trim_ows((struct sg_str){ rest->p, n });
    rest->p += comma ? n + 1 : n;
    rest->len -= comma ? n + 1 : n;
    return true;
}

/* The token of a list element, without parameters: "trailers;q=1" and
 * "deflate ; q=0.5" compare as "trailers" and "deflate". */
static struct sg_str element_token(struct sg_str elem)
{
    const char *semi = elem.len ? memchr(elem.p, ';', elem.len) : NULL;
    if (semi)
        elem.len = (size_t)(semi - elem.p);
    return trim_ows(elem);
}

bool sg_header_list_has(struct sg_str value, struct sg_str token)
{
    if (token.len == 0)
        return false;
    struct sg_str elem;
    while (list_next(&value, &elem))
        if (sg_str_ieq(element_token(elem), token))
            return true;
    return false;
}

bool sg_header_is_hop_by_hop(struct sg_str name)
{
    /* HTTP2-Settings belongs to the h2c upgrade (RFC 7540 3.2.1), which
     * this proxy never performs or forwards (RFC 9113 removed it). */
    switch (name.len) { /* asked for every field of every message */
    case 2:
        return sg_str_ieq(name, SG_STR_LIT("te"));
    case 7:
        return sg_str_ieq(name, SG_STR_LIT("upgrade"));
    case 10:
        return sg_str_ieq(name, SG_STR_LIT("connection")) || sg_str_ieq(name, SG_STR_LIT("keep-alive"));
    case 14:
        return sg_str_ieq(name, SG_STR_LIT("http2-settings"));
    case 16:
        return sg_str_ieq(name, SG_STR_LIT("proxy-connection"));
    case 17:
        return sg_str_ieq(name, SG_STR_LIT("transfer-encoding"));
    default:
        return false;
    }
}

bool sg_header_name_reserved(struct sg_str name)
{
    if (name.len == 0 || name.p[0] == ':')
        return true;
    return sg_header_is_hop_by_hop(name) || sg_str_ieq_c(name, "host") || sg_str_ieq_c(name, "content-length") ||
           sg_str_ieq_c(name, "expect") || sg_str_ieq_c(name, "x-request-id");
}

bool sg_request_id_valid(struct sg_str id)
{
    if (id.len == 0 || id.len > 200)
        return false;
    for (size_t i = 0; i < id.len; i++)
        if ((unsigned char)id.p[i] < 0x21 || (unsigned char)id.p[i] > 0x7e)
            return false;
    return true;
}

/* RFC 9110 7.6.1: a proxy must remove every field the Connection header
 * names (they are hop-by-hop options of the previous hop), looking at every
 * Connection field line, not only the first. Asked for every other field
 * of the message, so the names are gathered once; those already hop-by-hop
 * (keep-alive, upgrade) are dropped anyway and not kept. Past
 * CONN_OPTS_MAX names the fields are scanned again for every question. */
#define CONN_OPTS_MAX 8
struct conn_opts {
    const struct sg_headers *rescan; /* set when there were too many names */
    size_t n;
    struct sg_str v[CONN_OPTS_MAX];
};

static bool is_connection(struct sg_str name)
{
    return name.len == 10 && sg_str_ieq(name, SG_STR_LIT("connection"));
}

static void conn_opts_init(struct conn_opts *c, const struct sg_headers *in)
{
    c->rescan = NULL;
    c->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        if (!is_connection(in->v[i].name))
            continue;
        struct sg_str rest = in->v[i].value, elem;
        while (list_next(&rest, &elem)) {
            struct sg_str name = element_token(elem);
            if (name.len == 0 || sg_header_is_hop_by_hop(name))
                continue;
            if (c->n == CONN_OPTS_MAX) {
                c->rescan = in;
                return;
            }
            c->v[c->n++] = name;
        }
    }
}

static bool connection_names(const struct conn_opts *c, struct sg_str name)
{
    if (c->rescan) {
        for (size_t i = 0; i < c->rescan->n; i++)
            if (is_connection(c->rescan->v[i].name) && sg_header_list_has(c->rescan->v[i].value, name))
                return true;
        return false;
    }
    for (size_t i = 0; i < c->n; i++)
        if (sg_str_ieq(c->v[i], name))
            return true;
    return false;
}

static bool name_in(struct sg_str name, char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (sg_str_ieq_c(name, names[i]))
            return true;
    return false;
}

static bool edits_remove(const struct sg_header_edits *e, struct sg_str name)
{
    return e && name_in(name, e->remove, e->n_remove);
}

/* A `set` entry for a reserved name is inert (see emit_set), so it must
 * not take the original field out either. */
static bool edits_set(const struct sg_header_edits *e, struct sg_str name)
{
    if (!e || e->n_set == 0 || sg_header_name_reserved(name))
        return false;
    for (size_t i = 0; i < e->n_set; i++)
        if (sg_str_ieq_c(name, e->set[i].name))
            return true;
    return false;
}

/* True when the operator's edits take a field out: removed, or replaced by
 * their own `set` value. */
static bool edited_out(const struct sg_header_edits *e, struct sg_str name)
{
    return edits_remove(e, name) || edits_set(e, name);
}

/* Fields never copied from a client request. Host and Content-Length are
 * written by the caller from the rewritten target and the real framing;
 * Expect (RFC 9110 10.1.1) is answered by the proxy itself; x-request-id is
 * replaced so the primary, every shadow and the log agree on it. */
static bool request_field_dropped(const struct conn_opts *c, const struct sg_header *f,
                                  const struct sg_header_edits *e)
{
    return sg_header_is_hop_by_hop(f->name) || sg_str_ieq_c(f->name, "host") ||
           sg_str_ieq_c(f->name, "content-length") || sg_str_ieq_c(f->name, "expect") ||
           sg_str_ieq_c(f->name, "x-request-id") || connection_names(c, f->name) || edited_out(e, f->name);
}

/* RFC 9110 10.1.4: TE is hop-by-hop, but "trailers" tells the next hop the
 * client accepts trailer fields; gRPC needs it to reach the upstream. */
static bool te_wants_trailers(const struct sg_headers *in)
{
    for (size_t i = 0; i < in->n; i++)
        if (sg_str_ieq_c(in->v[i].name, "te") && sg_header_list_has(in->v[i].value, SG_STR_LIT("trailers")))
            return true;
    return false;
}

/* x-forwarded-for: the client's list (every surviving field line, joined
 * as RFC 9110 5.3 allows) followed by the address we received it from. The
 * joined value only lives for the emit call. */
static void emit_xff(const struct sg_headers *in, const struct conn_opts *c, const struct sg_forward_request_opts *o,
                     sg_header_emit_fn emit, void *ctx)
{
    size_t total = o->client_addr.len, parts = o->client_addr.len ? 1 : 0;
    for (size_t i = 0; i < in->n; i++) {
        const struct sg_header *f = &in->v[i];
        if (sg_str_ieq_c(f->name, "x-forwarded-for") && !request_field_dropped(c, f, o->edits) &&
            trim_ows(f->value).len) {
            total += trim_ows(f->value).len;
            parts++;
        }
    }
    if (parts == 0)
        return;
    total += 2 * (parts - 1);
    char stack[512];
    char *buf = total <= sizeof stack ? stack : malloc(total);
    if (!buf) {
        /* Out of memory: our own hop is the part the upstream must see. */
        if (o->client_addr.len)
            emit(ctx, SG_STR_LIT("x-forwarded-for"), o->client_addr);
        return;
    }
    size_t len = 0;
    for (size_t i = 0; i < in->n; i++) {
        const struct sg_header *f = &in->v[i];
        struct sg_str v = trim_ows(f->value);
        if (!sg_str_ieq_c(f->name, "x-forwarded-for") || request_field_dropped(c, f, o->edits) || !v.len)
            continue;
        if (len) {
            memcpy(buf + len, ", ", 2);
            len += 2;
        }
        memcpy(buf + len, v.p, v.len);
        len += v.len;
    }
    if (o->client_addr.len) {
        if (len) {
            memcpy(buf + len, ", ", 2);
            len += 2;
        }
        memcpy(buf + len, o->client_addr.p, o->client_addr.len);
        len += o->client_addr.len;
    }
    emit(ctx, SG_STR_LIT("x-forwarded-for"), (struct sg_str){ buf, len });
    if (buf != stack)
        free(buf);
}

static bool client_sent_xfp(const struct sg_headers *in, const struct conn_opts *c, const struct sg_header_edits *e)
{
    for (size_t i = 0; i < in->n; i++)
        if (sg_str_ieq_c(in->v[i].name, "x-forwarded-proto") && !request_field_dropped(c, &in->v[i], e))
            return true;
    return false;
}

/* RFC 9110 7.8: Upgrade and "Connection: upgrade" are hop-by-hop, so a
 * tunnelling proxy re-creates them for the next hop. */
static void emit_upgrade(const struct sg_headers *in, sg_header_emit_fn emit, void *ctx)
{
    const struct sg_header *up = sg_headers_get(in, SG_STR_LIT("upgrade"));
    if (!up)
        return;
    emit(ctx, SG_STR_LIT("upgrade"), up->value);
    emit(ctx, SG_STR_LIT("connection"), SG_STR_LIT("upgrade"));
}

/* A request only ever asks the upstream for the one protocol the proxy
 * tunnels: whatever else the client listed ("websocket, h2c") is not
 * offered on its behalf. */
static void emit_upgrade_request(sg_header_emit_fn emit, void *ctx)
{
    emit(ctx, SG_STR_LIT("upgrade"), SG_STR_LIT("websocket"));
    emit(ctx, SG_STR_LIT("connection"), SG_STR_LIT("upgrade"));
}

/* The operator's `set` fields. Names the proxy itself controls (framing,
 * hop-by-hop, Host, x-request-id, pseudo-headers) are never emitted from
 * here: the loader should reject them, this is the last line of defence. */
static void emit_set(const struct sg_header_edits *e, sg_header_emit_fn emit, void *ctx)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n_set; i++) {
        struct sg_str name = sg_str_c(e->set[i].name);
        if (!sg_header_name_reserved(name))
            emit(ctx, name, sg_str_c(e->set[i].value));
    }
}

/* The client's x-forwarded-proto is kept (behind a load balancer it tells
 * the real scheme); ours is added only when absent. An operator `set` of
 * x-forwarded-for/-proto replaces ours; `remove` of x-forwarded-for drops
 * only the client's part of the chain: the contract adds our hop always. */
static void emit_proxy_fields(const struct sg_headers *in, const struct conn_opts *c,
                              const struct sg_forward_request_opts *o, sg_header_emit_fn emit, void *ctx)
{
    if (!edits_set(o->edits, SG_STR_LIT("x-forwarded-for")))
        emit_xff(in, c, o, emit, ctx);
    if (!edits_set(o->edits, SG_STR_LIT("x-forwarded-proto")) && !client_sent_xfp(in, c, o->edits) && o->proto.len)
        emit(ctx, SG_STR_LIT("x-forwarded-proto"), o->proto);
    if (o->request_id.len)
        emit(ctx, SG_STR_LIT("x-request-id"), o->request_id);
    if (te_wants_trailers(in))
        emit(ctx, SG_STR_LIT("te"), SG_STR_LIT("trailers"));
    if (o->upgrade)
        emit_upgrade_request(emit, ctx);
}

void sg_headers_forward_request(const struct sg_headers *in, const struct sg_forward_request_opts *o,
                                sg_header_emit_fn emit, void *ctx)
{
    struct conn_opts c;
    conn_opts_init(&c, in);
    for (size_t i = 0; i < in->n; i++) {
        const struct sg_header *f = &in->v[i];
        if (sg_str_ieq_c(f->name, "x-forwarded-for") || request_field_dropped(&c, f, o->edits))
            continue;
        emit(ctx, f->name, f->value);
    }
    emit_proxy_fields(in, &c, o, emit, ctx);
    emit_set(o->edits, emit, ctx);
}

/* Responses: RFC 9110 7.6.1 applies the same way. Content-Length goes
 * because the caller frames the body for its own connection. */
void sg_headers_forward_response(const struct sg_headers *in, const struct sg_header_edits *edits, bool upgrade,
                                 sg_header_emit_fn emit, void *ctx)
{
    struct conn_opts c;
    conn_opts_init(&c, in);
    for (size_t i = 0; i < in->n; i++) {
        const struct sg_header *f = &in->v[i];
        if (sg_header_is_hop_by_hop(f->name) || sg_str_ieq_c(f->name, "content-length") ||
            connection_names(&c, f->name) || edited_out(edits, f->name))
            continue;
        emit(ctx, f->name, f->value);
    }
    if (upgrade)
        emit_upgrade(in, emit, ctx);
    emit_set(edits, emit, ctx);
}

/* RFC 9110 6.5.1 lists what a trailer must not carry because a recipient
 * that merged it into the header section would change the message's
 * meaning; the proxy also keeps out the fields it controls itself. */
bool sg_header_trailer_ok(struct sg_str name)
{
    static const char *const banned[] = {
        /* framing, routing */
        "content-length", "host", "trailer",
        /* request modifiers */
        "expect", "max-forwards", "range", "if-match", "if-none-match", "if-modified-since",
        "if-unmodified-since", "if-range", "cache-control", "pragma",
        /* authentication, state */
        "authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate", "cookie", "set-cookie",
        /* response control, representation metadata */
        "age", "date", "expires", "location", "retry-after", "vary", "content-encoding", "content-type",
        "content-range",
        /* the proxy's own */
        "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-request-id",
    };
    if (name.len == 0 || name.p[0] == ':' || sg_header_is_hop_by_hop(name))
        return false;
    for (size_t i = 0; i < sizeof banned / sizeof banned[0]; i++)
        if (sg_str_ieq_c(name, banned[i]))
            return false;
    return true;
}

void sg_headers_forward_trailers(const struct sg_headers *trailers, sg_header_emit_fn emit, void *ctx)
{
    for (size_t i = 0; trailers && i < trailers->n; i++)
        if (sg_header_trailer_ok(trailers->v[i].name))
            emit(ctx, trailers->v[i].name, trailers->v[i].value);
}
