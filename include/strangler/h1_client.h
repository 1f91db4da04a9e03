/* The HTTP/1.1 client side of one exchange on one pooled upstream
 * connection: writes the request head and framed body, parses the
 * response with llhttp and reports it to the exchange. */
#ifndef STRANGLER_H1_CLIENT_H
#define STRANGLER_H1_CLIENT_H

#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>

#include "strangler/h1.h"

struct sg_uconn;
struct evbuffer;
struct bufferevent;

/* What the client reports to whoever drives it: the primary exchange
 * (exchange.c) or a shadow (mirror.c). */
struct sg_h1c_owner_ops {
    void (*interim)(void *owner, int status, const struct sg_headers *h);
    void (*head)(void *owner, int status, const struct sg_headers *h, int64_t content_length);
    void (*body)(void *owner, const char *p, size_t n);
    void (*end)(void *owner, const struct sg_headers *trailers);
    void (*error)(void *owner, const char *err);
    void (*writable)(void *owner);
    void (*upgrade)(void *owner, const struct sg_headers *h);
};

enum sg_h1c_event { SG_H1C_NONE, SG_H1C_HEAD, SG_H1C_END };

struct sg_h1c {
    struct sg_uconn *uc; /* NULL when detached */
    unsigned gen; /* bumped on every attach and detach: loops on the stack notice */
    const struct sg_h1c_owner_ops *ops;
    void *owner;
    llhttp_t parser;
    struct sg_h1_head head;
    struct sg_h1_head trailers;
    enum sg_h1c_event pending; /* recorded in a parser callback, handled after it */
    bool head_done, msg_done, in_trailers;
    bool chunked_req; /* request body is chunk-encoded on the wire */
    bool req_done; /* the whole request (incl. body) has been written */
    bool got_bytes; /* any response byte arrived */
    bool no_body; /* HEAD request */
    bool upgrade; /* websocket request; 101 ends parsing */
    bool paused; /* response reading paused by downstream backpressure */
    bool reusable; /* upstream allowed keep-alive */
    int64_t content_length; /* response, -1 unknown */
};

struct sg_h1c_request {
    struct sg_str method, target, host;
    int64_t content_length; /* -1: chunked; 0: no body */
    bool no_response_body; /* HEAD */
    bool upgrade;
};

/* Lets io.c hand a read's bytes to the response parser before they reach
 * the input buffer (sg_io_direct). Once, before the workers start. */
void sg_h1c_io_register(void);

/* Takes the connection for its owner and starts the head in the caller's
 * wb (request line, Host and framing); the owner then adds the other
 * fields to wb (sg_wbuf_field) and ends the head with sg_h1c_head_done(),
 * which sends it in one piece. */
void sg_h1c_begin(struct sg_h1c *c, struct sg_uconn *uc, const struct sg_h1c_owner_ops *ops, void *owner,
                  const struct sg_h1c_request *r, struct sg_wbuf *wb);
struct evbuffer *sg_h1c_output(struct sg_h1c *c);
void sg_h1c_head_done(struct sg_h1c *c, struct sg_wbuf *wb); /* terminates the head (CRLF) and sends it */
void sg_h1c_body(struct sg_h1c *c, const char *p, size_t n);
void sg_h1c_end(struct sg_h1c *c, const struct sg_headers *trailers);
bool sg_h1c_congested(const struct sg_h1c *c);
void sg_h1c_pause(struct sg_h1c *c, bool pause);
/* Gives the connection back (reused only if the exchange was clean) and
 * returns its bufferevent when `keep_bev` (tunnel), else NULL. */
struct bufferevent *sg_h1c_detach(struct sg_h1c *c, bool keep_bev);
void sg_h1c_free(struct sg_h1c *c);

#endif
