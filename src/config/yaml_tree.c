/* libyaml events -> a tree of cfg_node with marks.
 *
 * libyaml's own document loader (yaml_document_t) accepts duplicate keys
 * silently, resolves no merge keys and has no place for the ${ENV} step, so
 * the tree is built here from the event stream instead. Every node keeps
 * the mark where it starts, so that any later check can say
 * FILE:LINE:COLUMN. Anchors and aliases are supported by copying the
 * anchored node (the file is small and the tree stays a tree); YAML merge
 * keys (`<<: *defaults`) are applied with explicit keys taking precedence. */
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "config/internal.h"

/* Nesting and node-count bounds: the contract nests six levels deep, and
 * a "billion laughs" alias bomb must fail rather than eat the machine. */
enum { MAX_DEPTH = 64, MAX_NODES = 1000000 };

struct anchor {
    char *name;
    const struct cfg_node *node;
};

struct builder {
    struct cfg_ctx *c;
    yaml_parser_t parser;
    const char *buf;
    size_t len;
    struct anchor *anchors;
    size_t n_anchors, cap_anchors;
    /* Pairs left out of a mapping (duplicate keys, merge keys) may still be
     * the target of an anchor, so they live until the tree is complete. */
    struct cfg_node *discarded;
    size_t n_nodes;
    bool stop; /* a syntax error or limit: the tree is abandoned */
};

void cfg_node_free(struct cfg_node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n_kids; i++)
        cfg_node_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    free(n);
}

static struct cfg_node *new_node(struct builder *b, enum cfg_kind kind, unsigned line, unsigned col)
{
    if (++b->n_nodes > MAX_NODES) {
        cfg_error_at(b->c, line, col, "the document has more than %d nodes (alias expansion too large)",
                     MAX_NODES);
        b->stop = true;
        return NULL;
    }
    struct cfg_node *n = cfg_calloc(b->c, 1, sizeof *n);
    if (!n) {
        b->stop = true;
        return NULL;
    }
    n->kind = kind;
    n->line = line;
    n->col = col;
    return n;
}

static bool push_kid(struct builder *b, struct cfg_node *parent, struct cfg_node *kid)
{
    /* Grow in powers of two: n_kids is the only size kept. */
    size_t n = parent->n_kids;
    if ((n & (n - 1)) == 0) {
        struct cfg_node **v = realloc(parent->kids, (n ? n * 2 : 1) * sizeof *v);
        if (!v) {
            b->c->oom = true;
            b->stop = true;
            return false;
        }
        parent->kids = v;
    }
    parent->kids[parent->n_kids++] = kid;
    return true;
}

static void discard(struct builder *b, struct cfg_node *n)
{
    if (!push_kid(b, b->discarded, n))
        cfg_node_free(n);
}

static void report_parser_error(struct builder *b)
{
    const yaml_parser_t *p = &b->parser;
    if (p->error == YAML_MEMORY_ERROR) {
        b->c->oom = true;
        return;
    }
    unsigned line = (unsigned)p->problem_mark.line + 1, col = (unsigned)p->problem_mark.column + 1;
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors (bad UTF-8, control characters) carry only an
         * offset; count lines and characters up to it. */
        line = 1;
        col = 1;
        for (size_t i = 0; i < p->problem_offset && i < b->len; i++) {
            unsigned char ch = (unsigned char)b->buf[i];
            if (ch == '\n') {
                line++;
                col = 1;
            } else if ((ch & 0xc0) != 0x80) {
                col++;
            }
        }
    }
    const char *problem = p->problem ? p->problem : "cannot parse";
    if (p->context)
        cfg_error_at(b->c, line, col, "YAML syntax error: %s (%s at line %u, column %u)", problem, p->context,
                     (unsigned)p->context_mark.line + 1, (unsigned)p->context_mark.column + 1);
    else
        cfg_error_at(b->c, line, col, "YAML syntax error: %s", problem);
}

static bool next_event(struct builder *b, yaml_event_t *ev)
{
    if (b->stop)
        return false;
    if (yaml_parser_parse(&b->parser, ev))
        return true;
    report_parser_error(b);
    b->stop = true;
    return false;
}

static bool add_anchor(struct builder *b, const yaml_char_t *name, const struct cfg_node *n)
{
    if (!name)
        return true;
    if (b->n_anchors == b->cap_anchors) {
        size_t cap = b->cap_anchors ? b->cap_anchors * 2 : 8;
        struct anchor *v = realloc(b->anchors, cap * sizeof *v);
        if (!v)
            return false;
        b->anchors = v;
        b->cap_anchors = cap;
    }
    char *copy = strdup((const char *)name);
    if (!copy)
        return false;
    b->anchors[b->n_anchors++] = (struct anchor){ copy, n };
    return true;
}

static struct cfg_node *copy_node(struct builder *b, const struct cfg_node *src)
{
    struct cfg_node *n = new_node(b, src->kind, src->line, src->col);
    if (!n)
        return NULL;
    n->null = src->null;
    n->plain = src->plain;
    n->reported = src->reported;
    n->len = src->len;
    if (src->str && !(n->str = cfg_strdup(b->c, src->str)))
        goto fail;
    for (size_t i = 0; i < src->n_kids; i++) {
        struct cfg_node *kid = copy_node(b, src->kids[i]);
        if (!kid || !push_kid(b, n, kid)) {
            cfg_node_free(kid);
            goto fail;
        }
    }
    return n;
fail:
    b->stop = true;
    cfg_node_free(n);
    return NULL;
}

static bool is_null_text(const char *s)
{
    return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

static struct cfg_node *build_scalar(struct builder *b, const yaml_event_t *ev)
{
    struct cfg_node *n = new_node(b, CFG_SCALAR, (unsigned)ev->start_mark.line + 1,
                                  (unsigned)ev->start_mark.column + 1);
    if (!n)
        return NULL;
    const char *raw = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    /* Null is decided on the text as written: "${EMPTY}" is an empty
     * string, not an omitted value. */
    n->null = n->plain && memchr(raw, '\0', len) == NULL && is_null_text(raw);
    if (memchr(raw, '\0', len)) {
        cfg_error(b->c, n, "the value contains a NUL character");
        n->reported = true;
    } else {
        n->str = cfg_env_expand(b->c, raw, len, n->line, n->col, &n->len);
        n->reported = n->str == NULL;
    }
    if (!n->str && !(n->str = cfg_strdup(b->c, "")))
        goto fail;
    if (b->c->oom || !add_anchor(b, ev->data.scalar.anchor, n))
        goto fail;
    return n;
fail:
    b->c->oom = true;
    b->stop = true;
    cfg_node_free(n);
    return NULL;
}

static struct cfg_node *build_alias(struct builder *b, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    for (size_t i = b->n_anchors; i-- > 0;)
        if (strcmp(b->anchors[i].name, name) == 0)
            return copy_node(b, b->anchors[i].node);
    struct cfg_node *n = new_node(b, CFG_SCALAR, (unsigned)ev->start_mark.line + 1,
                                  (unsigned)ev->start_mark.column + 1);
    if (!n)
        return NULL;
    cfg_error(b->c, n, "unknown anchor \"%s\" (an alias *%s needs an earlier &%s)", name, name, name);
    n->reported = true;
    if (!(n->str = cfg_strdup(b->c, ""))) {
        b->stop = true;
        cfg_node_free(n);
        return NULL;
    }
    return n;
}

static struct cfg_node *parse_node(struct builder *b, yaml_event_t *ev, unsigned depth);

static bool read_seq(struct builder *b, struct cfg_node *n, unsigned depth)
{
    for (;;) {
        yaml_event_t e;
        if (!next_event(b, &e))
            return false;
        if (e.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&e);
            return true;
        }
        struct cfg_node *kid = parse_node(b, &e, depth + 1);
        if (!kid || !push_kid(b, n, kid)) {
            cfg_node_free(kid);
            return false;
        }
    }
}

static const struct cfg_node *find_key(const struct cfg_node *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->n_kids; i += 2)
        if (strcmp(map->kids[i]->str, key) == 0)
            return map->kids[i];
    return NULL;
}

/* Takes ownership of key and val. False only when the build must stop. */
static bool add_pair(struct builder *b, struct cfg_node *map, struct cfg_node *key, struct cfg_node *val)
{
    const struct cfg_node *prev = NULL;
    if (key->kind != CFG_SCALAR) {
        cfg_error(b->c, key, "mapping keys must be plain strings, not %s",
                  key->kind == CFG_MAP ? "mappings" : "lists");
    } else if (key->null && !key->reported) {
        cfg_error(b->c, key, "empty mapping key");
    } else if (!key->reported && (prev = find_key(map, key->str)) != NULL) {
        cfg_error(b->c, key, "duplicate key \"%s\" (first at line %u)", key->str, prev->line);
    } else if (!key->reported) {
        if (!push_kid(b, map, key)) {
            cfg_node_free(key);
            cfg_node_free(val);
            return false;
        }
        if (push_kid(b, map, val))
            return true;
        map->n_kids--;
        cfg_node_free(key);
        cfg_node_free(val);
        return false;
    }
    discard(b, key);
    discard(b, val);
    return !b->stop;
}

/* Appends copies of the pairs of `src` whose keys `map` does not have. */
static bool merge_from(struct builder *b, struct cfg_node *map, const struct cfg_node *src)
{
    for (size_t i = 0; i + 1 < src->n_kids; i += 2) {
        if (find_key(map, src->kids[i]->str))
            continue;
        struct cfg_node *k = copy_node(b, src->kids[i]);
        struct cfg_node *v = k ? copy_node(b, src->kids[i + 1]) : NULL;
        if (!v) {
            cfg_node_free(k);
            return false;
        }
        if (!add_pair(b, map, k, v))
            return false;
    }
    return true;
}

/* `<<: *base` or `<<: [*a, *b]`: explicit keys win, then earlier sources. */
static bool apply_merge(struct builder *b, struct cfg_node *map)
{
    size_t at = 0;
    while (at + 1 < map->n_kids && !(map->kids[at]->plain && strcmp(map->kids[at]->str, "<<") == 0))
        at += 2;
    if (at + 1 >= map->n_kids)
        return true;
    struct cfg_node *key = map->kids[at], *val = map->kids[at + 1];
    memmove(&map->kids[at], &map->kids[at + 2], (map->n_kids - at - 2) * sizeof *map->kids);
    map->n_kids -= 2;
    bool ok = true;
    size_t n_src = val->kind == CFG_SEQ ? val->n_kids : 1;
    for (size_t i = 0; ok && i < n_src; i++) {
        const struct cfg_node *src = val->kind == CFG_SEQ ? val->kids[i] : val;
        if (src->kind != CFG_MAP)
            cfg_error(b->c, src, "the merge key << needs a mapping or a list of mappings");
        else
            ok = merge_from(b, map, src);
    }
    discard(b, key);
    discard(b, val);
    return ok && !b->stop;
}

static bool read_map(struct builder *b, struct cfg_node *n, unsigned depth)
{
    for (;;) {
        yaml_event_t e;
        if (!next_event(b, &e))
            return false;
        if (e.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&e);
            return apply_merge(b, n);
        }
        struct cfg_node *key = parse_node(b, &e, depth + 1);
        if (!key)
            return false;
        struct cfg_node *val = next_event(b, &e) ? parse_node(b, &e, depth + 1) : NULL;
        if (!val) {
            cfg_node_free(key);
            return false;
        }
        if (!add_pair(b, n, key, val))
            return false;
    }
}

static struct cfg_node *build_collection(struct builder *b, const yaml_event_t *ev, unsigned depth)
{
    bool is_map = ev->type == YAML_MAPPING_START_EVENT;
    const yaml_char_t *anchor = is_map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    struct cfg_node *n = new_node(b, is_map ? CFG_MAP : CFG_SEQ, (unsigned)ev->start_mark.line + 1,
                                  (unsigned)ev->start_mark.column + 1);
    if (!n)
        return NULL;
    if (depth >= MAX_DEPTH) {
        cfg_error(b->c, n, "nesting deeper than %d levels", MAX_DEPTH);
        b->stop = true;
    }
    bool ok = !b->stop && (is_map ? read_map(b, n, depth) : read_seq(b, n, depth));
    /* Registered once complete, so that `&a [*a]` is an unknown anchor
     * rather than a cycle. */
    if (ok && !add_anchor(b, anchor, n)) {
        b->c->oom = true;
        ok = false;
    }
    if (!ok) {
        b->stop = true;
        cfg_node_free(n);
        return NULL;
    }
    return n;
}

/* Consumes ev. */
static struct cfg_node *parse_node(struct builder *b, yaml_event_t *ev, unsigned depth)
{
    struct cfg_node *n = NULL;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        n = build_scalar(b, ev);
        break;
    case YAML_ALIAS_EVENT:
        n = build_alias(b, ev);
        break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        n = build_collection(b, ev, depth);
        break;
    default:
        cfg_error_at(b->c, (unsigned)ev->start_mark.line + 1, (unsigned)ev->start_mark.column + 1,
                     "YAML syntax error: unexpected event %d", (int)ev->type);
        b->stop = true;
        break;
    }
    yaml_event_delete(ev);
    return n;
}

/* One document: STREAM-START DOCUMENT-START node DOCUMENT-END STREAM-END. */
static struct cfg_node *read_stream(struct builder *b)
{
    yaml_event_t e;
    if (!next_event(b, &e))
        return NULL;
    yaml_event_delete(&e); /* STREAM-START */
    if (!next_event(b, &e))
        return NULL;
    if (e.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&e);
        cfg_error_at(b->c, 1, 1, "the configuration is empty (it needs at least listeners, upstreams and routes)");
        return NULL;
    }
    yaml_event_delete(&e); /* DOCUMENT-START */
    struct cfg_node *root = next_event(b, &e) ? parse_node(b, &e, 0) : NULL;
    if (!root)
        return NULL;
    if (next_event(b, &e)) {
        yaml_event_delete(&e); /* DOCUMENT-END */
        if (next_event(b, &e)) {
            if (e.type == YAML_DOCUMENT_START_EVENT)
                cfg_error_at(b->c, (unsigned)e.start_mark.line + 1, (unsigned)e.start_mark.column + 1,
                             "only one YAML document is allowed in the configuration file");
            yaml_event_delete(&e);
        }
    }
    return root;
}

struct cfg_node *cfg_yaml_parse(struct cfg_ctx *c, const char *buf, size_t len)
{
    struct builder b = { .c = c, .buf = buf, .len = len };
    b.discarded = cfg_calloc(c, 1, sizeof *b.discarded);
    if (!b.discarded)
        return NULL;
    b.discarded->kind = CFG_SEQ;
    if (!yaml_parser_initialize(&b.parser)) {
        c->oom = true;
        free(b.discarded);
        return NULL;
    }
    yaml_parser_set_input_string(&b.parser, (const unsigned char *)buf, len);
    struct cfg_node *root = read_stream(&b);
    yaml_parser_delete(&b.parser);
    for (size_t i = 0; i < b.n_anchors; i++)
        free(b.anchors[i].name);
    free(b.anchors);
    cfg_node_free(b.discarded);
    return root;
}
