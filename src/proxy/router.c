/* Route selection: the first route whose every match condition holds.
 *
 * Runs for every request on every worker against a read-only snapshot, so
 * it keeps no state and allocates only for a regex subject over 4 KiB. */
#include "strangler/router.h"

#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* regexec needs a NUL-terminated subject. REG_STARTEND would avoid the
 * copy, but sanitizer interceptors of regexec strlen() the subject anyway
 * and read past the field. Subjects are bounded by max_header_bytes and
 * never contain NUL (the HTTP parsers reject it). */
static bool regex_matches(const regex_t *re, struct sg_str s)
{
    char small[4096];
    char *buf = s.len < sizeof small ? small : malloc(s.len + 1);
    if (!buf)
        return false;
    if (s.len)
        memcpy(buf, s.p, s.len);
    buf[s.len] = '\0';
    bool ok = regexec(re, buf, 0, NULL, 0) == 0;
    if (buf != small)
        free(buf);
    return ok;
}

/* Host / :authority without the port (RFC 9110 7.2: uri-host [":" port]).
 * An IP-literal keeps its brackets ("[::1]:80" -> "[::1]"); anything but a
 * port after the ']' leaves the string whole, so it matches nothing. A
 * bare string with several colons can only be an unbracketed IPv6
 * address, which has no port to strip. */
static struct sg_str host_without_port(struct sg_str h)
{
    if (h.len && h.p[0] == '[') {
        const char *close = memchr(h.p, ']', h.len);
        size_t n = close ? (size_t)(close - h.p) + 1 : 0;
        if (close && (n == h.len || h.p[n] == ':'))
            h.len = n;
        return h;
    }
    const char *colon = h.len ? memchr(h.p, ':', h.len) : NULL;
    if (colon && !memchr(colon + 1, ':', h.len - (size_t)(colon - h.p) - 1))
        h.len = (size_t)(colon - h.p);
    return h;
}

/* The route's host is stored lower-cased without port; IPv6 literals may
 * be written with or without brackets, so both forms are accepted. Host
 * names are case-insensitive (RFC 3986 3.2.2). */
static bool host_matches(const char *want, struct sg_str got)
{
    struct sg_str host = host_without_port(got);
    if (sg_str_ieq_c(host, want))
        return true;
    if (host.len >= 2 && host.p[0] == '[' && host.p[host.len - 1] == ']')
        return sg_str_ieq_c((struct sg_str){ host.p + 1, host.len - 2 }, want);
    return false;
}

/* Gateway API PathPrefix: whole segments only. "/bar" matches "/bar",
 * "/bar/" and "/bar/x" but not "/barista"; a prefix ending in '/' already
 * ends on a segment boundary and matches anything under it. */
static bool path_prefix_matches(const char *prefix, struct sg_str path)
{
    struct sg_str p = sg_str_c(prefix);
    if (!sg_str_has_prefix(path, p))
        return false;
    if (p.len == 0 || p.p[p.len - 1] == '/' || path.len == p.len)
        return true;
    return path.p[p.len] == '/';
}

static bool path_matches(const struct sg_route *r, struct sg_str path)
{
    switch (r->path_kind) {
    case SG_PM_ANY:
        return true;
    case SG_PM_EXACT:
        return sg_str_eq(path, sg_str_c(r->path));
    case SG_PM_PREFIX:
        return path_prefix_matches(r->path, path);
    case SG_PM_REGEX:
        return regex_matches(&r->path_re, path);
    }
    return false;
}

/* Methods are case-sensitive tokens (RFC 9110 9.1): "get" is not GET. */
static bool method_matches(const struct sg_route *r, struct sg_str method)
{
    if (r->n_methods == 0)
        return true;
    for (size_t i = 0; i < r->n_methods; i++)
        if (sg_str_eq(method, sg_str_c(r->methods[i])))
            return true;
    return false;
}

static bool header_value_matches(const struct sg_header_match *m, struct sg_str v)
{
    switch (m->kind) {
    case SG_HM_EXACT:
        return sg_str_eq(v, sg_str_c(m->value));
    case SG_HM_PREFIX:
        return sg_str_has_prefix(v, sg_str_c(m->value));
    case SG_HM_REGEX:
        return regex_matches(&m->re, v);
    case SG_HM_PRESENT:
        return true;
    }
    return false;
}

/* A field may arrive on several lines; the condition holds if any line
 * satisfies it (values are compared per line, not joined). `present:
 * false` holds only when no line has the name at all. */
static bool header_matches(const struct sg_header_match *m, const struct sg_headers *h)
{
    struct sg_str name = sg_str_c(m->name);
    bool seen = false;
    for (size_t i = 0; h && i < h->n; i++) {
        if (!sg_str_ieq(h->v[i].name, name))
            continue;
        seen = true;
        if (m->kind == SG_HM_PRESENT)
            break;
        if (header_value_matches(m, h->v[i].value))
            return true;
    }
    return m->kind == SG_HM_PRESENT && seen == m->present;
}

static bool route_matches(const struct sg_route *r, const struct sg_request_view *req)
{
    if (!path_matches(r, req->path) || !method_matches(r, req->method))
        return false;
    if (r->host && !host_matches(r->host, req->host))
        return false;
    for (size_t i = 0; i < r->n_headers; i++)
        if (!header_matches(&r->headers[i], req->headers))
            return false;
    return true;
}

const struct sg_route *sg_route_match(const struct sg_config *cfg, const struct sg_request_view *req)
{
    if (!cfg)
        return NULL;
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (route_matches(&cfg->routes[i], req))
            return &cfg->routes[i];
    return NULL;
}

static size_t copy_out(char *buf, size_t buflen, struct sg_str a, struct sg_str b)
{
    if (a.len > SIZE_MAX - 1 - b.len || a.len + b.len + 1 > buflen)
        return SIZE_MAX;
    if (a.len)
        memcpy(buf, a.p, a.len);
    if (b.len)
        memcpy(buf + a.len, b.p, b.len);
    buf[a.len + b.len] = '\0';
    return a.len + b.len;
}

/* Gateway API ReplacePrefixMatch semantics. The matched prefix is taken
 * without a trailing '/', so the rest of the path is either empty or
 * starts with '/'; the replacement then joins it with exactly one '/':
 *   /bar -> /    : /bar -> /, /bar/ -> /, /bar/x -> /x
 *   /bar -> /v2  : /bar -> /v2, /bar/x -> /v2/x
 *   /bar/ -> /v2 : /bar/x -> /v2/x (not "/v2x", Envoy's plain-string trap) */
size_t sg_route_rewrite(const struct sg_route *r, struct sg_str path, char *buf, size_t buflen)
{
    struct sg_str prefix = sg_str_c(r->path);
    if (!r->rewrite_prefix || r->path_kind != SG_PM_PREFIX || !sg_str_has_prefix(path, prefix))
        return copy_out(buf, buflen, path, SG_STR_NULL);
    if (prefix.len && prefix.p[prefix.len - 1] == '/')
        prefix.len--;
    struct sg_str rest = { path.p + prefix.len, path.len - prefix.len };
    struct sg_str repl = sg_str_c(r->rewrite_prefix);
    if (repl.len && repl.p[repl.len - 1] == '/' && rest.len && rest.p[0] == '/') {
        rest.p++;
        rest.len--;
    }
    if (repl.len + rest.len == 0)
        return copy_out(buf, buflen, SG_STR_LIT("/"), SG_STR_NULL);
    return copy_out(buf, buflen, repl, rest);
}

static bool is_cookie_ows(char c)
{
    return c == ' ' || c == '\t';
}

static struct sg_str trim_cookie(struct sg_str s)
{
    while (s.len && is_cookie_ows(s.p[0])) {
        s.p++;
        s.len--;
    }
    while (s.len && is_cookie_ows(s.p[s.len - 1]))
        s.len--;
    return s;
}

/* RFC 6265 4.2.1: cookie-string = cookie-pair *( ";" SP cookie-pair ),
 * cookie-value may be wrapped in DQUOTEs, which are not part of the value.
 * Parsing is lenient like 5.4's user agents: pairs without '=' are skipped
 * and spacing around ';' and '=' is ignored. Names are case-sensitive. */
static bool cookie_find(struct sg_str header, struct sg_str name, struct sg_str *value)
{
    while (header.len) {
        const char *semi = memchr(header.p, ';', header.len);
        size_t n = semi ? (size_t)(semi - header.p) : header.len;
        struct sg_str pair = { header.p, n };
        header.p += semi ? n + 1 : n;
        header.len -= semi ? n + 1 : n;
        const char *eq = memchr(pair.p, '=', pair.len);
        if (!eq)
            continue;
        struct sg_str k = trim_cookie((struct sg_str){ pair.p, (size_t)(eq - pair.p) });
        if (!sg_str_eq(k, name))
            continue;
        struct sg_str v = trim_cookie((struct sg_str){ eq + 1, pair.len - (size_t)(eq - pair.p) - 1 });
        if (v.len >= 2 && v.p[0] == '"' && v.p[v.len - 1] == '"') {
            v.p++;
            v.len -= 2;
        }
        *value = v;
        return true;
    }
    return false;
}

/* An empty key would send every such request to one destination; it is
 * treated as no key, so those requests spread at random. */
bool sg_sticky_key(const struct sg_route *r, const struct sg_headers *h, struct sg_str *key)
{
    if (!r || !h || r->sticky_kind == SG_STICKY_NONE || !r->sticky_name)
        return false;
    struct sg_str name = sg_str_c(r->sticky_name);
    if (r->sticky_kind == SG_STICKY_HEADER) {
        const struct sg_header *f = sg_headers_get(h, name);
        if (!f || f->value.len == 0)
            return false;
        *key = f->value;
        return true;
    }
    /* HTTP/2 clients may split cookies over several fields (RFC 9113
     * 8.2.3), and HTTP/1.1 ones sometimes do too: look in all of them. */
    for (size_t i = 0; i < h->n; i++) {
        struct sg_str v;
        if (sg_str_ieq_c(h->v[i].name, "cookie") && cookie_find(h->v[i].value, name, &v) && v.len) {
            *key = v;
            return true;
        }
    }
    return false;
}
