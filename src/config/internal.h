/* Internals of the configuration loader, shared by src/config/ only.
 *
 * Loading happens in three steps:
 *   yaml_tree.c  libyaml events -> a tree of cfg_node, every node keeping its
 *                start mark; ${ENV} is substituted in every scalar (env.c);
 *   compile.c    walks the tree section by section (listeners.c,
 *                upstreams.c, routes.c, match.c, mirror.c, header_edits.c),
 *                validating each field at its node with the typed getters of
 *                fields.c and the grammars of parse.c, filling the sg_config
 *                snapshot; every problem is collected (errors.c);
 *   load.c       glue: read the file, run both steps, hand back the snapshot
 *                (snapshot.c owns its lifetime) or the sorted
 *                "FILE:LINE:COLUMN: message" list.
 * Nothing here has global state: everything hangs off one cfg_ctx. */
#ifndef SG_CONFIG_INTERNAL_H
#define SG_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strangler/config.h"

enum cfg_kind { CFG_SCALAR = 0, CFG_MAP, CFG_SEQ };

struct cfg_node {
    enum cfg_kind kind;
    unsigned line, col; /* 1-based, as printed */
    bool null; /* plain ~, null or nothing: treated as "not given" */
    bool plain; /* scalar written without quotes */
    bool reported; /* its text could not be read (bad ${ENV}): stay silent */
    char *str; /* scalar text after ${ENV} substitution, NUL-free */
    size_t len;
    struct cfg_node **kids; /* SEQ: items; MAP: key, value, key, value... */
    size_t n_kids;
};

/* One collected problem, kept with its position so the final list can be
 * sorted into file order whatever order the checks ran in. */
struct cfg_err {
    unsigned line, col;
    size_t seq;
    char *msg;
};

struct cfg_ctx {
    const char *file; /* FILE in messages */
    struct sg_config *cfg; /* being filled; freed if any error is collected */
    struct cfg_err *errs;
    size_t n_errs, cap_errs;
    bool oom; /* an allocation failed: the load fails even if nothing else did */
    bool upstreams_ok; /* upstreams were readable, so references can be checked */
};

/* errors.c */
void cfg_error_at(struct cfg_ctx *c, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void cfg_error(struct cfg_ctx *c, const struct cfg_node *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void *cfg_calloc(struct cfg_ctx *c, size_t n, size_t size);
char *cfg_strdup(struct cfg_ctx *c, const char *s);
/* Moves the collected errors, sorted by position, into `out` (may be NULL). */
void cfg_errors_finish(struct cfg_ctx *c, struct sg_config_errors *out);

/* env.c: ${NAME} / ${NAME:-default} substitution; NULL after reporting. */
char *cfg_env_expand(struct cfg_ctx *c, const char *s, size_t len, unsigned line, unsigned col,
                     size_t *out_len);

/* yaml_tree.c */
struct cfg_node *cfg_yaml_parse(struct cfg_ctx *c, const char *buf, size_t len);
void cfg_node_free(struct cfg_node *n);

/* parse.c: the scalar grammars. NULL on success, else one of these
 * sentinels (compared by pointer) or, for addresses, a reason to print. */
extern const char cfg_bad_syntax[];
extern const char cfg_bad_overflow[];
const char *cfg_parse_uint(const char *s, uint64_t *out);
const char *cfg_parse_duration(const char *s, uint64_t *out_ms);
const char *cfg_parse_size(const char *s, uint64_t *out_bytes);
const char *cfg_parse_hostport(const char *s, struct sg_hostport *out);
bool cfg_valid_hostname(const char *s);
bool cfg_is_token(const char *s);

/* fields.c: typed access to mappings. A key whose value is null counts as
 * absent. Getters store the default when the key is absent and return
 * false when they reported an error (the output then holds the default). */
size_t cfg_map_len(const struct cfg_node *map);
const struct cfg_node *cfg_map_key_at(const struct cfg_node *map, size_t i);
const struct cfg_node *cfg_map_val_at(const struct cfg_node *map, size_t i);
const struct cfg_node *cfg_key(const struct cfg_node *map, const char *key);
const struct cfg_node *cfg_opt(const struct cfg_node *map, const char *key);
const struct cfg_node *cfg_req(struct cfg_ctx *c, const struct cfg_node *map, const char *key,
                               const char *where);
void cfg_check_keys(struct cfg_ctx *c, const struct cfg_node *map, const char *where,
                    const char *const *allowed);
bool cfg_want(struct cfg_ctx *c, const struct cfg_node *n, enum cfg_kind kind, const char *key);
bool cfg_want_scalar(struct cfg_ctx *c, const struct cfg_node *n, const char *key, const char *what);

bool cfg_get_str(struct cfg_ctx *c, const struct cfg_node *map, const char *key, const char *def,
                 char **out);
bool cfg_req_str(struct cfg_ctx *c, const struct cfg_node *map, const char *key, const char *where,
                 char **out);
bool cfg_get_bool(struct cfg_ctx *c, const struct cfg_node *map, const char *key, bool def, bool *out);
bool cfg_node_uint(struct cfg_ctx *c, const struct cfg_node *n, const char *key, uint64_t min,
                   uint64_t max, uint64_t *out);
bool cfg_get_u32(struct cfg_ctx *c, const struct cfg_node *map, const char *key, uint32_t def,
                 uint32_t min, uint32_t max, uint32_t *out);
/* zero_ok: `0` means "disabled" for this field rather than being an error. */
bool cfg_get_duration(struct cfg_ctx *c, const struct cfg_node *map, const char *key, uint64_t def,
                      bool zero_ok, uint64_t *out);
bool cfg_get_size(struct cfg_ctx *c, const struct cfg_node *map, const char *key, uint64_t def,
                  uint64_t min, uint64_t max, uint64_t *out);
/* names: NULL-terminated; *out is the index of the match. */
bool cfg_get_enum(struct cfg_ctx *c, const struct cfg_node *map, const char *key,
                  const char *const *names, int def, int *out);

/* Lists of strings. check() validates one item and reports at it. */
typedef bool (*cfg_item_check)(struct cfg_ctx *c, const struct cfg_node *item, const char *key);
enum { CFG_LIST_LOWER = 1, CFG_LIST_NONEMPTY = 2 };
bool cfg_get_str_list(struct cfg_ctx *c, const struct cfg_node *map, const char *key,
                      cfg_item_check check, unsigned flags, char ***out, size_t *n_out);
/* HOST:PORT or [IPv6]:PORT. Port 0 ("any free port") only makes sense
 * where the proxy binds: upstream endpoints pass allow_port0 = false. */
bool cfg_address(struct cfg_ctx *c, const struct cfg_node *n, const char *key, bool allow_port0,
                 struct sg_hostport *out);
bool cfg_check_path(struct cfg_ctx *c, const struct cfg_node *n, const char *key, bool allow_query);
bool cfg_check_token_item(struct cfg_ctx *c, const struct cfg_node *item, const char *key);
void cfg_lower(char *s);

/* compile.c and the section files: each fills its part of c->cfg. */
void cfg_compile(struct cfg_ctx *c, const struct cfg_node *root);
void cfg_compile_listeners(struct cfg_ctx *c, const struct cfg_node *root);
void cfg_compile_admin(struct cfg_ctx *c, const struct cfg_node *root);
void cfg_compile_upstreams(struct cfg_ctx *c, const struct cfg_node *root);
void cfg_compile_routes(struct cfg_ctx *c, const struct cfg_node *root);
void cfg_compile_match(struct cfg_ctx *c, const struct cfg_node *match, struct sg_route *r);
void cfg_compile_mirrors(struct cfg_ctx *c, const struct cfg_node *list, struct sg_route *r,
                         const char *route_name);
void cfg_compile_header_edits(struct cfg_ctx *c, const struct cfg_node *n, const char *key,
                              struct sg_header_edits *out);
/* Compiles a POSIX ERE (REG_EXTENDED|REG_NOSUB); reports regerror() at n. */
bool cfg_regcomp(struct cfg_ctx *c, const struct cfg_node *n, const char *key, regex_t *re);
struct sg_upstream *cfg_find_upstream(struct sg_config *cfg, const char *name);

/* snapshot.c */
void cfg_free(struct sg_config *cfg);

#endif
