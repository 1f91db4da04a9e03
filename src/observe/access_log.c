/* One access log line: a JSON object with exactly the contract's fields
 * (behaviour.md, "Access log"), in a fixed order so lines diff well.
 *
 * The entry carries no header values at all, so Authorization and Cookie
 * cannot leak here by construction. Every string goes through
 * sg_json_str: paths and ids are client input and may hold quotes,
 * control characters or invalid UTF-8. */
#include "strangler/access_log.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "strangler/json.h"

/* Bounds on client-controlled strings keep one request from producing a
 * multi-kilobyte log line; the path is long enough for real URLs. */
#define SG_LOG_MAX_PATH 4096
#define SG_LOG_MAX_SHORT 256

static void add_lit(struct evbuffer *out, const char *s)
{
    evbuffer_add(out, s, strlen(s));
}

static void add_str(struct evbuffer *out, const char *key, struct sg_str v, size_t max)
{
    add_lit(out, key);
    sg_json_str(out, v.p, v.len, max);
}

/* route and upstream are null, not "", when there was none: a 404 has no
 * route, and a log query for upstream == "" would be a trap. */
static void add_str_or_null(struct evbuffer *out, const char *key, struct sg_str v)
{
    if (v.len == 0) {
        add_lit(out, key);
        add_lit(out, "null");
    } else {
        add_str(out, key, v, SG_LOG_MAX_SHORT);
    }
}

/* RFC 3339 UTC with milliseconds: "2026-11-24T20:15:03.123Z". */
static void add_ts(struct evbuffer *out, uint64_t start_us)
{
    time_t sec = (time_t)(start_us / 1000000u);
    unsigned ms = (unsigned)(start_us / 1000u % 1000u);
    struct tm tm;
    if (!gmtime_r(&sec, &tm))
        memset(&tm, 0, sizeof tm);
    evbuffer_add_printf(out, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\"", tm.tm_year + 1900, tm.tm_mon + 1,
                        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

static void add_mirrored(struct evbuffer *out, const struct sg_access_entry *e)
{
    add_lit(out, ",\"mirrored\":[");
    for (size_t i = 0; i < e->n_mirrored; i++) {
        if (i)
            add_lit(out, ",");
        sg_json_str(out, e->mirrored[i].p, e->mirrored[i].len, SG_LOG_MAX_SHORT);
    }
    add_lit(out, "]");
}

void sg_access_log_format(struct evbuffer *out, const struct sg_access_entry *e)
{
    /* JSON has no NaN or infinity; a clock step could give a negative. */
    double ms = isfinite(e->duration_ms) && e->duration_ms > 0 ? e->duration_ms : 0.0;
    add_ts(out, e->start_us);
    add_str(out, ",\"request_id\":", e->request_id, SG_LOG_MAX_SHORT);
    add_str(out, ",\"method\":", e->method, SG_LOG_MAX_SHORT);
    add_str(out, ",\"path\":", e->path, SG_LOG_MAX_PATH);
    add_str(out, ",\"protocol\":", e->protocol, SG_LOG_MAX_SHORT);
    evbuffer_add_printf(out, ",\"status\":%d,\"duration_ms\":%.3f", e->status, ms);
    add_str_or_null(out, ",\"route\":", e->route);
    add_str_or_null(out, ",\"upstream\":", e->upstream);
    evbuffer_add_printf(out, ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64, e->bytes_in, e->bytes_out);
    add_str(out, ",\"client\":", e->client, SG_LOG_MAX_SHORT);
    add_mirrored(out, e);
    if (e->shadow) {
        /* A shadow's own line (docs/mirroring.md): what became of it. */
        add_lit(out, ",\"shadow\":true");
        add_str(out, ",\"outcome\":", e->outcome, SG_LOG_MAX_SHORT);
        if (e->reason.len)
            add_str(out, ",\"reason\":", e->reason, SG_LOG_MAX_SHORT);
    }
    if (e->error.len)
        add_str(out, ",\"error\":", e->error, SG_LOG_MAX_SHORT);
    add_lit(out, "}\n");
}
