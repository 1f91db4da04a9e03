/* Access log: one JSON object per client request on stdout. Each worker
 * batches complete lines and writes them with one write(2). */
#ifndef STRANGLER_ACCESS_LOG_H
#define STRANGLER_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strangler/str.h"

struct evbuffer;

struct sg_access_entry {
    uint64_t start_us; /* wall clock, microseconds since the epoch */
    struct sg_str request_id;
    struct sg_str method;
    struct sg_str path; /* as received, including the query */
    struct sg_str protocol; /* "HTTP/1.1", "HTTP/1.0", "HTTP/2" */
    int status; /* 0 when no response was sent */
    double duration_ms;
    struct sg_str route; /* empty: none matched */
    struct sg_str upstream; /* empty: none chosen */
    uint64_t bytes_in; /* request body bytes */
    uint64_t bytes_out; /* response body bytes */
    struct sg_str client; /* peer address */
    const struct sg_str *mirrored; /* mirror upstream names */
    size_t n_mirrored;
    struct sg_str error; /* what went wrong, when the proxy knows (optional) */
    /* Shadow lines only: */
    bool shadow;
    struct sg_str outcome; /* "sent" | "dropped" */
    struct sg_str reason; /* drop reason, empty otherwise */
};

/* Appends one line (with '\n') to out. */
void sg_access_log_format(struct evbuffer *out, const struct sg_access_entry *e);

#endif
