/* request_headers / response_headers: {set: {name: value}, remove: [name]}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

/* Names the proxy itself controls (see sg_header_name_reserved()): the
 * framing and connection fields of RFC 9110 section 7.6.1 and RFC 9112
 * section 6, which the proxy computes itself and which, if an edit could
 * change them, could make the two sides of the proxy disagree on where a
 * message ends; Host, forwarded unchanged by design; Expect, answered by
 * the proxy; and x-request-id, which ties the primary, its shadows and the
 * access log together. Pseudo-headers (":path") are not tokens and fail
 * earlier. */
static const char *managed_header(const char *lower_name)
{
    static const char *const framing[] = {
        "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "content-length", NULL,
    };
    for (size_t i = 0; framing[i]; i++)
        if (strcmp(framing[i], lower_name) == 0)
            return "the proxy manages it";
    if (strcmp(lower_name, "host") == 0)
        return "Host is forwarded unchanged";
    if (strcmp(lower_name, "expect") == 0)
        return "the proxy answers Expect itself";
    if (strcmp(lower_name, "x-request-id") == 0)
        return "the proxy keeps or generates it";
    return NULL;
}

/* Validates a header name node and returns it lower-cased, or NULL. */
static char *edit_name(struct cfg_ctx *c, const struct cfg_node *n, const char *key)
{
    if (!cfg_want_scalar(c, n, key, "a header name") || !cfg_check_token_item(c, n, key))
        return NULL;
    char *name = cfg_strdup(c, n->str);
    if (!name)
        return NULL;
    cfg_lower(name);
    const char *why = managed_header(name);
    if (why) {
        cfg_error(c, n, "%s: header \"%s\" cannot be changed (%s)", key, name, why);
        free(name);
        return NULL;
    }
    return name;
}

static void compile_set(struct cfg_ctx *c, const struct cfg_node *n, const char *key,
                        struct sg_header_edits *out)
{
    if (!cfg_want(c, n, CFG_MAP, key) || cfg_map_len(n) == 0)
        return;
    out->set = cfg_calloc(c, cfg_map_len(n), sizeof *out->set);
    if (!out->set)
        return;
    out->n_set = cfg_map_len(n);
    for (size_t i = 0; i < out->n_set; i++) {
        const struct cfg_node *k = cfg_map_key_at(n, i), *v = cfg_map_val_at(n, i);
        struct sg_kv *kv = &out->set[i];
        if (!(kv->name = edit_name(c, k, key)))
            continue;
        for (size_t j = 0; j < i; j++)
            if (out->set[j].name && strcmp(out->set[j].name, kv->name) == 0)
                cfg_error(c, k, "%s: header \"%s\" is set twice (names are case-insensitive)", key, kv->name);
        /* An empty value is allowed (a present, empty field); a null is a
         * forgotten value. CR/LF would let the file inject header lines. */
        if (!cfg_want_scalar(c, v, kv->name, "a header value"))
            continue;
        if (strpbrk(v->str, "\r\n")) {
            cfg_error(c, v, "%s: the value of \"%s\" must not contain CR or LF", key, kv->name);
            continue;
        }
        kv->value = cfg_strdup(c, v->str);
    }
}

static void compile_remove(struct cfg_ctx *c, const struct cfg_node *n, const char *key,
                           struct sg_header_edits *out)
{
    if (!cfg_want(c, n, CFG_SEQ, key) || n->n_kids == 0)
        return;
    out->remove = cfg_calloc(c, n->n_kids, sizeof *out->remove);
    if (!out->remove)
        return;
    out->n_remove = n->n_kids;
    for (size_t i = 0; i < n->n_kids; i++)
        out->remove[i] = edit_name(c, n->kids[i], key);
}

void cfg_compile_header_edits(struct cfg_ctx *c, const struct cfg_node *n, const char *key,
                              struct sg_header_edits *out)
{
    static const char *const keys[] = { "set", "remove", NULL };
    if (!n || !cfg_want(c, n, CFG_MAP, key))
        return;
    char where[64];
    snprintf(where, sizeof where, "in %s", key);
    cfg_check_keys(c, n, where, keys);
    const struct cfg_node *set = cfg_opt(n, "set");
    if (set)
        compile_set(c, set, key, out);
    const struct cfg_node *remove = cfg_opt(n, "remove");
    if (remove)
        compile_remove(c, remove, key, out);
}
