/* Fuzz target: HTTP/2 frames from a client -> requests to an HTTP/1.1
 * upstream.
 *
 * The input is what a client sends after the connection preface (the
 * target adds the preface). It goes into an nghttp2 server session set up
 * the way src/http/h2_server.c sets up its own (same options, same
 * SETTINGS), whose callbacks feed strangler's request-head validation
 * (sg_h2_head_field, sg_h2_head_finish in src/http/h2_head.c) and trailer
 * accumulation exactly as h2_server.c's do. Every stream that becomes a
 * request is forwarded through the real HTTP/1.1 serialisation and checked
 * on the wire by fuzz_upstream_end() (fuzz.h): an HTTP/2 request must never
 * turn into an ambiguous HTTP/1.1 one. Without sockets: mem_recv in,
 * mem_send out (discarded). */
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "http/h2_internal.h"
#include "strangler/h1.h"
#include "strangler/h2_server.h"

#define MAX_HEAD 16384u

struct stream {
    int32_t id;
    struct sg_h2_head head;
    struct sg_h1_head trailers;
    struct sg_request req;
    bool head_done, forwarding;
    struct stream *next;
};

struct conn {
    nghttp2_session *ngh;
    struct stream *streams;
    struct stream *upstream; /* the one stream whose request is being forwarded */
};

static struct stream *stream_of(nghttp2_session *ngh, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ngh, id);
}

static int on_begin_headers(nghttp2_session *ngh, const nghttp2_frame *frame, void *user)
{
    struct conn *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct stream *st = calloc(1, sizeof *st);
    FUZZ_ASSERT(st);
    st->id = frame->hd.stream_id;
    sg_h2_head_init(&st->head, MAX_HEAD);
    sg_h1_head_init(&st->trailers, MAX_HEAD);
    st->next = c->streams;
    c->streams = st;
    nghttp2_session_set_stream_user_data(ngh, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *ngh, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct stream *st = stream_of(ngh, frame->hd.stream_id);
    if (!st)
        return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        sg_h2_head_field(&st->head, name, namelen, value, valuelen);
        return 0;
    }
    if (!sg_h1_head_add_field(&st->trailers, (const char *)name, namelen, (const char *)value, valuelen))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static void request_end(struct conn *c, struct stream *st)
{
    if (!st->forwarding)
        return;
    bool trailers = st->trailers.n_fields && sg_h1_head_finish(&st->trailers);
    fuzz_upstream_end(trailers ? &st->trailers.headers : NULL);
    st->forwarding = false;
    c->upstream = NULL;
}

static void head_complete(struct conn *c, struct stream *st, bool end_stream)
{
    int status = 0;
    const char *text = NULL;
    st->head_done = true;
    switch (sg_h2_head_finish(&st->head, end_stream, &st->req, &status, &text)) {
    case SG_H2_MALFORMED:
        FUZZ_ASSERT(st->head.malformed);
        nghttp2_submit_rst_stream(c->ngh, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
        return;
    case SG_H2_ANSWER:
        FUZZ_ASSERT(status >= 400 && status < 600 && text);
        return;
    case SG_H2_REQUEST:
        break;
    }
    /* What the checks promise before anything goes to an HTTP/1.1 upstream. */
    FUZZ_ASSERT(st->req.path.len && st->req.path.p[0] == '/');
    FUZZ_ASSERT(st->req.method.len && !st->req.upgrade);
    if (c->upstream) /* one upstream wire at a time: a later stream is only validated */
        return;
    /* exchange.c sends path + query (no rewrite rule). */
    st->req.target = (struct sg_str){ st->req.path.p, st->req.target.len };
    fuzz_upstream_begin(&st->req);
    st->forwarding = true;
    c->upstream = st;
    if (end_stream)
        request_end(c, st);
}

static int on_frame_recv(nghttp2_session *ngh, const nghttp2_frame *frame, void *user)
{
    struct conn *c = user;
    struct stream *st;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_HEADERS && (st = stream_of(ngh, frame->hd.stream_id))) {
        if (!st->head_done)
            head_complete(c, st, end);
        else if (end)
            request_end(c, st);
    } else if (frame->hd.type == NGHTTP2_DATA && end && (st = stream_of(ngh, frame->hd.stream_id))) {
        request_end(c, st);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ngh, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *user)
{
    struct conn *c = user;
    nghttp2_session_consume_connection(ngh, len);
    nghttp2_session_consume_stream(ngh, id, len);
    struct stream *st = stream_of(ngh, id);
    if (st && st->forwarding && c->upstream == st)
        fuzz_upstream_body((const char *)data, len);
    return 0;
}

static void stream_free(struct stream *st)
{
    sg_h2_head_free(&st->head);
    sg_h1_head_free(&st->trailers);
    free(st);
}

static int on_stream_close(nghttp2_session *ngh, int32_t id, uint32_t code, void *user)
{
    struct conn *c = user;
    struct stream *st = stream_of(ngh, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(ngh, id, NULL);
    if (st->forwarding) { /* reset before its end: the upstream request is abandoned */
        fuzz_upstream_abort();
        c->upstream = NULL;
    }
    for (struct stream **pp = &c->streams; *pp; pp = &(*pp)->next)
        if (*pp == st) {
            *pp = st->next;
            break;
        }
    stream_free(st);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conn c = { 0 };
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    FUZZ_ASSERT(nghttp2_session_callbacks_new(&cb) == 0 && nghttp2_option_new(&opt) == 0);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    FUZZ_ASSERT(nghttp2_session_server_new2(&c.ngh, cb, &c, opt) == 0);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 128 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 128 * 1024 },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEAD },
    };
    nghttp2_submit_settings(c.ngh, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    ssize_t rv = nghttp2_session_mem_recv(c.ngh, (const uint8_t *)SG_H2_PREFACE, SG_H2_PREFACE_LEN);
    FUZZ_ASSERT(rv == SG_H2_PREFACE_LEN);
    /* Frames in pieces of up to 64 bytes, answers drained between them. */
    for (size_t off = 0; off < size && rv >= 0;) {
        size_t n = size - off < 64 ? size - off : 64;
        rv = nghttp2_session_mem_recv(c.ngh, data + off, n);
        off += n;
        const uint8_t *out;
        while (rv >= 0 && nghttp2_session_mem_send(c.ngh, &out) > 0) {
        }
    }
    if (c.upstream)
        fuzz_upstream_abort();
    nghttp2_session_del(c.ngh); /* calls no callbacks: the streams are ours */
    for (struct stream *st = c.streams, *next; st; st = next) {
        next = st->next;
        stream_free(st);
    }
    return 0;
}
