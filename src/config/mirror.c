/* mirror: shadow copies of a route's requests, and compare: what to do
 * with the shadows' responses. Percentages are compiled here into 64-bit
 * thresholds (nginx split_clients does the same) so that sampling on the
 * request path is one comparison with a random number. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config/internal.h"
#include "strangler/compare.h"

static const char *const mirror_keys[] = {
    "upstream", "percent", "timeout", "max_body_bytes", "host_suffix", "methods", "compare", NULL,
};
static const char *const compare_keys[] = {
    "status", "headers", "body", "ignore", "max_body_bytes", "noise", "log_rate", NULL,
};

/* "12", "12.5", "0.001": plain decimals, read without strtod so that the
 * process locale cannot change the meaning of '.'. */
static bool parse_percent(const char *s, double *out)
{
    uint64_t mant = 0;
    int digits = 0, frac = -1;
    for (const char *p = s; *p; p++) {
        if (*p == '.' && frac < 0 && digits > 0) {
            frac = 0;
            continue;
        }
        if (*p < '0' || *p > '9' || ++digits > 18)
            return false;
        mant = mant * 10 + (uint64_t)(*p - '0');
        if (frac >= 0)
            frac++;
    }
    if (digits == 0 || frac == 0)
        return false;
    *out = (double)mant / pow(10.0, frac > 0 ? frac : 0);
    return true;
}

/* threshold = percent/100 * 2^64, clamped: a value that rounds up to 2^64
 * would wrap to 0 in a cast, turning "almost always" into "never". */
static void compile_threshold(struct sg_mirror *m)
{
    m->always = m->percent >= 100.0;
    if (m->always) {
        m->threshold = UINT64_MAX;
        return;
    }
    double t = ldexp(m->percent / 100.0, 64);
    m->threshold = t >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)t;
}

static void compile_percent(struct cfg_ctx *c, const struct cfg_node *map, struct sg_mirror *m)
{
    m->percent = 100.0;
    const struct cfg_node *n = cfg_opt(map, "percent");
    if (n && cfg_want_scalar(c, n, "percent", "a percentage")) {
        double p;
        if (!parse_percent(n->str, &p) || p > 100.0)
            cfg_error(c, n, "percent: expected a number from 0 to 100 (decimals allowed), got \"%s\"", n->str);
        else
            m->percent = p;
    }
    compile_threshold(m);
}

/* RFC 6901 pointers, plus the contract's '*' segment wildcard. */
static bool pointer_check(struct cfg_ctx *c, const struct cfg_node *item, const char *key)
{
    const char *s = item->str;
    if (*s && *s != '/') {
        cfg_error(c, item, "%s: \"%s\" is not a JSON Pointer (it must be \"\" or start with '/')", key, s);
        return false;
    }
    for (const char *p = strchr(s, '~'); p; p = strchr(p + 1, '~')) {
        if (p[1] != '0' && p[1] != '1') {
            cfg_error(c, item, "%s: \"%s\": '~' must be followed by 0 or 1 (~0 is '~', ~1 is '/')", key, s);
            return false;
        }
    }
    return true;
}

/* Pre-split for the diff walk (compare.c), so the request path never
 * parses a pointer. Only called once the strings passed pointer_check. */
static void compile_ignore(struct cfg_ctx *c, const struct cfg_node *n, struct sg_compare *k)
{
    if (k->n_ignore == 0)
        return;
    k->ignore_ptrs = cfg_calloc(c, k->n_ignore, sizeof *k->ignore_ptrs);
    for (size_t i = 0; k->ignore_ptrs && i < k->n_ignore; i++)
        if (k->ignore[i] && !sg_json_pointer_parse(k->ignore[i], &k->ignore_ptrs[i]))
            cfg_error(c, cfg_opt(n, "ignore"), "ignore: \"%s\" is not a JSON Pointer", k->ignore[i]);
}

static void compile_compare(struct cfg_ctx *c, const struct cfg_node *n, struct sg_mirror *m)
{
    static const char *const body_names[] = { "none", "bytes", "json", NULL };
    static const enum sg_compare_body body_kinds[] = { SG_CMP_BODY_NONE, SG_CMP_BODY_BYTES, SG_CMP_BODY_JSON };
    static const char *const noise_names[] = { "off", "auto", NULL };
    if (!cfg_want(c, n, CFG_MAP, "compare"))
        return;
    struct sg_compare *k = m->compare = cfg_calloc(c, 1, sizeof *m->compare);
    if (!k)
        return;
    cfg_check_keys(c, n, "in compare", compare_keys);
    cfg_get_bool(c, n, "status", true, &k->status);
    cfg_get_str_list(c, n, "headers", cfg_check_token_item, CFG_LIST_LOWER, &k->headers, &k->n_headers);
    int body, noise;
    cfg_get_enum(c, n, "body", body_names, 1, &body);
    k->body = body_kinds[body];
    if (cfg_get_str_list(c, n, "ignore", pointer_check, 0, &k->ignore, &k->n_ignore))
        compile_ignore(c, n, k);
    cfg_get_size(c, n, "max_body_bytes", 1024 * 1024, 0, UINT64_MAX, &k->max_body_bytes);
    cfg_get_enum(c, n, "noise", noise_names, 0, &noise);
    k->noise_auto = noise == 1;
    cfg_get_u32(c, n, "log_rate", 10, 0, 1000000, &k->log_rate);
}

static void compile_host_suffix(struct cfg_ctx *c, const struct cfg_node *n, struct sg_mirror *m)
{
    if (!cfg_get_str(c, n, "host_suffix", "-shadow", &m->host_suffix) || !m->host_suffix || !*m->host_suffix)
        return;
    if (!cfg_valid_hostname(m->host_suffix))
        cfg_error(c, cfg_opt(n, "host_suffix"),
                  "host_suffix \"%s\" may only contain letters, digits, '-', '_' and '.'", m->host_suffix);
}

static void compile_mirror(struct cfg_ctx *c, const struct cfg_node *n, struct sg_mirror *m, const char *route)
{
    m->timeout_ms = 5000;
    m->max_body_bytes = 1024 * 1024;
    if (!cfg_want(c, n, CFG_MAP, "mirror")) {
        compile_threshold(m);
        return;
    }
    cfg_check_keys(c, n, "in mirror", mirror_keys);
    const struct cfg_node *u = cfg_req(c, n, "upstream", "in mirror");
    if (u && cfg_want_scalar(c, u, "upstream", "an upstream name") && c->upstreams_ok) {
        m->upstream = cfg_find_upstream(c->cfg, u->str);
        if (!m->upstream)
            cfg_error(c, u, "route \"%s\": unknown upstream \"%s\"", route, u->str);
    }
    compile_percent(c, n, m);
    cfg_get_duration(c, n, "timeout", 5000, false, &m->timeout_ms);
    cfg_get_size(c, n, "max_body_bytes", 1024 * 1024, 0, UINT64_MAX, &m->max_body_bytes);
    compile_host_suffix(c, n, m);
    cfg_get_str_list(c, n, "methods", cfg_check_token_item, CFG_LIST_NONEMPTY, &m->methods, &m->n_methods);
    const struct cfg_node *cmp = cfg_opt(n, "compare");
    if (cmp)
        compile_compare(c, cmp, m);
}

void cfg_compile_mirrors(struct cfg_ctx *c, const struct cfg_node *list, struct sg_route *r, const char *route)
{
    if (!list || !cfg_want(c, list, CFG_SEQ, "mirror"))
        return;
    if (list->n_kids == 0)
        return;
    r->mirrors = cfg_calloc(c, list->n_kids, sizeof *r->mirrors);
    if (!r->mirrors)
        return;
    r->n_mirrors = list->n_kids;
    for (size_t i = 0; i < list->n_kids; i++)
        compile_mirror(c, list->kids[i], &r->mirrors[i], route);
}
