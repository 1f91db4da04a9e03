/* match: the conditions a request must meet to take a route. All given
 * conditions must hold; an absent or empty match takes every request. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

static const char *const match_keys[] = { "path", "path_prefix", "path_regex", "methods", "host", "headers", NULL };
static const char *const header_match_keys[] = { "exact", "prefix", "regex", "present", NULL };

static void compile_path(struct cfg_ctx *c, const struct cfg_node *key, const struct cfg_node *v, struct sg_route *r)
{
    static const enum sg_path_match_kind kinds[] = { SG_PM_EXACT, SG_PM_PREFIX, SG_PM_REGEX };
    int k = strcmp(key->str, "path") == 0 ? 0 : strcmp(key->str, "path_prefix") == 0 ? 1 : 2;
    if (!cfg_want_scalar(c, v, key->str, "a path"))
        return;
    if (k < 2 && !cfg_check_path(c, v, key->str, false))
        return;
    if (!(r->path = cfg_strdup(c, v->str)))
        return;
    /* path_kind says REGEX only once path_re really is compiled: the
     * snapshot's free relies on it. */
    if (k == 2 && !cfg_regcomp(c, v, "path_regex", &r->path_re))
        return;
    r->path_kind = kinds[k];
}

/* At most one of path, path_prefix, path_regex; the second one found is
 * the one reported. */
static void compile_paths(struct cfg_ctx *c, const struct cfg_node *m, struct sg_route *r)
{
    const struct cfg_node *first = NULL;
    for (size_t i = 0; i < cfg_map_len(m); i++) {
        const struct cfg_node *k = cfg_map_key_at(m, i), *v = cfg_map_val_at(m, i);
        if (strcmp(k->str, "path") != 0 && strcmp(k->str, "path_prefix") != 0 && strcmp(k->str, "path_regex") != 0)
            continue;
        if (v->null)
            continue;
        if (first) {
            cfg_error(c, k, "match: only one of path, path_prefix, path_regex may be given (%s is at line %u)",
                      first->str, first->line);
            continue;
        }
        first = k;
        compile_path(c, k, v, r);
    }
}

static bool is_v6(const char *s, size_t n)
{
    char addr[64];
    struct in6_addr a6;
    if (n == 0 || n >= sizeof addr)
        return false;
    memcpy(addr, s, n);
    addr[n] = '\0';
    return inet_pton(AF_INET6, addr, &a6) == 1;
}

/* Cuts a ":PORT" off h in place; false if what follows ':' is no port. */
static bool strip_port(char *h)
{
    char *colon = h[0] == '[' ? strstr(h, "]:") : strchr(h, ':');
    if (!colon)
        return true;
    if (h[0] == '[')
        colon++;
    else if (strchr(colon + 1, ':'))
        return true; /* several colons: a bare IPv6 address, no port */
    uint64_t port;
    if (cfg_parse_uint(colon + 1, &port) != NULL || port > 65535)
        return false;
    *colon = '\0';
    return true;
}

/* Host is compared with Host / :authority without the port, ignoring
 * case, so the route's side is normalised here once:
 * "API.example.com:8080" -> "api.example.com", "[::1]:8080" -> "[::1]".
 * IPv6 literals may be written with or without brackets; the router
 * accepts both forms. */
static void compile_host(struct cfg_ctx *c, const struct cfg_node *n, struct sg_route *r)
{
    if (!cfg_want_scalar(c, n, "host", "a host name"))
        return;
    char *h = cfg_strdup(c, n->str);
    if (!h)
        return;
    bool ok = strip_port(h);
    cfg_lower(h);
    size_t len = strlen(h);
    ok = ok && ((len > 2 && h[0] == '[' && h[len - 1] == ']' && is_v6(h + 1, len - 2)) || is_v6(h, len) ||
                cfg_valid_hostname(h));
    if (!ok) {
        cfg_error(c, n, "host \"%s\" is not a valid host name (wildcards are not supported)", n->str);
        free(h);
        return;
    }
    r->host = h;
}

static bool value_ok(struct cfg_ctx *c, const struct cfg_node *n, const char *what)
{
    if (!strpbrk(n->str, "\r\n"))
        return true;
    cfg_error(c, n, "%s must not contain CR or LF", what);
    return false;
}

static void compile_header_rule(struct cfg_ctx *c, const struct cfg_node *n, struct sg_header_match *h)
{
    static const enum sg_header_match_kind kinds[] = { SG_HM_EXACT, SG_HM_PREFIX, SG_HM_REGEX, SG_HM_PRESENT };
    cfg_check_keys(c, n, "in header match", header_match_keys);
    if (cfg_map_len(n) != 1) {
        cfg_error(c, n, "header \"%s\": give exactly one of exact, prefix, regex, present", h->name);
        return;
    }
    const struct cfg_node *k = cfg_map_key_at(n, 0);
    int idx = 0;
    while (header_match_keys[idx] && strcmp(header_match_keys[idx], k->str) != 0)
        idx++;
    if (!header_match_keys[idx])
        return; /* reported as an unknown key */
    if (kinds[idx] == SG_HM_PRESENT) {
        if (cfg_get_bool(c, n, "present", true, &h->present))
            h->kind = SG_HM_PRESENT;
        return;
    }
    const struct cfg_node *v = cfg_map_val_at(n, 0);
    if (!cfg_want_scalar(c, v, k->str, "a string") || !value_ok(c, v, k->str))
        return;
    if (!(h->value = cfg_strdup(c, v->str)))
        return;
    if (kinds[idx] == SG_HM_REGEX && !cfg_regcomp(c, v, "regex", &h->re))
        return;
    h->kind = kinds[idx];
}

static void compile_header_match(struct cfg_ctx *c, const struct cfg_node *map, size_t i, struct sg_route *r)
{
    const struct cfg_node *k = cfg_map_key_at(map, i), *v = cfg_map_val_at(map, i);
    struct sg_header_match *h = &r->headers[i];
    h->kind = SG_HM_EXACT;
    if (!cfg_check_token_item(c, k, "header name") || !(h->name = cfg_strdup(c, k->str)))
        return;
    cfg_lower(h->name);
    for (size_t j = 0; j < i; j++) {
        if (r->headers[j].name && strcmp(r->headers[j].name, h->name) == 0) {
            cfg_error(c, k, "header \"%s\" is matched twice (names are case-insensitive)", h->name);
            return;
        }
    }
    if (v->kind == CFG_MAP) {
        compile_header_rule(c, v, h);
    } else if (cfg_want_scalar(c, v, h->name, "a value or {exact|prefix|regex|present: ...}") &&
               value_ok(c, v, h->name)) {
        h->value = cfg_strdup(c, v->str);
    }
}

static void compile_headers(struct cfg_ctx *c, const struct cfg_node *n, struct sg_route *r)
{
    if (!cfg_want(c, n, CFG_MAP, "headers") || cfg_map_len(n) == 0)
        return;
    r->headers = cfg_calloc(c, cfg_map_len(n), sizeof *r->headers);
    if (!r->headers)
        return;
    r->n_headers = cfg_map_len(n);
    for (size_t i = 0; i < r->n_headers; i++)
        compile_header_match(c, n, i, r);
}

void cfg_compile_match(struct cfg_ctx *c, const struct cfg_node *m, struct sg_route *r)
{
    if (!cfg_want(c, m, CFG_MAP, "match"))
        return;
    cfg_check_keys(c, m, "in match", match_keys);
    compile_paths(c, m, r);
    cfg_get_str_list(c, m, "methods", cfg_check_token_item, CFG_LIST_NONEMPTY, &r->methods, &r->n_methods);
    const struct cfg_node *host = cfg_opt(m, "host");
    if (host)
        compile_host(c, host, r);
    const struct cfg_node *headers = cfg_opt(m, "headers");
    if (headers)
        compile_headers(c, headers, r);
}
