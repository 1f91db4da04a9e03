/* Typed access to the node tree. Each getter validates one field at its
 * node, reports what is wrong in words an operator can act on, and leaves
 * the default in place so that the walk can go on to the next field. */
#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

size_t cfg_map_len(const struct cfg_node *map)
{
    return map && map->kind == CFG_MAP ? map->n_kids / 2 : 0;
}

const struct cfg_node *cfg_map_key_at(const struct cfg_node *map, size_t i)
{
    return map->kids[2 * i];
}

const struct cfg_node *cfg_map_val_at(const struct cfg_node *map, size_t i)
{
    return map->kids[2 * i + 1];
}

const struct cfg_node *cfg_key(const struct cfg_node *map, const char *key)
{
    for (size_t i = 0; i < cfg_map_len(map); i++)
        if (strcmp(cfg_map_key_at(map, i)->str, key) == 0)
            return cfg_map_key_at(map, i);
    return NULL;
}

const struct cfg_node *cfg_opt(const struct cfg_node *map, const char *key)
{
    for (size_t i = 0; i < cfg_map_len(map); i++) {
        if (strcmp(cfg_map_key_at(map, i)->str, key) != 0)
            continue;
        const struct cfg_node *v = cfg_map_val_at(map, i);
        return v->null ? NULL : v;
    }
    return NULL;
}

const struct cfg_node *cfg_req(struct cfg_ctx *c, const struct cfg_node *map, const char *key, const char *where)
{
    const struct cfg_node *v = cfg_opt(map, key);
    if (v)
        return v;
    const struct cfg_node *k = cfg_key(map, key);
    if (k)
        cfg_error(c, k, "%s: a value is required", key);
    else
        cfg_error(c, map, "missing required key \"%s\" %s", key, where);
    return NULL;
}

static void join_names(const char *const *names, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; names[i] && used < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", names[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

void cfg_check_keys(struct cfg_ctx *c, const struct cfg_node *map, const char *where, const char *const *allowed)
{
    for (size_t i = 0; i < cfg_map_len(map); i++) {
        const struct cfg_node *k = cfg_map_key_at(map, i);
        size_t j = 0;
        while (allowed[j] && strcmp(allowed[j], k->str) != 0)
            j++;
        if (allowed[j])
            continue;
        char expected[512];
        join_names(allowed, expected, sizeof expected);
        cfg_error(c, k, "unknown key \"%s\" %s (expected %s)", k->str, where, expected);
    }
}

/* "a mapping", "a list", or the scalar itself in quotes: showing the value
 * tells the operator more than "a string" would. */
static void describe(const struct cfg_node *n, char *buf, size_t size)
{
    if (n->null)
        snprintf(buf, size, "nothing");
    else if (n->kind == CFG_MAP)
        snprintf(buf, size, "a mapping");
    else if (n->kind == CFG_SEQ)
        snprintf(buf, size, "a list");
    else
        snprintf(buf, size, "\"%.64s%s\"", n->str, n->len > 64 ? "..." : "");
}

bool cfg_want(struct cfg_ctx *c, const struct cfg_node *n, enum cfg_kind kind, const char *key)
{
    if (n->kind == kind && !n->null)
        return true;
    if (n->reported)
        return false;
    char got[96];
    describe(n, got, sizeof got);
    cfg_error(c, n, "%s: expected %s, got %s", key,
              kind == CFG_MAP ? "a mapping" : kind == CFG_SEQ ? "a list" : "a value", got);
    return false;
}

bool cfg_want_scalar(struct cfg_ctx *c, const struct cfg_node *n, const char *key, const char *what)
{
    if (n->kind == CFG_SCALAR && !n->null)
        return !n->reported;
    if (n->reported)
        return false;
    char got[96];
    describe(n, got, sizeof got);
    cfg_error(c, n, "%s: expected %s, got %s", key, what, got);
    return false;
}

static bool dup_out(struct cfg_ctx *c, const char *s, char **out)
{
    *out = s ? cfg_strdup(c, s) : NULL;
    return !s || *out;
}

bool cfg_get_str(struct cfg_ctx *c, const struct cfg_node *map, const char *key, const char *def, char **out)
{
    const struct cfg_node *n = cfg_opt(map, key);
    if (!n)
        return dup_out(c, def, out);
    if (!cfg_want_scalar(c, n, key, "a string")) {
        dup_out(c, def, out);
        return false;
    }
    return dup_out(c, n->str, out);
}

bool cfg_req_str(struct cfg_ctx *c, const struct cfg_node *map, const char *key, const char *where, char **out)
{
    *out = NULL;
    const struct cfg_node *n = cfg_req(c, map, key, where);
    if (!n || !cfg_want_scalar(c, n, key, "a string"))
        return false;
    if (!*n->str) {
        cfg_error(c, n, "%s: must not be empty", key);
        return false;
    }
    return dup_out(c, n->str, out);
}

bool cfg_get_bool(struct cfg_ctx *c, const struct cfg_node *map, const char *key, bool def, bool *out)
{
    *out = def;
    const struct cfg_node *n = cfg_opt(map, key);
    if (!n)
        return true;
    if (!cfg_want_scalar(c, n, key, "true or false"))
        return false;
    /* The YAML 1.2 core schema spellings; yes/no/on/off are YAML 1.1
     * surprises (the "Norway problem") and are refused. */
    const char *s = n->str;
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        *out = true;
    else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        *out = false;
    else {
        cfg_error(c, n, "%s: expected true or false, got \"%s\"", key, s);
        return false;
    }
    return true;
}

bool cfg_node_uint(struct cfg_ctx *c, const struct cfg_node *n, const char *key, uint64_t min, uint64_t max,
                   uint64_t *out)
{
    if (!cfg_want_scalar(c, n, key, "an integer"))
        return false;
    uint64_t v;
    const char *err = cfg_parse_uint(n->str, &v);
    if (err == cfg_bad_syntax) {
        cfg_error(c, n, "%s: expected a whole number, got \"%s\"", key, n->str);
        return false;
    }
    if (err == cfg_bad_overflow || v < min || v > max) {
        if (min > 0 && max == UINT32_MAX)
            cfg_error(c, n, "%s: must be at least %llu, got %s", key, (unsigned long long)min, n->str);
        else
            cfg_error(c, n, "%s: must be between %llu and %llu, got %s", key, (unsigned long long)min,
                      (unsigned long long)max, n->str);
        return false;
    }
    *out = v;
    return true;
}

bool cfg_get_u32(struct cfg_ctx *c, const struct cfg_node *map, const char *key, uint32_t def, uint32_t min,
                 uint32_t max, uint32_t *out)
{
    *out = def;
    const struct cfg_node *n = cfg_opt(map, key);
    uint64_t v;
    if (!n)
        return true;
    if (!cfg_node_uint(c, n, key, min, max, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

bool cfg_get_duration(struct cfg_ctx *c, const struct cfg_node *map, const char *key, uint64_t def, bool zero_ok,
                      uint64_t *out)
{
    *out = def;
    const struct cfg_node *n = cfg_opt(map, key);
    if (!n)
        return true;
    if (!cfg_want_scalar(c, n, key, "a duration"))
        return false;
    uint64_t v;
    const char *err = cfg_parse_duration(n->str, &v);
    if (err == cfg_bad_overflow) {
        cfg_error(c, n, "duration \"%s\" is too large", n->str);
        return false;
    }
    if (err) {
        cfg_error(c, n, "invalid duration \"%s\" (expected e.g. 250ms, 5s, 2m, 1h)", n->str);
        return false;
    }
    if (v == 0 && !zero_ok) {
        cfg_error(c, n, "%s: must be greater than 0", key);
        return false;
    }
    *out = v;
    return true;
}

bool cfg_get_size(struct cfg_ctx *c, const struct cfg_node *map, const char *key, uint64_t def, uint64_t min,
                  uint64_t max, uint64_t *out)
{
    *out = def;
    const struct cfg_node *n = cfg_opt(map, key);
    if (!n)
        return true;
    if (!cfg_want_scalar(c, n, key, "a size"))
        return false;
    uint64_t v;
    const char *err = cfg_parse_size(n->str, &v);
    if (err == cfg_bad_syntax) {
        cfg_error(c, n, "invalid size \"%s\" (expected bytes or KiB, MiB, GiB, e.g. 512, 64KiB, 1MiB)", n->str);
        return false;
    }
    if (err || v < min || v > max) {
        cfg_error(c, n, "%s: must be between %llu and %llu bytes, got %s", key, (unsigned long long)min,
                  (unsigned long long)max, n->str);
        return false;
    }
    *out = v;
    return true;
}

bool cfg_get_enum(struct cfg_ctx *c, const struct cfg_node *map, const char *key, const char *const *names, int def,
                  int *out)
{
    *out = def;
    const struct cfg_node *n = cfg_opt(map, key);
    if (!n)
        return true;
    if (!cfg_want_scalar(c, n, key, "a value"))
        return false;
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], n->str) == 0) {
            *out = i;
            return true;
        }
    }
    char expected[256];
    join_names(names, expected, sizeof expected);
    cfg_error(c, n, "invalid %s \"%s\" (expected %s)", key, n->str, expected);
    return false;
}

void cfg_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

bool cfg_check_token_item(struct cfg_ctx *c, const struct cfg_node *item, const char *key)
{
    if (cfg_is_token(item->str))
        return true;
    cfg_error(c, item, "%s: \"%s\" is not a valid HTTP token (letters, digits and !#$%%&'*+-.^_`|~)", key,
              item->str);
    return false;
}

static bool fill_list(struct cfg_ctx *c, const struct cfg_node *list, const char *key, cfg_item_check check,
                      unsigned flags, char **v)
{
    bool ok = true;
    for (size_t i = 0; i < list->n_kids; i++) {
        const struct cfg_node *item = list->kids[i];
        if (!cfg_want_scalar(c, item, key, "a string") || (check && !check(c, item, key))) {
            ok = false;
            continue;
        }
        if (!(v[i] = cfg_strdup(c, item->str)))
            return false;
        if (flags & CFG_LIST_LOWER)
            cfg_lower(v[i]);
    }
    return ok;
}

bool cfg_get_str_list(struct cfg_ctx *c, const struct cfg_node *map, const char *key, cfg_item_check check,
                      unsigned flags, char ***out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    const struct cfg_node *list = cfg_opt(map, key);
    if (!list)
        return true;
    if (!cfg_want(c, list, CFG_SEQ, key))
        return false;
    if (list->n_kids == 0 && (flags & CFG_LIST_NONEMPTY)) {
        cfg_error(c, list, "%s: the list must not be empty (leave the key out instead)", key);
        return false;
    }
    char **v = cfg_calloc(c, list->n_kids, sizeof *v);
    if (!v)
        return false;
    /* Stored before filling so that the snapshot frees partial lists. */
    *out = v;
    *n_out = list->n_kids;
    return fill_list(c, list, key, check, flags, v);
}

bool cfg_regcomp(struct cfg_ctx *c, const struct cfg_node *n, const char *key, regex_t *re)
{
    int rc = regcomp(re, n->str, REG_EXTENDED | REG_NOSUB);
    if (rc == 0)
        return true;
    char why[256];
    regerror(rc, re, why, sizeof why);
    /* POSIX leaves the regex_t undefined on failure: nothing to free. */
    cfg_error(c, n, "invalid %s \"%s\": %s", key, n->str, why);
    return false;
}

bool cfg_address(struct cfg_ctx *c, const struct cfg_node *n, const char *key, bool allow_port0,
                 struct sg_hostport *out)
{
    if (!cfg_want_scalar(c, n, key, "HOST:PORT"))
        return false;
    struct sg_hostport hp;
    const char *why = cfg_parse_hostport(n->str, &hp);
    if (!why && hp.port == 0 && !allow_port0) {
        free(hp.host);
        why = "the port must be between 1 and 65535";
    }
    if (why) {
        cfg_error(c, n, "invalid address \"%s\": %s (expected HOST:PORT or [IPv6]:PORT)", n->str, why);
        return false;
    }
    *out = hp;
    return true;
}

/* A path that ends up in a request line (match, rewrite, health check).
 * Whitespace or control characters could never match and, once written
 * upstream, would split the request line; match paths are compared without
 * the query, so a '?' or '#' there could never match either. */
bool cfg_check_path(struct cfg_ctx *c, const struct cfg_node *n, const char *key, bool allow_query)
{
    if (n->str[0] != '/') {
        cfg_error(c, n, "%s \"%s\" must start with '/'", key, n->str);
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)n->str; *p; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            cfg_error(c, n, "%s \"%s\" must not contain spaces or control characters", key, n->str);
            return false;
        }
        if (!allow_query && (*p == '?' || *p == '#')) {
            cfg_error(c, n, "%s \"%s\" must not contain '?' or '#' (the query is not matched)", key, n->str);
            return false;
        }
    }
    return true;
}
