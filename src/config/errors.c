/* Error collection. Checks report at the node they look at and carry on,
 * so one run lists every problem in the file, sorted into file order. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

/* Values quoted in messages come from the file or the environment: escape
 * control characters so that one error stays one line on a terminal. */
static char *escape_controls(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += (unsigned char)*p < 0x20 || *p == 0x7f ? 4 : 1;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const char *p = s; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '\n' || ch == '\t' || ch == '\r') {
            *o++ = '\\';
            *o++ = ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r';
        } else if (ch < 0x20 || ch == 0x7f) {
            o += sprintf(o, "\\x%02x", ch);
        } else {
            *o++ = (char)ch;
        }
    }
    *o = '\0';
    return out;
}

static void push_error(struct cfg_ctx *c, unsigned line, unsigned col, char *msg)
{
    if (!msg) {
        c->oom = true;
        return;
    }
    if (c->n_errs == c->cap_errs) {
        size_t cap = c->cap_errs ? c->cap_errs * 2 : 16;
        struct cfg_err *v = realloc(c->errs, cap * sizeof *v);
        if (!v) {
            free(msg);
            c->oom = true;
            return;
        }
        c->errs = v;
        c->cap_errs = cap;
    }
    c->errs[c->n_errs] = (struct cfg_err){ line, col, c->n_errs, msg };
    c->n_errs++;
}

static void verror(struct cfg_ctx *c, unsigned line, unsigned col, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void verror(struct cfg_ctx *c, unsigned line, unsigned col, const char *fmt, va_list ap)
{
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    push_error(c, line, col, escape_controls(buf));
}

void cfg_error_at(struct cfg_ctx *c, unsigned line, unsigned col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(c, line, col, fmt, ap);
    va_end(ap);
}

void cfg_error(struct cfg_ctx *c, const struct cfg_node *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(c, at ? at->line : 1, at ? at->col : 1, fmt, ap);
    va_end(ap);
}

void *cfg_calloc(struct cfg_ctx *c, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        c->oom = true;
    return p;
}

char *cfg_strdup(struct cfg_ctx *c, const char *s)
{
    char *p = strdup(s);
    if (!p)
        c->oom = true;
    return p;
}

static int cmp_err(const void *a, const void *b)
{
    const struct cfg_err *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static char *format_error(const char *file, const struct cfg_err *e)
{
    int n = snprintf(NULL, 0, "%s:%u:%u: %s", file, e->line, e->col, e->msg);
    char *s = n < 0 ? NULL : malloc((size_t)n + 1);
    if (s)
        snprintf(s, (size_t)n + 1, "%s:%u:%u: %s", file, e->line, e->col, e->msg);
    return s;
}

/* An allocation failure must still fail the load with something to print. */
static void ensure_oom_reported(struct cfg_ctx *c)
{
    if (c->oom && c->n_errs == 0) {
        char *msg = strdup("out of memory while loading the configuration");
        if (msg)
            push_error(c, 1, 1, msg);
    }
}

static void release_errors(struct cfg_ctx *c)
{
    for (size_t i = 0; i < c->n_errs; i++)
        free(c->errs[i].msg);
    free(c->errs);
    c->errs = NULL;
    c->n_errs = c->cap_errs = 0;
}

void cfg_errors_finish(struct cfg_ctx *c, struct sg_config_errors *out)
{
    ensure_oom_reported(c);
    if (!out || c->n_errs == 0) {
        release_errors(c);
        return;
    }
    qsort(c->errs, c->n_errs, sizeof *c->errs, cmp_err);
    out->msgs = calloc(c->n_errs, sizeof *out->msgs);
    if (out->msgs) {
        for (size_t i = 0; i < c->n_errs; i++) {
            char *s = format_error(c->file, &c->errs[i]);
            if (s)
                out->msgs[out->n++] = s;
        }
    }
    release_errors(c);
}

void sg_config_errors_free(struct sg_config_errors *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->n = 0;
}
