/* One proxied request: from a parsed request head to the end of the
 * response. Protocol-neutral on the client side (a downstream implements
 * sg_downstream_ops); every finished or failed exchange leaves through
 * one function, ex_finish() in exchange.c. */
#ifndef STRANGLER_EXCHANGE_H
#define STRANGLER_EXCHANGE_H

#include <stdbool.h>
#include <stdint.h>

#include "strangler/config.h"
#include "strangler/headers.h"
#include "strangler/str.h"

struct bufferevent;
struct sg_exchange;
struct sg_worker;

struct sg_downstream_ops {
    void (*expect_continue)(void *ds);
    void (*interim)(void *ds, int status, const struct sg_headers *h);
    /* Final response head; content_length -1 when unknown. */
    void (*head)(void *ds, int status, const struct sg_headers *h, const struct sg_header_edits *edits,
                 int64_t content_length, bool upgrade);
    void (*body)(void *ds, const char *p, size_t n);
    void (*end)(void *ds, const struct sg_headers *trailers);
    /* The proxy's own answer (404, 502, ...): short text/plain. */
    void (*local)(void *ds, int status, const char *text, bool close);
    bool (*congested)(void *ds);
    void (*pause_request)(void *ds, bool pause);
    /* The response cannot be completed: tear the client side down. */
    void (*abort)(void *ds);
    /* The exchange is over; `close` asks the downstream to close after flushing. */
    void (*done)(void *ds, bool close);
    /* 101 Switching Protocols went out: splice the client with `up`. */
    void (*tunnel)(void *ds, struct bufferevent *up);
};

struct sg_request {
    struct sg_str method;
    struct sg_str path; /* origin-form path, no query */
    struct sg_str query; /* without '?', may be empty */
    struct sg_str target; /* path + query as received, for the access log */
    struct sg_str host; /* Host / authority as received */
    struct sg_str protocol; /* "HTTP/1.1", "HTTP/1.0", "HTTP/2" */
    struct sg_str client_addr;
    struct sg_str scheme; /* "http" / "https" */
    const struct sg_headers *headers;
    int64_t content_length; /* -1: chunked (length unknown); 0: no body */
    bool expect_continue;
    bool upgrade; /* websocket */
    bool head_method;
};

/* Frees the worker thread's cache of finished exchanges (at its exit). */
void sg_exchange_thread_exit(void);

struct sg_exchange *sg_exchange_new(struct sg_worker *w, const struct sg_downstream_ops *ops, void *ds,
                                    const struct sg_request *req);
/* Routes and starts the upstream attempt. May answer locally (and so call
 * ops->done) before it returns. */
void sg_exchange_start(struct sg_exchange *ex);
void sg_exchange_request_body(struct sg_exchange *ex, const char *p, size_t n);
/* The request is complete; `trailers` (may be NULL) stay valid, like the
 * head, until the exchange calls done or is told the client is gone. */
void sg_exchange_request_end(struct sg_exchange *ex, const struct sg_headers *trailers);
/* True while the request body should not be read faster. */
bool sg_exchange_request_congested(const struct sg_exchange *ex);
/* The downstream drained its output below the low watermark. */
void sg_exchange_downstream_writable(struct sg_exchange *ex);
/* The client went away or the downstream failed: abandon everything. */
void sg_exchange_downstream_gone(struct sg_exchange *ex);
/* A limit was exceeded while the body streamed in (413). */
void sg_exchange_reject(struct sg_exchange *ex, int status, const char *text);

#endif
