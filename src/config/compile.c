/* The top level of the file, and the small blocks that need no file of
 * their own: workers, io_uring, access_log, limits, shutdown. */
#include <string.h>
#include <unistd.h>

#include "config/internal.h"

enum { MAX_WORKERS = 256 };

static const char *const top_keys[] = {
    "workers", "io_uring", "listeners", "admin", "upstreams", "routes", "access_log", "limits", "shutdown", NULL,
};

/* `auto` follows the CPUs online now; a container's CPU quota is not seen
 * here, which is why an explicit number is allowed. */
static void compile_workers(struct cfg_ctx *c, const struct cfg_node *root)
{
    struct sg_config *cfg = c->cfg;
    const struct cfg_node *n = cfg_opt(root, "workers");
    cfg->workers_auto = !n || (n->kind == CFG_SCALAR && strcmp(n->str, "auto") == 0);
    if (cfg->workers_auto) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->workers = cpus < 1 ? 1 : cpus > MAX_WORKERS ? MAX_WORKERS : (uint32_t)cpus;
        return;
    }
    if (!cfg_want_scalar(c, n, "workers", "auto or a number of threads"))
        return;
    uint64_t v;
    if (cfg_parse_uint(n->str, &v) != NULL || v < 1 || v > MAX_WORKERS) {
        cfg_error(c, n, "workers: expected auto or a number between 1 and %d, got \"%s\"", MAX_WORKERS, n->str);
        return;
    }
    cfg->workers = (uint32_t)v;
}

/* auto: the workers batch their socket reads and writes through io_uring
 * where the kernel allows it (src/net/io.c); off: one system call each. */
static void compile_io_uring(struct cfg_ctx *c, const struct cfg_node *root)
{
    static const char *const names[] = { "auto", "off", NULL };
    int v;
    cfg_get_enum(c, root, "io_uring", names, 0, &v);
    c->cfg->io_uring = v == 0;
}

static void compile_access_log(struct cfg_ctx *c, const struct cfg_node *root)
{
    static const char *const keys[] = { "enabled", NULL };
    const struct cfg_node *n = cfg_opt(root, "access_log");
    c->cfg->access_log = true;
    if (!n || !cfg_want(c, n, CFG_MAP, "access_log"))
        return;
    cfg_check_keys(c, n, "in access_log", keys);
    cfg_get_bool(c, n, "enabled", true, &c->cfg->access_log);
}

static void compile_limits(struct cfg_ctx *c, const struct cfg_node *root)
{
    static const char *const keys[] = {
        "max_header_bytes", "max_request_body_bytes", "header_timeout", "idle_timeout", "max_connections",
        "shadow_max_in_flight", "shadow_max_buffered_bytes", NULL,
    };
    struct sg_limits *l = &c->cfg->limits;
    const struct cfg_node *n = cfg_opt(root, "limits");
    if (n && cfg_want(c, n, CFG_MAP, "limits"))
        cfg_check_keys(c, n, "in limits", keys);
    else
        n = NULL; /* every default below */
    /* Below 1KiB not even a typical browser request head fits; above
     * 16MiB it is no longer a limit but a memory hazard. */
    cfg_get_size(c, n, "max_header_bytes", 64 * 1024, 1024, 16 * 1024 * 1024, &l->max_header_bytes);
    cfg_get_size(c, n, "max_request_body_bytes", 0, 0, UINT64_MAX, &l->max_request_body_bytes);
    cfg_get_duration(c, n, "header_timeout", 10 * 1000, false, &l->header_timeout_ms);
    cfg_get_duration(c, n, "idle_timeout", 60 * 1000, false, &l->idle_timeout_ms);
    cfg_get_u32(c, n, "max_connections", 0, 0, UINT32_MAX, &l->max_connections);
    /* Per-worker budgets of the mirror: shadows beyond them are dropped
     * and counted, never queued behind the client. */
    cfg_get_u32(c, n, "shadow_max_in_flight", 1024, 1, UINT32_MAX, &l->shadow_max_in_flight);
    cfg_get_size(c, n, "shadow_max_buffered_bytes", 64ull * 1024 * 1024, 0, UINT64_MAX,
                 &l->shadow_max_buffered_bytes);
}

static void compile_shutdown(struct cfg_ctx *c, const struct cfg_node *root)
{
    static const char *const keys[] = { "drain_timeout", NULL };
    const struct cfg_node *n = cfg_opt(root, "shutdown");
    if (n && cfg_want(c, n, CFG_MAP, "shutdown"))
        cfg_check_keys(c, n, "in shutdown", keys);
    else
        n = NULL;
    cfg_get_duration(c, n, "drain_timeout", 30 * 1000, true, &c->cfg->drain_timeout_ms);
}

void cfg_compile(struct cfg_ctx *c, const struct cfg_node *root)
{
    if (root->kind != CFG_MAP) {
        if (root->null)
            cfg_error(c, root, "the configuration is empty (it needs at least listeners, upstreams and routes)");
        else if (!root->reported)
            cfg_error(c, root, "the top level must be a mapping (workers, listeners, admin, upstreams, routes, ...)");
        return;
    }
    cfg_check_keys(c, root, "at top level", top_keys);
    compile_workers(c, root);
    compile_io_uring(c, root);
    cfg_compile_listeners(c, root);
    cfg_compile_admin(c, root);
    /* Upstreams first whatever the file's order: routes refer to them. */
    cfg_compile_upstreams(c, root);
    cfg_compile_routes(c, root);
    compile_access_log(c, root);
    compile_limits(c, root);
    compile_shutdown(c, root);
}
