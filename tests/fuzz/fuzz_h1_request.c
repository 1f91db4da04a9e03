/* Fuzz target: the HTTP/1.1 request path, bytes in -> bytes to the upstream.
 *
 * The input is a client's byte stream (first byte: how to split it into
 * reads). It goes through the reader h1_server.c uses (src/http/h1_reader.c:
 * the raw head scan, llhttp in strict mode, the head accumulator, the
 * request checks, chunked bodies with their last line and trailers), fed
 * and settled the way h1_server.c's parse_chunk does, pipelined requests
 * one after the other; every request accepted is forwarded through the
 * real serialisation code (h1_client.c, headers.c) and fuzz_upstream_end()
 * checks the result (see fuzz.h). */
#include <string.h>

#include "fuzz.h"
#include "strangler/h1.h"
#include "strangler/h1_reader.h"

#define MAX_HEAD 8192u

struct conn {
    struct sg_h1_reader rd;
    bool forwarding, stop;
};

static void on_begin(void *owner)
{
    (void)owner;
}

static bool on_head(void *owner, struct sg_request *req)
{
    struct conn *c = owner;
    /* What the checks promise. */
    FUZZ_ASSERT(req->path.len && req->path.p[0] == '/');
    FUZZ_ASSERT(req->host.len ? sg_h1_authority_valid(req->host) : c->rd.http10);
    FUZZ_ASSERT(c->rd.parser.method != HTTP_CONNECT && c->rd.parser.http_major == 1 &&
                c->rd.parser.http_minor <= 1);
    FUZZ_ASSERT(req->headers == &c->rd.head.headers);
    /* exchange.c sends path + query: rebuild it the way ex_rewrite does
     * without a rewrite rule. */
    static char target[MAX_HEAD + 2];
    size_t n = req->path.len;
    memcpy(target, req->path.p, n);
    if (req->query.len) {
        target[n++] = '?';
        memcpy(target + n, req->query.p, req->query.len);
        n += req->query.len;
    }
    req->target = (struct sg_str){ target, n };
    fuzz_upstream_begin(req);
    c->forwarding = true;
    return true;
}

static void on_body(void *owner, const char *p, size_t n)
{
    (void)owner;
    fuzz_upstream_body(p, n);
}

static void on_end(void *owner, const struct sg_headers *trailers)
{
    struct conn *c = owner;
    fuzz_upstream_end(trailers);
    c->forwarding = false;
}

static void on_refuse(void *owner, int status, const char *why, enum sg_h1_refusal where)
{
    struct conn *c = owner;
    FUZZ_ASSERT(why != NULL);
    if (where == SG_H1_BAD_HEAD)
        FUZZ_ASSERT(status == 400 || status == 405 || status == 414 || status == 431 || status == 501 ||
                    status == 505);
    else
        FUZZ_ASSERT(status == 400);
    if (c->forwarding)
        fuzz_upstream_abort();
    c->forwarding = false;
    c->stop = true;
}

static const struct sg_h1_reader_ops ops = {
    .begin = on_begin,
    .head = on_head,
    .body = on_body,
    .end = on_end,
    .refuse = on_refuse,
};

/* One read's worth of bytes, the way h1_server.c's parse_chunk loop takes
 * it, without waiting for responses between pipelined requests. */
static void feed(struct conn *c, const char *data, size_t len)
{
    while (len && !c->stop) {
        enum sg_h1_read res;
        size_t used = sg_h1_reader_feed(&c->rd, data, len, &res);
        sg_h1_reader_settle(&c->rd);
        data += used;
        len -= used;
        if (res == SG_H1_READ_UPGRADE) {
            c->stop = true; /* a websocket tunnel: bytes after this are not HTTP */
            return;
        }
        if (res != SG_H1_READ_DONE)
            return;
        sg_h1_reader_next(&c->rd);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned split = data[0];
    data++;
    size--;
    struct conn c;
    memset(&c, 0, sizeof c);
    sg_h1_reader_init(&c.rd, MAX_HEAD, &ops, &c);
    /* Reads of 1..16 bytes (split's low nibble + 1), or the whole input
     * at once when split's high bit is set. */
    size_t piece = split & 0x80 ? size : (split & 0x0f) + 1u;
    for (size_t off = 0; off < size && !c.stop; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        feed(&c, (const char *)data + off, n);
    }
    if (c.forwarding)
        fuzz_upstream_abort(); /* input ended inside a request: the client went away */
    sg_h1_reader_free(&c.rd);
    return 0;
}
