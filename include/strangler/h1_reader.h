/* The request side of an HTTP/1.1 connection, without its socket.
 *
 * Bytes in, requests out: the raw-byte scan of the head (sg_h1_scan),
 * llhttp in strict mode, the head accumulator (sg_h1_head), the request
 * checks (sg_h1_request_check), bodies, and a chunked body's last line and
 * trailer fields, which llhttp does not check. h1_server.c feeds it what it
 * reads from a client; the fuzz target fuzz_h1_request feeds it the
 * fuzzer's bytes, so the fuzzer runs the code the server runs.
 *
 * One request at a time: once a request is complete the reader stops
 * (SG_H1_READ_DONE) and leaves the bytes after it alone until the owner
 * calls sg_h1_reader_next() (h1_server.c does when the response is
 * complete, which keeps pipelined answers in order).
 *
 * Feeding is two steps, so that the owner can consume the bytes before it
 * hears of an error or of the end of a chunked request (either may close
 * the connection and free its buffers):
 *
 *     size_t used = sg_h1_reader_feed(r, p, n, &res);
 *     ... drop `used` bytes of the input ...
 *     sg_h1_reader_settle(r);
 *
 * begin, head and body (and end, for a request framed by Content-Length)
 * are called from inside sg_h1_reader_feed; refuse and the end of a
 * chunked request from sg_h1_reader_settle. */
#ifndef STRANGLER_H1_READER_H
#define STRANGLER_H1_READER_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>

#include "strangler/exchange.h"
#include "strangler/h1.h"

/* Where a refused request had got to. */
enum sg_h1_refusal {
    SG_H1_BAD_HEAD, /* before its head was accepted */
    SG_H1_BAD_BODY, /* malformed framing inside the body */
    SG_H1_BAD_END, /* the body was complete, its last line or trailers bad */
};

struct sg_h1_reader_ops {
    /* The first bytes of a request arrived. */
    void (*begin)(void *owner);
    /* A head that passed every check. `req` is filled in but for
     * client_addr and scheme (the owner's to set); it, and the head's
     * fields it points at, stay valid until sg_h1_reader_next. False stops
     * the reader: the owner called sg_h1_reader_reject first. */
    bool (*head)(void *owner, struct sg_request *req);
    void (*body)(void *owner, const char *p, size_t n);
    /* The request is complete; `trailers` (NULL if none) checked. */
    void (*end)(void *owner, const struct sg_headers *trailers);
    /* A request that cannot be served: the status to answer with. */
    void (*refuse)(void *owner, int status, const char *why, enum sg_h1_refusal where);
};

enum sg_h1_read {
    SG_H1_READ_MORE, /* everything was used: feed the next bytes */
    SG_H1_READ_DONE, /* a request is complete: wait for sg_h1_reader_next */
    SG_H1_READ_UPGRADE, /* a websocket upgrade: the bytes after it are not HTTP */
    SG_H1_READ_FAILED, /* refused (reported by sg_h1_reader_settle) */
};

struct sg_h1_reader {
    llhttp_t parser;
    struct sg_h1_head head;
    struct sg_h1_head *trailers; /* made when a chunked body's first trailer field arrives */
    struct sg_h1_scan scan;
    struct sg_request req;
    const struct sg_h1_reader_ops *ops;
    void *owner;
    int reject; /* status decided inside a parser callback */
    const char *reject_text;
    enum sg_h1_read result; /* of the last feed, for settle */
    llhttp_errno_t err;
    bool in_body; /* the head was accepted */
    bool end_pending; /* chunked request complete, its last line not checked yet */
    bool http10, keep_alive;
    char last_byte; /* of the previous piece */
    char before_lf; /* the byte before the LF that ended a chunked body */
};

void sg_h1_reader_init(struct sg_h1_reader *r, size_t max_head, const struct sg_h1_reader_ops *ops, void *owner);
void sg_h1_reader_free(struct sg_h1_reader *r);
/* Returns how many of the n bytes were used; *res says what happened. */
size_t sg_h1_reader_feed(struct sg_h1_reader *r, const char *p, size_t n, enum sg_h1_read *res);
/* After the owner dropped the used bytes: reports what the feed found. */
void sg_h1_reader_settle(struct sg_h1_reader *r);
/* Ready for the next request (its trailers and scan state gone). */
void sg_h1_reader_next(struct sg_h1_reader *r);
/* From inside ops->head: the status and text the request gets refused with. */
void sg_h1_reader_reject(struct sg_h1_reader *r, int status, const char *why);
/* True while a partial request head is held (bytes of it have arrived). */
bool sg_h1_reader_partial(const struct sg_h1_reader *r);

#endif
