/* listeners and admin: where the proxy accepts connections. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

static const char *const listener_keys[] = { "name", "address", "tls", NULL };
static const char *const tls_keys[] = { "certificate", "private_key", "alpn", "client_ca", NULL };

static bool alpn_check(struct cfg_ctx *c, const struct cfg_node *item, const char *key)
{
    (void)key;
    if (strcmp(item->str, "h2") == 0 || strcmp(item->str, "http/1.1") == 0)
        return true;
    cfg_error(c, item, "invalid ALPN protocol \"%s\" (expected h2, http/1.1)", item->str);
    return false;
}

static bool default_alpn(struct cfg_ctx *c, struct sg_tls_server *t)
{
    t->alpn = cfg_calloc(c, 2, sizeof *t->alpn);
    if (!t->alpn)
        return false;
    t->n_alpn = 2;
    t->alpn[0] = cfg_strdup(c, "h2");
    t->alpn[1] = cfg_strdup(c, "http/1.1");
    return t->alpn[0] && t->alpn[1];
}

static void compile_listener_tls(struct cfg_ctx *c, const struct cfg_node *n, struct sg_listener *l)
{
    if (!cfg_want(c, n, CFG_MAP, "tls"))
        return;
    struct sg_tls_server *t = l->tls = cfg_calloc(c, 1, sizeof *l->tls);
    if (!t)
        return;
    cfg_check_keys(c, n, "in listener tls", tls_keys);
    cfg_req_str(c, n, "certificate", "in listener tls", &t->certificate);
    cfg_req_str(c, n, "private_key", "in listener tls", &t->private_key);
    cfg_get_str(c, n, "client_ca", NULL, &t->client_ca);
    if (!cfg_opt(n, "alpn")) {
        default_alpn(c, t);
        return;
    }
    if (!cfg_get_str_list(c, n, "alpn", alpn_check, CFG_LIST_NONEMPTY, &t->alpn, &t->n_alpn))
        return;
    if (t->n_alpn == 2 && strcmp(t->alpn[0], t->alpn[1]) == 0)
        cfg_error(c, cfg_opt(n, "alpn"), "alpn: \"%s\" is listed twice", t->alpn[0]);
    else if (t->n_alpn > 2)
        cfg_error(c, cfg_opt(n, "alpn"), "alpn: at most h2 and http/1.1, each once");
}

/* Listener names end up in --ready-file lines (name=HOST:PORT) and metric
 * labels, so they must be one printable word; "admin" is the admin port's
 * line in that file. */
static bool listener_name_ok(struct cfg_ctx *c, const struct cfg_node *n)
{
    for (const unsigned char *p = (const unsigned char *)n->str; *p; p++) {
        if (*p <= ' ' || *p == '=' || *p == 0x7f) {
            cfg_error(c, n, "listener name \"%s\": no spaces, control characters or '='", n->str);
            return false;
        }
    }
    if (strcmp(n->str, "admin") == 0) {
        cfg_error(c, n, "listener name \"admin\" is reserved for the admin port");
        return false;
    }
    return true;
}

static void compile_listener_name(struct cfg_ctx *c, const struct cfg_node *list, size_t i)
{
    const struct cfg_node *item = list->kids[i];
    struct sg_listener *l = &c->cfg->listeners[i];
    if (!cfg_req_str(c, item, "name", "in listener", &l->name))
        return;
    const struct cfg_node *n = cfg_opt(item, "name");
    if (!listener_name_ok(c, n))
        return;
    for (size_t j = 0; j < i; j++) {
        const struct cfg_node *other = cfg_opt(list->kids[j], "name");
        if (c->cfg->listeners[j].name && strcmp(c->cfg->listeners[j].name, l->name) == 0) {
            cfg_error(c, n, "duplicate listener name \"%s\" (first at line %u)", l->name, other->line);
            return;
        }
    }
}

static bool same_address(const struct sg_hostport *a, const struct sg_hostport *b)
{
    return a->host && b->host && a->port != 0 && a->port == b->port && strcmp(a->host, b->host) == 0;
}

static void compile_listener(struct cfg_ctx *c, const struct cfg_node *list, size_t i)
{
    const struct cfg_node *item = list->kids[i];
    struct sg_listener *l = &c->cfg->listeners[i];
    l->mark = (struct sg_mark){ item->line, item->col };
    if (!cfg_want(c, item, CFG_MAP, "listener"))
        return;
    cfg_check_keys(c, item, "in listener", listener_keys);
    compile_listener_name(c, list, i);
    const struct cfg_node *addr = cfg_req(c, item, "address", "in listener");
    if (addr && cfg_address(c, addr, "address", true, &l->addr)) {
        for (size_t j = 0; j < i; j++) {
            if (same_address(&c->cfg->listeners[j].addr, &l->addr)) {
                cfg_error(c, addr, "address \"%s\" is already used by listener \"%s\"", addr->str,
                          c->cfg->listeners[j].name ? c->cfg->listeners[j].name : "?");
                break;
            }
        }
    }
    const struct cfg_node *tls = cfg_opt(item, "tls");
    if (tls) {
        l->tls_mark = (struct sg_mark){ tls->line, tls->col };
        compile_listener_tls(c, tls, l);
    }
}

void cfg_compile_listeners(struct cfg_ctx *c, const struct cfg_node *root)
{
    const struct cfg_node *list = cfg_req(c, root, "listeners", "at top level");
    if (!list || !cfg_want(c, list, CFG_SEQ, "listeners"))
        return;
    c->cfg->listeners_mark = (struct sg_mark){ list->line, list->col };
    if (list->n_kids == 0) {
        cfg_error(c, list, "listeners: at least one listener is required");
        return;
    }
    c->cfg->listeners = cfg_calloc(c, list->n_kids, sizeof *c->cfg->listeners);
    if (!c->cfg->listeners)
        return;
    c->cfg->n_listeners = list->n_kids;
    for (size_t i = 0; i < list->n_kids; i++)
        compile_listener(c, list, i);
}

void cfg_compile_admin(struct cfg_ctx *c, const struct cfg_node *root)
{
    static const char *const keys[] = { "address", NULL };
    struct sg_config *cfg = c->cfg;
    const struct cfg_node *n = cfg_opt(root, "admin");
    const struct cfg_node *addr = NULL;
    if (n && cfg_want(c, n, CFG_MAP, "admin")) {
        cfg_check_keys(c, n, "in admin", keys);
        addr = cfg_opt(n, "address");
    }
    if (!addr || !cfg_address(c, addr, "address", true, &cfg->admin)) {
        cfg->admin.host = cfg_strdup(c, "127.0.0.1");
        cfg->admin.port = 9901;
        return;
    }
    for (size_t j = 0; j < cfg->n_listeners; j++) {
        if (same_address(&cfg->listeners[j].addr, &cfg->admin)) {
            cfg_error(c, addr, "address \"%s\" is already used by listener \"%s\"", addr->str,
                      cfg->listeners[j].name ? cfg->listeners[j].name : "?");
            break;
        }
    }
}
