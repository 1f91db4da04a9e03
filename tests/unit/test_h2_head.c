/* Unit tests for src/http/h2_head.c: HTTP/2 request heads (RFC 9113 8.1-8.3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/h2_internal.h"

struct field {
    const char *name, *value;
};

static const struct field base[] = {
    { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/a/b?x=1" }, { ":authority", "api.test:8080" },
    { NULL, NULL },
};

/* Feeds `a` then `b` (either may be NULL) and finishes the head. */
static enum sg_h2_verdict run(struct sg_h2_head *h, const struct field *a, const struct field *b, bool end,
                              struct sg_request *req, int *status)
{
    const char *text = NULL;
    sg_h2_head_init(h, 4096);
    for (const struct field *list[] = { a, b }, **l = list; l < list + 2; l++)
        for (const struct field *f = *l; f && f->name; f++)
            sg_h2_head_field(h, (const uint8_t *)f->name, strlen(f->name), (const uint8_t *)f->value,
                             strlen(f->value));
    memset(req, 0, sizeof *req);
    return sg_h2_head_finish(h, end, req, status, &text);
}

static void expect_malformed(const struct field *a, const struct field *b, const char *why)
{
    struct sg_h2_head h;
    struct sg_request req;
    int status = 0;
    assert_int_equal(run(&h, a, b, true, &req, &status), SG_H2_MALFORMED);
    assert_ptr_equal(h.malformed, why);
    sg_h2_head_free(&h);
}

static void test_request_is_built(void **state)
{
    static const struct field more[] = { { "cookie", "a=1" }, { "x-one", "1" }, { "cookie", "b=2" },
                                         { "content-length", "5" }, { "expect", "100-continue" }, { NULL, NULL } };
    struct sg_h2_head h;
    struct sg_request req;
    int status = 0;
    assert_int_equal(run(&h, base, more, false, &req, &status), SG_H2_REQUEST);
    assert_true(sg_str_eq(req.method, SG_STR_LIT("GET")));
    assert_true(sg_str_eq(req.path, SG_STR_LIT("/a/b")));
    assert_true(sg_str_eq(req.query, SG_STR_LIT("x=1")));
    assert_true(sg_str_eq(req.target, SG_STR_LIT("/a/b?x=1")));
    assert_true(sg_str_eq(req.host, SG_STR_LIT("api.test:8080")));
    assert_true(sg_str_eq(req.protocol, SG_STR_LIT("HTTP/2")));
    assert_int_equal(req.content_length, 5);
    assert_true(req.expect_continue);
    /* Cookie crumbs joined into the first cookie's place (8.2.3). */
    assert_int_equal(req.headers->n, 4);
    assert_true(sg_str_eq(req.headers->v[0].value, SG_STR_LIT("a=1; b=2")));
    assert_true(sg_str_eq(req.headers->v[1].name, SG_STR_LIT("x-one")));
    sg_h2_head_free(&h);
}

static void test_content_length_follows_end_stream(void **state)
{
    struct sg_h2_head h;
    struct sg_request req;
    int status = 0;
    assert_int_equal(run(&h, base, NULL, true, &req, &status), SG_H2_REQUEST);
    assert_int_equal(req.content_length, 0);
    sg_h2_head_free(&h);
    assert_int_equal(run(&h, base, NULL, false, &req, &status), SG_H2_REQUEST);
    assert_int_equal(req.content_length, -1);
    sg_h2_head_free(&h);
}

static void test_malformed_heads(void **state)
{
    static const struct field dup[] = { { ":path", "/x" }, { NULL, NULL } };
    static const struct field unknown[] = { { ":protocol", "websocket" }, { NULL, NULL } };
    static const struct field late[] = { { ":method", "GET" }, { "x-a", "1" }, { ":path", "/" }, { NULL, NULL } };
    static const struct field conn[] = { { "connection", "close" }, { NULL, NULL } };
    static const struct field te[] = { { "te", "gzip" }, { NULL, NULL } };
    static const struct field cl[] = { { "content-length", "1" }, { "content-length", "2" }, { NULL, NULL } };
    static const struct field cr[] = { { "x-a", "1\r\nx-b: 2" }, { NULL, NULL } };
    static const struct field host[] = { { "host", "other.test" }, { NULL, NULL } };
    static const struct field nopath[] = { { ":method", "GET" }, { ":scheme", "http" }, { NULL, NULL } };
    static const struct field rel[] = { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "a" }, { NULL, NULL } };
    static const struct field high[] = { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/\xfe\xff" },
                                         { NULL, NULL } };
    expect_malformed(base, dup, sg_h2_err_pseudo_dup);
    expect_malformed(base, unknown, sg_h2_err_pseudo_unknown);
    expect_malformed(late, NULL, sg_h2_err_pseudo_late);
    expect_malformed(base, conn, sg_h2_err_connection_field);
    expect_malformed(base, te, sg_h2_err_te);
    expect_malformed(base, cl, sg_h2_err_content_length);
    expect_malformed(base, cr, sg_h2_err_field_value);
    expect_malformed(base, host, sg_h2_err_authority);
    expect_malformed(nopath, NULL, sg_h2_err_pseudo_missing);
    expect_malformed(rel, NULL, sg_h2_err_path);
    expect_malformed(high, NULL, sg_h2_err_path); /* not visible ASCII: no HTTP/1.1 target */
    /* field names: lower-case tokens (RFC 9113 8.2.1) */
    static const struct field upper[] = { { "X-Upper", "1" }, { NULL, NULL } };
    static const struct field space[] = { { "x a", "1" }, { NULL, NULL } };
    static const struct field paren[] = { { "x(a)", "1" }, { NULL, NULL } };
    expect_malformed(base, upper, sg_h2_err_field_value);
    expect_malformed(base, space, sg_h2_err_field_value);
    expect_malformed(base, paren, sg_h2_err_field_value);
    static const struct field tchars[] = { { "x-a_b.c!#$%&'*+^`|~09", "1" }, { NULL, NULL } };
    struct sg_h2_head h;
    struct sg_request req;
    int status = 0;
    assert_int_equal(run(&h, base, tchars, true, &req, &status), SG_H2_REQUEST);
    sg_h2_head_free(&h);
}

static void test_answered_heads(void **state)
{
    static const struct field connect[] = { { ":method", "CONNECT" }, { ":authority", "x:443" }, { NULL, NULL } };
    static const struct field star[] = { { ":method", "OPTIONS" }, { ":scheme", "http" }, { ":path", "*" },
                                         { NULL, NULL } };
    static const struct field big[] = { { "x-big", "................................................................"
                                                   "................................................................" },
                                        { NULL, NULL } };
    struct sg_h2_head h;
    struct sg_request req;
    int status = 0;
    assert_int_equal(run(&h, connect, NULL, false, &req, &status), SG_H2_ANSWER);
    assert_int_equal(status, 405);
    sg_h2_head_free(&h);
    assert_int_equal(run(&h, star, NULL, true, &req, &status), SG_H2_ANSWER);
    assert_int_equal(status, 400);
    sg_h2_head_free(&h);
    sg_h2_head_init(&h, 100); /* 128 bytes + 32 > 100: 431 (RFC 9113 10.5.1) */
    sg_h2_head_field(&h, (const uint8_t *)big[0].name, strlen(big[0].name), (const uint8_t *)big[0].value,
                     strlen(big[0].value));
    const char *text;
    assert_int_equal(sg_h2_head_finish(&h, true, &req, &status, &text), SG_H2_ANSWER);
    assert_int_equal(status, 431);
    sg_h2_head_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_is_built),
        cmocka_unit_test(test_content_length_follows_end_stream),
        cmocka_unit_test(test_malformed_heads),
        cmocka_unit_test(test_answered_heads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
