/* The compiled configuration: an immutable, reference-counted snapshot.
 *
 * sg_config_load() parses the YAML contract (../shared/spec/config.md),
 * substitutes ${ENV}, validates everything and compiles what the request
 * path needs (regexes, cumulative split weights, mirror thresholds). Once
 * returned, a snapshot is never modified; workers share it read-only and a
 * reload swaps the pointer. Requests keep the snapshot they started with. */
#ifndef STRANGLER_CONFIG_H
#define STRANGLER_CONFIG_H

#include <regex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sg_protocol { SG_PROTO_HTTP1 = 0, SG_PROTO_H2C, SG_PROTO_H2 };
enum sg_balance { SG_BALANCE_ROUND_ROBIN = 0, SG_BALANCE_LEAST_REQUEST, SG_BALANCE_RANDOM };

/* HOST:PORT or [IPv6]:PORT. `host` has no brackets. Port 0 = any free port
 * (listeners and admin only). */
struct sg_hostport {
    char *host;
    uint16_t port;
};

/* Where a node stood in the file (1-based), for errors found after
 * loading (a reload that cannot be applied, a TLS file that fails). */
struct sg_mark {
    unsigned line, col;
};

struct sg_tls_server {
    char *certificate;
    char *private_key;
    char *client_ca; /* NULL: no client certificates asked for */
    char **alpn; /* default {"h2", "http/1.1"} */
    size_t n_alpn;
};

struct sg_listener {
    char *name;
    struct sg_hostport addr;
    struct sg_tls_server *tls; /* NULL: plaintext (HTTP/1.1 + h2c) */
    struct sg_mark mark; /* the listener's entry */
    struct sg_mark tls_mark; /* its tls block */
};

struct sg_upstream_tls {
    char *ca; /* NULL: system default store */
    char *sni; /* NULL: endpoint host */
    bool verify; /* default true */
    char *certificate; /* client certificate, optional */
    char *private_key;
};

struct sg_health_check {
    char *path;
    uint64_t interval_ms; /* default 5s */
    uint64_t timeout_ms; /* default 1s */
    uint32_t healthy_threshold; /* default 2 */
    uint32_t unhealthy_threshold; /* default 3 */
};

struct sg_outlier_detection {
    uint32_t consecutive_failures; /* default 5 */
    uint64_t ejection_time_ms; /* default 30s */
};

struct sg_upstream {
    char *name;
    size_t index; /* position in sg_config.upstreams */
    struct sg_hostport *endpoints;
    size_t n_endpoints;
    enum sg_protocol protocol; /* default http1 */
    struct sg_upstream_tls *tls; /* NULL unless given (or protocol h2: defaults) */
    uint64_t connect_timeout_ms; /* default 1s */
    uint64_t idle_timeout_ms; /* default 60s */
    uint64_t dns_refresh_ms; /* default 30s; key `dns_refresh` */
    uint32_t max_connections; /* default 1024; across all workers */
    enum sg_balance balance;
    struct sg_health_check *health_check; /* NULL: none */
    struct sg_outlier_detection *outlier_detection; /* NULL: none */
    struct sg_mark mark; /* the upstream's entry, for errors found after loading */
};

enum sg_header_match_kind { SG_HM_EXACT = 0, SG_HM_PREFIX, SG_HM_REGEX, SG_HM_PRESENT };

struct sg_header_match {
    char *name; /* lower-cased */
    enum sg_header_match_kind kind;
    char *value; /* EXACT/PREFIX/REGEX source */
    regex_t re; /* REGEX: compiled REG_EXTENDED|REG_NOSUB */
    bool present; /* PRESENT: true = must be present, false = must be absent */
};

struct sg_destination {
    struct sg_upstream *upstream;
    uint32_t weight; /* default 1 when omitted */
    uint64_t cum_weight; /* sum of weights up to and including this one */
};

enum sg_compare_body { SG_CMP_BODY_BYTES = 0, SG_CMP_BODY_NONE, SG_CMP_BODY_JSON };

/* A JSON Pointer split into its decoded segments (~1 -> '/', ~0 -> '~');
 * a segment "*" matches any one key or index (compare.h). */
struct sg_json_pointer {
    char **seg;
    size_t n;
};

struct sg_compare {
    bool status; /* default true */
    char **headers; /* lower-cased */
    size_t n_headers;
    enum sg_compare_body body; /* default bytes */
    char **ignore; /* JSON pointers, validated: "" or starting with '/' */
    size_t n_ignore;
    struct sg_json_pointer *ignore_ptrs; /* the same, split into segments (n_ignore) */
    uint64_t max_body_bytes; /* default 1MiB */
    bool noise_auto; /* noise: auto */
    uint32_t log_rate; /* default 10 */
};

struct sg_mirror {
    struct sg_upstream *upstream;
    double percent; /* 0..100, default 100 */
    uint64_t threshold; /* sample iff random64 < threshold; UINT64_MAX at 100 */
    bool always; /* percent == 100 */
    uint64_t timeout_ms; /* default 5s */
    uint64_t max_body_bytes; /* default 1MiB */
    char *host_suffix; /* default "-shadow"; "" disables */
    char **methods; /* NULL/0: all methods */
    size_t n_methods;
    struct sg_compare *compare; /* NULL: responses discarded */
};

struct sg_kv {
    char *name; /* lower-cased */
    char *value;
};

struct sg_header_edits {
    struct sg_kv *set;
    size_t n_set;
    char **remove; /* lower-cased */
    size_t n_remove;
};

enum sg_retry_on {
    SG_RETRY_CONNECT_FAILURE = 1u << 0,
    SG_RETRY_RESET = 1u << 1,
    SG_RETRY_502 = 1u << 2,
    SG_RETRY_503 = 1u << 3,
    SG_RETRY_504 = 1u << 4,
};

struct sg_retry_policy {
    uint32_t attempts; /* extra tries after the first; default 0 (1 when `retries` given without it) */
    uint32_t on; /* sg_retry_on bits; default connect-failure|reset */
    uint64_t per_try_timeout_ms; /* 0: none (only the route timeout) */
    /* Retry budget (an addition to the contract, retry_budget.h): retries
     * add at most budget_percent % of the route's requests plus
     * budget_min_per_second. Defaults 20 and 10. */
    uint32_t budget_percent;
    uint32_t budget_min_per_second;
};

enum sg_path_match_kind { SG_PM_ANY = 0, SG_PM_EXACT, SG_PM_PREFIX, SG_PM_REGEX };
enum sg_sticky_kind { SG_STICKY_NONE = 0, SG_STICKY_HEADER, SG_STICKY_COOKIE };

struct sg_route {
    char *name;
    size_t index;
    /* match */
    enum sg_path_match_kind path_kind;
    char *path; /* EXACT/PREFIX value, REGEX source */
    regex_t path_re; /* REGEX: REG_EXTENDED|REG_NOSUB */
    char **methods; /* upper-case as written; NULL/0: any */
    size_t n_methods;
    char *host; /* lower-cased, without port; NULL: any */
    struct sg_header_match *headers;
    size_t n_headers;
    /* action */
    char *rewrite_prefix; /* NULL: no rewrite (only valid with a path_prefix match) */
    struct sg_destination *destinations;
    size_t n_destinations;
    uint64_t total_weight; /* > 0, validated */
    enum sg_sticky_kind sticky_kind;
    char *sticky_name; /* header name lower-cased, or cookie name as written */
    struct sg_mirror *mirrors;
    size_t n_mirrors;
    uint64_t timeout_ms; /* default 15s; 0 disables */
    struct sg_retry_policy retries;
    struct sg_header_edits request_headers;
    struct sg_header_edits response_headers;
};

struct sg_limits {
    uint64_t max_header_bytes; /* default 64KiB */
    uint64_t max_request_body_bytes; /* default 0 = unlimited */
    uint64_t header_timeout_ms; /* default 10s */
    uint64_t idle_timeout_ms; /* default 60s */
    uint32_t max_connections; /* default 0 = unlimited */
    uint32_t shadow_max_in_flight; /* per worker, default 1024 */
    uint64_t shadow_max_buffered_bytes; /* per worker, default 64MiB */
};

struct sg_config {
    atomic_uint refs;
    uint64_t generation; /* set by the caller that installs it */
    char *path; /* file it was loaded from */
    uint32_t workers; /* resolved: `auto` -> online CPUs */
    bool workers_auto;
    bool io_uring; /* io_uring: auto (true, the default) | off */
    struct sg_listener *listeners;
    size_t n_listeners;
    struct sg_mark listeners_mark; /* the top-level listeners key's value */
    struct sg_hostport admin; /* default 127.0.0.1:9901 */
    struct sg_upstream *upstreams;
    size_t n_upstreams;
    struct sg_route *routes;
    size_t n_routes;
    bool access_log; /* access_log.enabled, default true */
    struct sg_limits limits;
    uint64_t drain_timeout_ms; /* shutdown.drain_timeout, default 30s */
    char **secrets; /* values substituted from ${ENV}, for redaction */
    size_t n_secrets;
    /* Runtime state the installing process attaches before sharing the
     * snapshot (TLS contexts of the listeners); released with it. */
    void *runtime;
    void (*runtime_free)(void *runtime);
};

/* Every error found, each already formatted "FILE:LINE:COLUMN: message". */
struct sg_config_errors {
    char **msgs;
    size_t n;
};

/* Returns a snapshot with one reference, or NULL with every error in errs,
 * sorted by position. errs may be NULL; it is overwritten (not appended to),
 * so free it with sg_config_errors_free() before reusing it. */
struct sg_config *sg_config_load(const char *path, struct sg_config_errors *errs);
/* The same from memory; `name` stands for FILE in messages. */
struct sg_config *sg_config_load_buffer(const char *name, const char *yaml, size_t len,
                                        struct sg_config_errors *errs);
void sg_config_errors_free(struct sg_config_errors *errs);

struct sg_config *sg_config_ref(struct sg_config *cfg);
void sg_config_unref(struct sg_config *cfg);

const struct sg_upstream *sg_config_upstream(const struct sg_config *cfg, const char *name);

/* Parsers shared with the CLI and tests. Return false on bad input. */
bool sg_parse_duration_ms(const char *s, uint64_t *out_ms); /* "250ms" "5s" "2m" "1h" */
bool sg_parse_size(const char *s, uint64_t *out_bytes); /* "512" "64KiB" "1MiB" "1GiB" */
bool sg_parse_hostport(const char *s, struct sg_hostport *out); /* allocates out->host */

#endif
