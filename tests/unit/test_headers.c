/* Unit tests for src/http/headers.c: field lists and the forwarding rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "strangler/config.h"
#include "strangler/headers.h"

/* Emitted fields rendered as "name: value\n" lines, to compare whole
 * outputs (order included) with one string. */
struct out {
    char buf[4096];
    size_t len;
};

static void collect(void *ctx, struct sg_str name, struct sg_str value)
{
    struct out *o = ctx;
    int n = snprintf(o->buf + o->len, sizeof o->buf - o->len, "%.*s: %.*s\n", (int)name.len, name.p,
                     (int)value.len, value.p);
    assert_true(n > 0 && (size_t)n < sizeof o->buf - o->len);
    o->len += (size_t)n;
}

static void add(struct sg_headers *h, const char *name, const char *value)
{
    assert_true(sg_headers_add(h, sg_str_c(name), sg_str_c(value)));
}

static const char *forward(const struct sg_headers *in, const struct sg_forward_request_opts *opts, struct out *o)
{
    o->len = 0;
    o->buf[0] = '\0';
    sg_headers_forward_request(in, opts, collect, o);
    return o->buf;
}

static const char *forward_resp(const struct sg_headers *in, const struct sg_header_edits *e, bool upgrade,
                                struct out *o)
{
    o->len = 0;
    o->buf[0] = '\0';
    sg_headers_forward_response(in, e, upgrade, collect, o);
    return o->buf;
}

static struct sg_forward_request_opts default_opts(void)
{
    return (struct sg_forward_request_opts){
        .client_addr = SG_STR_LIT("10.0.0.9"),
        .proto = SG_STR_LIT("http"),
        .request_id = SG_STR_LIT("rid-1"),
    };
}

#define PROXY_TAIL "x-forwarded-for: 10.0.0.9\nx-forwarded-proto: http\nx-request-id: rid-1\n"

static void test_list_basics(void **state)
{
    (void)state;
    struct sg_headers h;
    sg_headers_init(&h);
    for (int i = 0; i < 40; i++) /* grows past the initial capacity */
        add(&h, i % 2 ? "X-A" : "x-b", "v");
    add(&h, "Accept", "text/html");
    assert_int_equal(h.n, 41);
    assert_int_equal(sg_headers_count(&h, SG_STR_LIT("x-a")), 20);
    assert_int_equal(sg_headers_count(&h, SG_STR_LIT("X-B")), 20);
    assert_int_equal(sg_headers_count(&h, SG_STR_LIT("nope")), 0);
    const struct sg_header *f = sg_headers_get(&h, SG_STR_LIT("ACCEPT"));
    assert_non_null(f);
    assert_true(sg_str_eq(f->value, SG_STR_LIT("text/html")));
    assert_null(sg_headers_get(&h, SG_STR_LIT("accep")));
    sg_headers_free(&h);
    assert_int_equal(h.n, 0);
    assert_null(h.v);
    sg_headers_free(&h); /* idempotent */
}

static void test_list_has(void **state)
{
    (void)state;
    assert_true(sg_header_list_has(SG_STR_LIT("close"), SG_STR_LIT("close")));
    assert_true(sg_header_list_has(SG_STR_LIT("Keep-Alive, Upgrade"), SG_STR_LIT("upgrade")));
    assert_true(sg_header_list_has(SG_STR_LIT(" \tfoo\t ,bar "), SG_STR_LIT("foo")));
    assert_true(sg_header_list_has(SG_STR_LIT(" \tfoo\t ,bar "), SG_STR_LIT("bar")));
    assert_true(sg_header_list_has(SG_STR_LIT(",,, ,x,"), SG_STR_LIT("x")));
    assert_true(sg_header_list_has(SG_STR_LIT("deflate;q=0.5, trailers"), SG_STR_LIT("trailers")));
    assert_true(sg_header_list_has(SG_STR_LIT("deflate ; q=0.5"), SG_STR_LIT("deflate")));
    /* Whole elements only, no substrings. */
    assert_false(sg_header_list_has(SG_STR_LIT("upgrade-insecure"), SG_STR_LIT("upgrade")));
    assert_false(sg_header_list_has(SG_STR_LIT("xupgrade"), SG_STR_LIT("upgrade")));
    assert_false(sg_header_list_has(SG_STR_LIT("up grade"), SG_STR_LIT("up")));
    /* Empty inputs. */
    assert_false(sg_header_list_has(SG_STR_LIT(""), SG_STR_LIT("a")));
    assert_false(sg_header_list_has(SG_STR_NULL, SG_STR_LIT("a")));
    assert_false(sg_header_list_has(SG_STR_LIT(", ,"), SG_STR_LIT("")));
    assert_false(sg_header_list_has(SG_STR_LIT("a"), SG_STR_LIT("")));
    assert_false(sg_header_list_has(SG_STR_LIT(" , "), SG_STR_LIT(" ")));
}

static void test_hop_by_hop_and_reserved(void **state)
{
    (void)state;
    const char *hop[] = { "Connection", "keep-alive", "PROXY-CONNECTION", "te", "Transfer-Encoding", "upgrade" };
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++) {
        assert_true(sg_header_is_hop_by_hop(sg_str_c(hop[i])));
        assert_true(sg_header_name_reserved(sg_str_c(hop[i])));
    }
    assert_false(sg_header_is_hop_by_hop(SG_STR_LIT("trailer")));
    assert_false(sg_header_is_hop_by_hop(SG_STR_LIT("tes")));
    assert_false(sg_header_is_hop_by_hop(SG_STR_LIT("x-forwarded-for")));
    assert_true(sg_header_name_reserved(SG_STR_LIT("Host")));
    assert_true(sg_header_name_reserved(SG_STR_LIT("content-length")));
    assert_true(sg_header_name_reserved(SG_STR_LIT("expect")));
    assert_true(sg_header_name_reserved(SG_STR_LIT("X-Request-Id")));
    assert_true(sg_header_name_reserved(SG_STR_LIT(":authority")));
    assert_true(sg_header_name_reserved(SG_STR_LIT("")));
    assert_false(sg_header_name_reserved(SG_STR_LIT("x-env")));
    assert_false(sg_header_name_reserved(SG_STR_LIT("x-forwarded-for")));
}

static void test_request_id_valid(void **state)
{
    (void)state;
    char long_id[202];
    memset(long_id, 'a', sizeof long_id);
    assert_true(sg_request_id_valid(SG_STR_LIT("a")));
    assert_true(sg_request_id_valid(SG_STR_LIT("0f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b")));
    assert_true(sg_request_id_valid(SG_STR_LIT("!~{}")));
    assert_true(sg_request_id_valid((struct sg_str){ long_id, 200 }));
    assert_false(sg_request_id_valid((struct sg_str){ long_id, 201 }));
    assert_false(sg_request_id_valid(SG_STR_LIT("")));
    assert_false(sg_request_id_valid(SG_STR_NULL));
    assert_false(sg_request_id_valid(SG_STR_LIT("a b")));
    assert_false(sg_request_id_valid(SG_STR_LIT("a\tb")));
    assert_false(sg_request_id_valid(SG_STR_LIT("a\r\nx-evil: 1")));
    assert_false(sg_request_id_valid(SG_STR_LIT("caf\xc3\xa9")));
    assert_false(sg_request_id_valid(SG_STR_LIT("a\x7f")));
    assert_false(sg_request_id_valid((struct sg_str){ "a\0b", 3 }));
}

static void test_forward_hop_by_hop(void **state)
{
    (void)state;
    struct sg_headers h;
    sg_headers_init(&h);
    add(&h, "Host", "example.com");
    add(&h, "Accept", "*/*");
    add(&h, "Connection", "keep-alive");
    add(&h, "Keep-Alive", "timeout=5");
    add(&h, "Proxy-Connection", "keep-alive");
    add(&h, "TE", "gzip");
    add(&h, "Transfer-Encoding", "chunked");
    add(&h, "Upgrade", "websocket");
    add(&h, "Content-Length", "5");
    add(&h, "Expect", "100-continue");
    add(&h, "X-Request-Id", "from-client");
    add(&h, "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    add(&h, "tracestate", "congo=t61rcWkgMzE");
    add(&h, "b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1");
    add(&h, "X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7");
    struct sg_forward_request_opts o = default_opts();
    struct out out;
    assert_string_equal(forward(&h, &o, &out),
                        "Accept: */*\n"
                        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n"
                        "tracestate: congo=t61rcWkgMzE\n"
                        "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\n"
                        "X-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\n" PROXY_TAIL);
    sg_headers_free(&h);
}

/* RFC 9110 7.6.1: every field named by any Connection line goes, whatever
 * the case of the name in either place. */
static void test_forward_connection_named(void **state)
{
    (void)state;
    struct sg_headers h;
    sg_headers_init(&h);
    add(&h, "Connection", "X-Foo, close");
    add(&h, "x-foo", "1");
    add(&h, "X-Bar", "2");
    add(&h, "connection", " x-BAR ,, ");
    add(&h, "X-Baz", "3");
    add(&h, "X-FOO", "4");
    add(&h, "x-foo-bar", "kept");
    add(&h, "Close", "named by the close option, so dropped too");
    struct sg_forward_request_opts o = default_opts();
    struct out out;
    assert_string_equal(forward(&h, &o, &out), "X-Baz: 3\nx-foo-bar: kept\n" PROXY_TAIL);
    sg_headers_free(&h);
}

/* The names are gathered once per message, at most eight of them; past
 * that every field is checked against the Connection lines again. Both
 * ways must drop the same fields, in requests and responses. */
static void test_forward_connection_many(void **state)
{
    (void)state;
    for (int names = 1; names <= 12; names++) {
        struct sg_headers h;
        sg_headers_init(&h);
        char list[256] = "keep-alive";
        size_t len = strlen(list);
        static char field[12][8];
        for (int i = 0; i < names; i++) {
            snprintf(field[i], sizeof field[i], "X-N%d", i);
            len += (size_t)snprintf(list + len, sizeof list - len, ", x-n%d;p=1", i);
        }
        add(&h, "Connection", list);
        for (int i = names - 1; i >= 0; i--)
            add(&h, field[i], "named");
        add(&h, "X-N99", "kept");
        add(&h, "Keep-Alive", "timeout=5");
        struct sg_forward_request_opts o = default_opts();
        struct out out;
        assert_string_equal(forward(&h, &o, &out), "X-N99: kept\n" PROXY_TAIL);
        assert_string_equal(forward_resp(&h, NULL, false, &out), "X-N99: kept\n");
        sg_headers_free(&h);
    }
}

static void test_forward_te_trailers(void **state)
{
    (void)state;
    struct sg_forward_request_opts o = default_opts();
    struct out out;
    struct sg_headers h;
    sg_headers_init(&h);
    add(&h, "TE", "trailers");
    add(&h, "Connection", "TE");
    assert_string_equal(forward(&h, &o, &out), PROXY_TAIL "te: trailers\n");
    sg_headers_free(&h);

    sg_headers_init(&h);
    add(&h, "te", "gzip;q=0.5");
    add(&h, "te", "Trailers;q=1");
    assert_string_equal(forward(&h, &o, &out), PROXY_TAIL "te: trailers\n");
    sg_headers_free(&h);

    sg_headers_init(&h);
    add(&h, "TE", "deflate, gzip");
    add(&h, "x-trailers", "trailers");
    assert_string_equal(forward(&h, &o, &out), "x-trailers: trailers\n" PROXY_TAIL);
    sg_headers_free(&h);
}

static void test_forward_xff(void **state)
{
    (void)state;
    struct sg_forward_request_opts o = default_opts();
    struct out out;
    struct sg_headers h;

    /* Appended to one existing value. */
    sg_headers_init(&h);
    add(&h, "X-Forwarded-For", "203.0.113.7");
    add(&h, "Accept", "*/*");
    assert_string_equal(forward(&h, &o, &out),
                        "Accept: */*\nx-forwarded-for: 203.0.113.7, 10.0.0.9\n"
                        "x-forwarded-proto: http\nx-request-id: rid-1\n");
    sg_headers_free(&h);

    /* Several lines joined in order, empty ones skipped. */
    sg_headers_init(&h);
    add(&h, "x-forwarded-for", "1.1.1.1, 2.2.2.2");
    add(&h, "X-FORWARDED-FOR", "");
    add(&h, "X-Forwarded-For", "3.3.3.3");
    assert_string_equal(forward(&h, &o, &out),
                        "x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\n"
                        "x-forwarded-proto: http\nx-request-id: rid-1\n");
    sg_headers_free(&h);

    /* Longer than the stack buffer: the heap path. */
    static char big[2000];
    memset(big, '9', sizeof big - 1);
    sg_headers_init(&h);
    add(&h, "X-Forwarded-For", big);
    forward(&h, &o, &out);
    assert_int_equal(strlen(out.buf), strlen("x-forwarded-for: ") + 1999 + strlen(", 10.0.0.9\n") +
                                          strlen("x-forwarded-proto: http\nx-request-id: rid-1\n"));
    assert_non_null(strstr(out.buf, "99, 10.0.0.9\n"));
    sg_headers_free(&h);

    /* No client address known and no incoming value: no field at all. */
    sg_headers_init(&h);
    o.client_addr = SG_STR_NULL;
    assert_string_equal(forward(&h, &o, &out), "x-forwarded-proto: http\nx-request-id: rid-1\n");
    add(&h, "X-Forwarded-For", "1.2.3.4");
    assert_string_equal(forward(&h, &o, &out),
                        "x-forwarded-for: 1.2.3.4\nx-forwarded-proto: http\nx-request-id: rid-1\n");
    sg_headers_free(&h);
}

static void test_forward_xfp(void **state)
{
    (void)state;
    struct sg_forward_request_opts o = default_opts();
    struct out out;
    struct sg_headers h;
    sg_headers_init(&h);
    add(&h, "X-Forwarded-Proto", "https");
    assert_string_equal(forward(&h, &o, &out),
                        "X-Forwarded-Proto: https\nx-forwarded-for: 10.0.0.9\nx-request-id: rid-1\n");
    sg_headers_free(&h);

    sg_headers_init(&h);
    o.proto = SG_STR_LIT("https");
    assert_string_equal(forward(&h, &o, &out),
                        "x-forwarded-for: 10.0.0.9\nx-forwarded-proto: https\nx-request-id: rid-1\n");
    sg_headers_free(&h);
}

static void test_forward_request_id_replaced(void **state)
{
    (void)state;
    struct sg_forward_request_opts o = default_opts();
    o.request_id = SG_STR_LIT("kept-from-client");
    struct out out;
    struct sg_headers h;
    sg_headers_init(&h);
    add(&h, "X-Request-ID", "kept-from-client");
    add(&h, "x-request-id", "second");
    assert_string_equal(forward(&h, &o, &out),
                        "x-forwarded-for: 10.0.0.9\nx-forwarded-proto: http\nx-request-id: kept-from-client\n");
    sg_headers_free(&h);
}

static void test_forward_upgrade(void **state)
{
    (void)state;
    struct sg_forward_request_opts o = default_opts();
    struct out out;
    struct sg_headers h;
    sg_headers_init(&h);
    add(&h, "Connection", "Upgrade");
    add(&h, "Upgrade", "websocket");
    add(&h, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    add(&h, "Sec-WebSocket-Version", "13");
    /* Not a tunnel: Upgrade is hop-by-hop and dropped. */
    assert_string_equal(forward(&h, &o, &out),
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n" PROXY_TAIL);
    o.upgrade = true;
    assert_string_equal(forward(&h, &o, &out),
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n" PROXY_TAIL
                        "upgrade: websocket\nconnection: upgrade\n");
    sg_headers_free(&h);
}

static void test_forward_edits(void **state)
{
    (void)state;
    struct sg_kv set[] = { { "x-env", "prod" }, { "accept", "application/json" } };
    char *remove[] = { "x-internal", "cookie" };
    struct sg_header_edits e = { set, 2, remove, 2 };
    struct sg_forward_request_opts o = default_opts();
    o.edits = &e;
    struct out out;
    struct sg_headers h;
    sg_headers_init(&h);
    add(&h, "Accept", "text/html");
    add(&h, "X-Internal", "secret");
    add(&h, "X-Env", "dev");
    add(&h, "Cookie", "a=1");
    add(&h, "User-Agent", "t");
    assert_string_equal(forward(&h, &o, &out), "User-Agent: t\n" PROXY_TAIL "x-env: prod\naccept: application/json\n");
    sg_headers_free(&h);
}

/* Operator edits of the proxy's own fields: `set` replaces x-forwarded-*
 * entirely, `remove` of x-forwarded-for resets the chain to our hop, and
 * names the proxy controls are never emitted from `set`. */
static void test_forward_edits_proxy_fields(void **state)
{
    (void)state;
    struct sg_kv set[] = { { "x-forwarded-proto", "https" }, { "host", "evil" },
                           { "x-request-id", "evil" },      { "content-length", "0" },
                           { "connection", "close" },       { "x-forwarded-for", "1.1.1.1" } };
    struct sg_header_edits e = { set, 6, NULL, 0 };
    struct sg_forward_request_opts o = default_opts();
    o.edits = &e;
    struct out out;
    struct sg_headers h;
    sg_headers_init(&h);
    add(&h, "X-Forwarded-Proto", "http");
    add(&h, "X-Forwarded-For", "6.6.6.6");
    assert_string_equal(forward(&h, &o, &out),
                        "x-request-id: rid-1\nx-forwarded-proto: https\nx-forwarded-for: 1.1.1.1\n");

    char *remove[] = { "x-forwarded-for" };
    struct sg_header_edits e2 = { NULL, 0, remove, 1 };
    o.edits = &e2;
    assert_string_equal(forward(&h, &o, &out),
                        "X-Forwarded-Proto: http\nx-forwarded-for: 10.0.0.9\nx-request-id: rid-1\n");
    sg_headers_free(&h);
}

static void test_forward_empty(void **state)
{
    (void)state;
    struct sg_headers h;
    sg_headers_init(&h);
    struct sg_forward_request_opts o = { 0 };
    struct out out;
    assert_string_equal(forward(&h, &o, &out), "");
    o = default_opts();
    assert_string_equal(forward(&h, &o, &out), PROXY_TAIL);
}

static void test_forward_response(void **state)
{
    (void)state;
    struct out out;
    struct sg_headers h;
    sg_headers_init(&h);
    add(&h, "Content-Type", "text/plain");
    add(&h, "Content-Length", "12");
    add(&h, "Connection", "keep-alive, X-Hop");
    add(&h, "Keep-Alive", "timeout=5");
    add(&h, "Transfer-Encoding", "chunked");
    add(&h, "X-Hop", "1");
    add(&h, "Set-Cookie", "a=1");
    add(&h, "Server", "backend");
    add(&h, "x-request-id", "rid-1");
    assert_string_equal(forward_resp(&h, NULL, false, &out),
                        "Content-Type: text/plain\nSet-Cookie: a=1\nServer: backend\nx-request-id: rid-1\n");

    struct sg_kv set[] = { { "server", "strangler" }, { "x-frame-options", "DENY" }, { "x-request-id", "no" } };
    char *remove[] = { "set-cookie" };
    struct sg_header_edits e = { set, 3, remove, 1 };
    assert_string_equal(forward_resp(&h, &e, false, &out),
                        "Content-Type: text/plain\nx-request-id: rid-1\nserver: strangler\nx-frame-options: DENY\n");
    sg_headers_free(&h);
}

static void test_forward_response_upgrade(void **state)
{
    (void)state;
    struct out out;
    struct sg_headers h;
    sg_headers_init(&h);
    add(&h, "Upgrade", "websocket");
    add(&h, "Connection", "Upgrade");
    add(&h, "Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_string_equal(forward_resp(&h, NULL, true, &out),
                        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n"
                        "upgrade: websocket\nconnection: upgrade\n");
    assert_string_equal(forward_resp(&h, NULL, false, &out), "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n");
    sg_headers_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_basics),
        cmocka_unit_test(test_list_has),
        cmocka_unit_test(test_hop_by_hop_and_reserved),
        cmocka_unit_test(test_request_id_valid),
        cmocka_unit_test(test_forward_hop_by_hop),
        cmocka_unit_test(test_forward_connection_named),
        cmocka_unit_test(test_forward_connection_many),
        cmocka_unit_test(test_forward_te_trailers),
        cmocka_unit_test(test_forward_xff),
        cmocka_unit_test(test_forward_xfp),
        cmocka_unit_test(test_forward_request_id_replaced),
        cmocka_unit_test(test_forward_upgrade),
        cmocka_unit_test(test_forward_edits),
        cmocka_unit_test(test_forward_edits_proxy_fields),
        cmocka_unit_test(test_forward_empty),
        cmocka_unit_test(test_forward_response),
        cmocka_unit_test(test_forward_response_upgrade),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
