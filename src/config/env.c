/* ${NAME} and ${NAME:-default} in scalars, so one file serves every
 * environment (12-factor). The rules follow docker-compose, which operators
 * already know:
 *   ${NAME}            the variable's value; unset is an error
 *   ${NAME:-default}   the default when NAME is unset or empty (shell `:-`)
 *   $$                 a literal '$'
 *   $ not before '{'   a literal '$'
 * The default runs to the first '}' and is not itself expanded. Values taken
 * from the environment are recorded in cfg->secrets so that GET /config can
 * redact them: credentials are the usual reason to put a value there. */
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

struct buf {
    char *p;
    size_t len, cap;
};

static bool buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

static bool is_name_start(char ch)
{
    return ch == '_' || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

static bool is_name_char(char ch)
{
    return is_name_start(ch) || (ch >= '0' && ch <= '9');
}

/* Remembers a value that came from the environment, once. Empty values
 * are skipped: redacting "" would be meaningless. */
static bool add_secret(struct cfg_ctx *c, const char *value)
{
    struct sg_config *cfg = c->cfg;
    if (!cfg || !*value)
        return true;
    for (size_t i = 0; i < cfg->n_secrets; i++)
        if (strcmp(cfg->secrets[i], value) == 0)
            return true;
    char **v = realloc(cfg->secrets, (cfg->n_secrets + 1) * sizeof *v);
    if (!v)
        return false;
    cfg->secrets = v;
    v[cfg->n_secrets] = strdup(value);
    if (!v[cfg->n_secrets])
        return false;
    cfg->n_secrets++;
    return true;
}

/* A parsed ${...} reference: name and optional default, as spans of s. */
struct ref {
    const char *name;
    size_t name_len;
    const char *def; /* NULL: no default */
    size_t def_len;
    size_t total; /* bytes from '$' to '}' inclusive */
};

static const char ref_unterminated[] = "unterminated";
static const char ref_bad_name[] = "bad name";
static const char ref_bad_form[] = "bad form";

/* s points at "${"; end bounds the scalar. */
static const char *parse_ref(const char *s, const char *end, struct ref *r)
{
    const char *close = memchr(s, '}', (size_t)(end - s));
    if (!close)
        return ref_unterminated;
    const char *p = s + 2;
    if (p == close || !is_name_start(*p))
        return ref_bad_name;
    while (p < close && is_name_char(*p))
        p++;
    *r = (struct ref){ .name = s + 2, .name_len = (size_t)(p - (s + 2)), .total = (size_t)(close - s) + 1 };
    if (p == close)
        return NULL;
    if (close - p < 2 || p[0] != ':' || p[1] != '-')
        return ref_bad_form;
    r->def = p + 2;
    r->def_len = (size_t)(close - r->def);
    return NULL;
}

static void report_ref(struct cfg_ctx *c, const char *why, const char *s, const char *end, unsigned line,
                       unsigned col)
{
    const char *close = memchr(s, '}', (size_t)(end - s));
    int n = close ? (int)(close - s + 1) : (int)(end - s);
    if (why == ref_unterminated)
        cfg_error_at(c, line, col,
                     "unterminated \"${\" in \"%.*s\" (expected ${NAME} or ${NAME:-default}; write $$ for a literal $)",
                     n, s);
    else if (why == ref_bad_name)
        cfg_error_at(c, line, col,
                     "invalid variable name in \"%.*s\" (names are letters, digits and _, not starting with a digit)",
                     n, s);
    else
        cfg_error_at(c, line, col, "unsupported substitution \"%.*s\" (expected ${NAME} or ${NAME:-default})",
                     n, s);
}

static bool add(struct cfg_ctx *c, struct buf *b, const char *s, size_t n)
{
    if (buf_add(b, s, n))
        return true;
    c->oom = true;
    return false;
}

/* Appends the value of one reference. False when it was reported (the
 * caller goes on scanning, to report every unset variable) or on OOM. */
static bool expand_ref(struct cfg_ctx *c, const struct ref *r, struct buf *out, unsigned line, unsigned col)
{
    char name[256];
    if (r->name_len >= sizeof name) {
        cfg_error_at(c, line, col, "environment variable name \"%.*s\" is too long", (int)r->name_len, r->name);
        return false;
    }
    memcpy(name, r->name, r->name_len);
    name[r->name_len] = '\0';
    const char *v = getenv(name);
    if (r->def && (!v || !*v))
        return add(c, out, r->def, r->def_len);
    if (!v) {
        cfg_error_at(c, line, col, "environment variable \"%s\" is not set (use ${%s:-default} to give a default)",
                     name, name);
        return false;
    }
    if (!add(c, out, v, strlen(v)))
        return false;
    if (!add_secret(c, v))
        c->oom = true;
    return !c->oom;
}

/* Handles the '$' at `dollar`; returns where scanning resumes, or NULL when
 * the rest of the scalar cannot be read (unterminated reference). */
static const char *expand_dollar(struct cfg_ctx *c, const char *dollar, const char *end, struct buf *out,
                                 bool *failed, unsigned line, unsigned col)
{
    if (dollar + 1 < end && dollar[1] == '{') {
        struct ref r;
        const char *why = parse_ref(dollar, end, &r);
        if (why) {
            report_ref(c, why, dollar, end, line, col);
            *failed = true;
            return why == ref_unterminated ? NULL : (const char *)memchr(dollar, '}', (size_t)(end - dollar)) + 1;
        }
        if (!expand_ref(c, &r, out, line, col))
            *failed = true;
        return dollar + r.total;
    }
    /* "$$" is one literal '$'; a lone '$' stays as it is. */
    if (!add(c, out, "$", 1))
        *failed = true;
    return dollar + (dollar + 1 < end && dollar[1] == '$' ? 2 : 1);
}

char *cfg_env_expand(struct cfg_ctx *c, const char *s, size_t len, unsigned line, unsigned col, size_t *out_len)
{
    struct buf out = { 0 };
    const char *end = s + len, *p = s;
    bool failed = !add(c, &out, "", 0);
    /* A reported reference does not stop the scan: every unset variable of
     * the scalar gets its own error. Only running out of memory does. */
    while (!c->oom && p && p < end) {
        const char *dollar = memchr(p, '$', (size_t)(end - p));
        const char *stop = dollar ? dollar : end;
        if (!add(c, &out, p, (size_t)(stop - p)))
            break;
        p = dollar ? expand_dollar(c, dollar, end, &out, &failed, line, col) : end;
    }
    if (failed || c->oom) {
        free(out.p);
        return NULL;
    }
    *out_len = out.len;
    return out.p;
}
