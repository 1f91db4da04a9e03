/* Entry points: file or buffer -> node tree -> snapshot, or every error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

/* A configuration is a few kilobytes; anything this large is a mistake
 * (wrong file), not a configuration worth parsing. */
enum { MAX_FILE_BYTES = 16 * 1024 * 1024 };

static struct sg_config *new_snapshot(struct cfg_ctx *c, const char *name)
{
    struct sg_config *cfg = cfg_calloc(c, 1, sizeof *cfg);
    if (!cfg)
        return NULL;
    atomic_init(&cfg->refs, 1);
    cfg->path = cfg_strdup(c, name);
    return cfg;
}

static struct sg_config *finish(struct cfg_ctx *c, struct sg_config_errors *errs)
{
    struct sg_config *cfg = c->cfg;
    if (c->n_errs > 0 || c->oom) {
        cfg_free(cfg);
        cfg = NULL;
    }
    cfg_errors_finish(c, errs);
    return cfg;
}

static void reset_errors(struct sg_config_errors *errs)
{
    if (errs) {
        errs->msgs = NULL;
        errs->n = 0;
    }
}

struct sg_config *sg_config_load_buffer(const char *name, const char *yaml, size_t len,
                                        struct sg_config_errors *errs)
{
    struct cfg_ctx c = { .file = name ? name : "<config>" };
    reset_errors(errs);
    c.cfg = new_snapshot(&c, c.file);
    if (c.cfg) {
        struct cfg_node *root = cfg_yaml_parse(&c, yaml ? yaml : "", yaml ? len : 0);
        if (root)
            cfg_compile(&c, root);
        cfg_node_free(root);
    }
    return finish(&c, errs);
}

/* Reads the whole file: libyaml could read the FILE* itself, but reader
 * errors only carry a byte offset, and positions need the bytes. */
static char *read_stream(FILE *f, size_t *len, const char **why)
{
    size_t cap = 16 * 1024, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap > MAX_FILE_BYTES) {
            *why = "the file is larger than 16 MiB";
            free(buf);
            return NULL;
        }
        char *bigger = realloc(buf, cap * 2);
        if (!bigger)
            free(buf);
        buf = bigger;
        cap *= 2;
    }
    if (!buf) {
        *why = "out of memory";
        return NULL;
    }
    if (ferror(f)) {
        *why = strerror(errno);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static char *read_file(const char *path, size_t *len, const char **why)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *why = strerror(errno);
        return NULL;
    }
    char *buf = read_stream(f, len, why);
    fclose(f);
    return buf;
}

struct sg_config *sg_config_load(const char *path, struct sg_config_errors *errs)
{
    size_t len = 0;
    const char *why = NULL;
    char *buf = path ? read_file(path, &len, &why) : NULL;
    if (!buf) {
        struct cfg_ctx c = { .file = path ? path : "<config>" };
        reset_errors(errs);
        cfg_error_at(&c, 1, 1, "cannot read the configuration file: %s", why ? why : "no path given");
        return finish(&c, errs);
    }
    struct sg_config *cfg = sg_config_load_buffer(path, buf, len, errs);
    free(buf);
    return cfg;
}
