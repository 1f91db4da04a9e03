/* The HTTP/1 head accumulator: pieces split across reads, the byte limit
 * (separators counted), release on idle and reuse afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "strangler/h1.h"

static void feed_request(struct sg_h1_head *h)
{
    assert_true(sg_h1_head_append(h, SG_H1_METHOD, "GET", 3));
    assert_true(sg_h1_head_append(h, SG_H1_URL, "/a", 2));
    assert_true(sg_h1_head_append(h, SG_H1_URL, "?q=1", 4)); /* split across reads */
    assert_true(sg_h1_head_append(h, SG_H1_FIELD, "Ho", 2));
    assert_true(sg_h1_head_append(h, SG_H1_FIELD, "st", 2));
    assert_true(sg_h1_head_append(h, SG_H1_VALUE, "example.com  ", 13));
    h->field_open = false;
    assert_true(sg_h1_head_append(h, SG_H1_FIELD, "X-A", 3));
    assert_true(sg_h1_head_append(h, SG_H1_VALUE, "1", 1));
    h->field_open = false;
    assert_true(sg_h1_head_finish(h));
}

static void check_request(const struct sg_h1_head *h)
{
    assert_true(sg_str_eq(h->s_method, SG_STR_LIT("GET")));
    assert_true(sg_str_eq(h->s_url, SG_STR_LIT("/a?q=1")));
    assert_int_equal(h->headers.n, 2);
    assert_true(sg_str_eq(h->headers.v[0].name, SG_STR_LIT("Host")));
    assert_true(sg_str_eq(h->headers.v[0].value, SG_STR_LIT("example.com"))); /* trailing OWS trimmed */
    assert_true(sg_str_eq(h->headers.v[1].value, SG_STR_LIT("1")));
}

static void test_pieces_and_finish(void **state)
{
    struct sg_h1_head h;
    sg_h1_head_init(&h, 4096);
    feed_request(&h);
    check_request(&h);
    sg_h1_head_free(&h);
}

static void test_limit_counts_separators(void **state)
{
    struct sg_h1_head h;
    sg_h1_head_init(&h, 16);
    assert_true(sg_h1_head_append(&h, SG_H1_METHOD, "GET", 3));
    assert_true(sg_h1_head_append(&h, SG_H1_URL, "/abcdef", 7)); /* 10 bytes */
    /* A 2-byte name costs 2 + 4 (": " and CRLF): 16 exactly fits, one more does not. */
    assert_true(sg_h1_head_append(&h, SG_H1_FIELD, "Xy", 2));
    assert_false(sg_h1_head_append(&h, SG_H1_VALUE, "z", 1));
    sg_h1_head_free(&h);
}

static void test_release_then_reuse(void **state)
{
    struct sg_h1_head h;
    sg_h1_head_init(&h, 4096);
    feed_request(&h);
    sg_h1_head_release(&h);
    assert_null(h.buf);
    assert_null(h.fields);
    assert_null(h.headers.v);
    assert_int_equal(h.max, 4096); /* the limit survives */
    sg_h1_head_reset(&h);
    feed_request(&h);
    check_request(&h);
    sg_h1_head_free(&h);
}

static char *drain(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = calloc(1, n + 1);
    evbuffer_remove(b, s, n);
    return s;
}

/* The printf-free serialisers must write exactly what printf would. */
static void test_serialisers(void **state)
{
    (void)state;
    char d[24];
    assert_int_equal(sg_fmt_u64(d, 0, 10), 1);
    assert_memory_equal(d, "0", 1);
    assert_int_equal(sg_fmt_u64(d, UINT64_MAX, 10), 20);
    assert_memory_equal(d, "18446744073709551615", 20);
    assert_int_equal(sg_fmt_u64(d, 0x1a2bULL, 16), 4);
    assert_memory_equal(d, "1a2b", 4);

    struct evbuffer *b = evbuffer_new();
    sg_h1_emit_content_length(b, 0);
    sg_h1_emit_content_length(b, 1234567890123ULL);
    char *s = drain(b);
    assert_string_equal(s, "Content-Length: 0\r\nContent-Length: 1234567890123\r\n");
    free(s);

    sg_h1_emit_chunk(b, "hello", 5);
    char big[300];
    memset(big, 'x', sizeof big);
    sg_h1_emit_chunk(b, big, sizeof big);
    s = drain(b);
    assert_int_equal(strlen(s), 3 + 5 + 2 + 5 + 300 + 2);
    assert_memory_equal(s, "5\r\nhello\r\n12c\r\nx", 16);
    free(s);

    /* Short lines go out in one piece, long ones in four: same bytes. */
    sg_h1_emit_field(b, SG_STR_LIT("a"), SG_STR_LIT("b"));
    char longv[600];
    memset(longv, 'v', sizeof longv);
    sg_h1_emit_field(b, SG_STR_LIT("long"), (struct sg_str){ longv, sizeof longv });
    s = drain(b);
    assert_memory_equal(s, "a: b\r\nlong: vvv", 15);
    assert_int_equal(strlen(s), 6 + 4 + 2 + 600 + 2);
    assert_memory_equal(s + strlen(s) - 3, "v\r\n", 3);
    free(s);
    evbuffer_free(b);
}

static void test_authority(void **state)
{
    static const char *const good[] = { "a", "a.example", "a.example:8080", "127.0.0.1:1", "[::1]", "[::1]:443",
                                        "xn--bcher-kva.example", "a_b", "%41.example", "[2001:db8::1.2.3.4]" };
    static const char *const bad[] = { "", "a b", "u@a", "a,b", "a/x", "a:", "a:99999", "a:http", "a:1:2",
                                       "[::1", "[::1]x", "[zz::1]", "%4", "a\tb", "a?b", "a#b", "[fe80::1%25eth0]" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(sg_h1_authority_valid(sg_str_c(good[i])));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (sg_h1_authority_valid(sg_str_c(bad[i])))
            fail_msg("authority %s accepted", bad[i]);
    }
}

static const char *scan(const char *text)
{
    struct sg_h1_scan sc;
    sg_h1_scan_reset(&sc);
    /* byte by byte: the scanner keeps its state across pieces */
    for (const char *p = text; *p; p++) {
        const char *why = sg_h1_scan(&sc, p, 1);
        if (why)
            return why;
    }
    return sc.head_end ? NULL : "incomplete";
}

static void test_scan(void **state)
{
    assert_null(scan("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_null(scan("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX:\r\n\r\n"));
    assert_non_null(scan("GET / HTTP/1.1\nHost: a\r\n\r\n"));
    assert_non_null(scan("GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n"));
    assert_non_null(scan("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_non_null(scan("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"));
    assert_non_null(scan("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_non_null(scan("GET /\r\nHost: a\r\n\r\n"));
    assert_non_null(scan("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"));
    assert_non_null(scan("GET / HTTP/1.1\r\nHost : a\r\n\r\n"));
    assert_non_null(scan("GET / HTTP/1.1\r\n: a\r\n\r\n"));
}

static void test_token(void **state)
{
    assert_true(sg_h1_token(SG_STR_LIT("X-Custom_1!#$%&'*+-.^`|~")));
    assert_false(sg_h1_token(SG_STR_LIT("")));
    assert_false(sg_h1_token(SG_STR_LIT("a b")));
    assert_false(sg_h1_token(SG_STR_LIT("a:b")));
    assert_false(sg_h1_token(SG_STR_LIT("a\"")));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces_and_finish),
        cmocka_unit_test(test_limit_counts_separators),
        cmocka_unit_test(test_release_then_reuse),
        cmocka_unit_test(test_serialisers),
        cmocka_unit_test(test_authority),
        cmocka_unit_test(test_scan),
        cmocka_unit_test(test_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
