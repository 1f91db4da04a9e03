/* Unit tests for src/observe/json.c and src/observe/access_log.c.
 * Every produced line is also run through a small strict JSON checker
 * (RFC 8259 grammar, UTF-8 validated), so "valid JSON" is tested, not
 * assumed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "strangler/access_log.h"
#include "strangler/json.h"

/* ---- a strict little JSON checker ---- */

static const char *json_value(const char *p, const char *end, int depth);

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Length of a well-formed UTF-8 character at p (RFC 3629), 0 if none. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    size_t n = p[0] < 0x80 ? 1 : p[0] >= 0xc2 && p[0] <= 0xdf ? 2 : p[0] >= 0xe0 && p[0] <= 0xef ? 3
                                                              : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : 0;
    if (n == 0 || (size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) || (p[0] == 0xf0 && p[1] < 0x90) ||
        (p[0] == 0xf4 && p[1] > 0x8f))
        return 0;
    return n;
}

static const char *json_string(const char *p, const char *end)
{
    if (p >= end || *p != '"')
        return NULL;
    p++;
    while (p < end && *p != '"') {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            if (++p >= end)
                return NULL;
            if (*p == 'u') {
                if (end - p < 5 || !is_hex(p[1]) || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]))
                    return NULL;
                p += 5;
            } else if (strchr("\"\\/bfnrt", *p) && *p) {
                p++;
            } else {
                return NULL;
            }
            continue;
        }
        size_t n = utf8_len((const unsigned char *)p, (const unsigned char *)end);
        if (!n)
            return NULL;
        p += n;
    }
    return p < end ? p + 1 : NULL;
}

static const char *json_digits(const char *p, const char *end)
{
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p > start ? p : NULL;
}

static const char *json_number(const char *p, const char *end)
{
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if (!(p = json_digits(p, end)))
        return NULL;
    if (p < end && *p == '.' && !(p = json_digits(p + 1, end)))
        return NULL;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        p = json_digits(p, end);
    }
    return p;
}

static const char *json_container(const char *p, const char *end, int depth, char close, bool object)
{
    p = skip_ws(p + 1, end);
    if (p < end && *p == close)
        return p + 1;
    for (;;) {
        if (object) {
            if (!(p = json_string(p, end)))
                return NULL;
            p = skip_ws(p, end);
            if (p >= end || *p != ':')
                return NULL;
            p++;
        }
        if (!(p = json_value(p, end, depth + 1)))
            return NULL;
        p = skip_ws(p, end);
        if (p < end && *p == close)
            return p + 1;
        if (p >= end || *p != ',')
            return NULL;
        p = skip_ws(p + 1, end);
    }
}

static const char *json_literal(const char *p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(end - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

static const char *json_value(const char *p, const char *end, int depth)
{
    p = skip_ws(p, end);
    if (p >= end || depth > 32)
        return NULL;
    switch (*p) {
    case '{':
        return json_container(p, end, depth, '}', true);
    case '[':
        return json_container(p, end, depth, ']', false);
    case '"':
        return json_string(p, end);
    case 't':
        return json_literal(p, end, "true");
    case 'f':
        return json_literal(p, end, "false");
    case 'n':
        return json_literal(p, end, "null");
    default:
        return json_number(p, end);
    }
}

static bool json_valid(const char *s, size_t len)
{
    const char *end = s + len;
    const char *p = json_value(s, end, 0);
    return p && skip_ws(p, end) == end;
}

/* ---- helpers ---- */

/* The buffer's contents as a NUL-terminated string, freed by the caller. */
static char *drain(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static void check_json_str(const char *in, size_t len, size_t max, const char *want)
{
    struct evbuffer *b = evbuffer_new();
    sg_json_str(b, in, len, max);
    char *got = drain(b);
    assert_string_equal(got, want);
    assert_true(json_valid(got, strlen(got)));
    free(got);
    evbuffer_free(b);
}

#define JS(lit, want) check_json_str(lit, sizeof(lit) - 1, 0, want)

static bool valid_c(const char *s)
{
    return json_valid(s, strlen(s));
}

static void test_checker_itself(void **state)
{
    (void)state;
    assert_true(valid_c("{\"a\":[1,-2.5e3,true,null,\"x\\u00e9\"],\"b\":{}}"));
    assert_false(valid_c("{\"a\":1,}"));
    assert_false(valid_c("{\"a\":01}"));
    assert_false(valid_c("\"\x01\""));
    assert_false(valid_c("\"\xff\""));
    assert_false(valid_c("\"\\x\""));
    assert_false(valid_c("[1] x"));
}

static void test_json_str_plain_and_escapes(void **state)
{
    (void)state;
    JS("", "\"\"");
    JS("/bar/x?y=1", "\"/bar/x?y=1\"");
    JS("say \"hi\"", "\"say \\\"hi\\\"\"");
    JS("back\\slash", "\"back\\\\slash\"");
    JS("a\nb\rc\td", "\"a\\u000ab\\u000dc\\u0009d\"");
    JS("\x01\x1f\x7f", "\"\\u0001\\u001f\x7f\"");
    check_json_str("a\0b", 3, 0, "\"a\\u0000b\"");
    JS("/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80", "\"/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80\"");
    check_json_str(NULL, 0, 0, "\"\"");
}

static void test_json_str_invalid_utf8(void **state)
{
    (void)state;
    JS("a\xff" "b", "\"a\\ufffdb\"");
    JS("\x80\x80", "\"\\ufffd\\ufffd\"");
    JS("\xc0\xaf", "\"\\ufffd\\ufffd\""); /* overlong '/' */
    JS("\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\""); /* overlong, 3 bytes */
    JS("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""); /* UTF-16 surrogate */
    JS("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* above U+10FFFF */
    JS("\xe2\x82" "x", "\"\\ufffdx\""); /* truncated sequence: one U+FFFD */
    JS("\xf0\x9f\x98", "\"\\ufffd\"");
    JS("\xe2\x82\"", "\"\\ufffd\\\"\"");
    JS("ok\xc3", "\"ok\\ufffd\"");
}

static void test_json_str_truncation(void **state)
{
    (void)state;
    check_json_str("abcdef", 6, 3, "\"abc\"");
    check_json_str("abcdef", 6, 6, "\"abcdef\"");
    check_json_str("abcdef", 6, 100, "\"abcdef\"");
    /* Never inside a character: "é" is two bytes. */
    check_json_str("ab\xc3\xa9z", 5, 3, "\"ab\"");
    check_json_str("ab\xc3\xa9z", 5, 4, "\"ab\xc3\xa9\"");
    check_json_str("\xf0\x9f\x98\x80", 4, 3, "\"\"");
    /* The limit counts input bytes; escapes may make the output longer. */
    check_json_str("\"\"\"\"", 4, 2, "\"\\\"\\\"\"");
}

static struct sg_access_entry sample_entry(void)
{
    static const struct sg_str mirrored[] = { SG_STR_LIT("bar-service"), SG_STR_LIT("bar-v2") };
    return (struct sg_access_entry){
        .start_us = UINT64_C(1795551303123456), /* 2026-11-24T20:15:03.123456Z */
        .request_id = SG_STR_LIT("0f8e2c4a-1b3d"),
        .method = SG_STR_LIT("GET"),
        .path = SG_STR_LIT("/bar/x?y=1"),
        .protocol = SG_STR_LIT("HTTP/1.1"),
        .status = 200,
        .duration_ms = 12.3456,
        .route = SG_STR_LIT("bar"),
        .upstream = SG_STR_LIT("monolith"),
        .bytes_in = 5,
        .bytes_out = 1234567890123ull,
        .client = SG_STR_LIT("10.0.0.9:51234"),
        .mirrored = mirrored,
        .n_mirrored = 2,
    };
}

static char *format(const struct sg_access_entry *e)
{
    struct evbuffer *b = evbuffer_new();
    sg_access_log_format(b, e);
    char *s = drain(b);
    evbuffer_free(b);
    size_t n = strlen(s);
    assert_true(n > 0 && s[n - 1] == '\n');
    assert_null(memchr(s, '\n', n - 1)); /* exactly one line */
    assert_true(json_valid(s, n - 1));
    return s;
}

static void test_access_log_line(void **state)
{
    (void)state;
    struct sg_access_entry e = sample_entry();
    char *s = format(&e);
    assert_string_equal(s, "{\"ts\":\"2026-11-24T20:15:03.123Z\",\"request_id\":\"0f8e2c4a-1b3d\","
                           "\"method\":\"GET\",\"path\":\"/bar/x?y=1\",\"protocol\":\"HTTP/1.1\","
                           "\"status\":200,\"duration_ms\":12.346,\"route\":\"bar\",\"upstream\":\"monolith\","
                           "\"bytes_in\":5,\"bytes_out\":1234567890123,\"client\":\"10.0.0.9:51234\","
                           "\"mirrored\":[\"bar-service\",\"bar-v2\"]}\n");
    free(s);
}

static void test_access_log_no_route(void **state)
{
    (void)state;
    struct sg_access_entry e = sample_entry();
    e.start_us = UINT64_C(946684799999999);
    e.status = 404;
    e.duration_ms = 0.0004;
    e.route = SG_STR_NULL;
    e.upstream = SG_STR_LIT("");
    e.bytes_out = 0;
    e.mirrored = NULL;
    e.n_mirrored = 0;
    e.protocol = SG_STR_LIT("HTTP/2");
    char *s = format(&e);
    assert_string_equal(s, "{\"ts\":\"1999-12-31T23:59:59.999Z\",\"request_id\":\"0f8e2c4a-1b3d\","
                           "\"method\":\"GET\",\"path\":\"/bar/x?y=1\",\"protocol\":\"HTTP/2\","
                           "\"status\":404,\"duration_ms\":0.000,\"route\":null,\"upstream\":null,"
                           "\"bytes_in\":5,\"bytes_out\":0,\"client\":\"10.0.0.9:51234\",\"mirrored\":[]}\n");
    free(s);
}

static void test_access_log_hostile_input(void **state)
{
    (void)state;
    struct sg_access_entry e = sample_entry();
    e.path = SG_STR_LIT("/\"},\"status\":1,\"x\":\"\n\r\x1b[31m\xff\xc3");
    e.method = SG_STR_LIT("G\"ET");
    e.request_id = SG_STR_LIT("id\\");
    e.client = SG_STR_NULL;
    e.status = 0;
    e.duration_ms = -3.0; /* a clock step: never a negative duration */
    char *s = format(&e);
    assert_non_null(strstr(s, "\"method\":\"G\\\"ET\""));
    assert_non_null(strstr(s, "\"request_id\":\"id\\\\\""));
    assert_non_null(strstr(s, "\"path\":\"/\\\"},\\\"status\\\":1,\\\"x\\\":\\\"\\u000a\\u000d\\u001b[31m"
                              "\\ufffd\\ufffd\""));
    assert_non_null(strstr(s, "\"status\":0,\"duration_ms\":0.000,"));
    assert_non_null(strstr(s, "\"client\":\"\""));
    free(s);
}

static void test_access_log_long_path_bounded(void **state)
{
    (void)state;
    static char path[20000];
    memset(path, 'a', sizeof path);
    path[0] = '/';
    struct sg_access_entry e = sample_entry();
    e.path = (struct sg_str){ path, sizeof path };
    char *s = format(&e);
    assert_true(strlen(s) < 4096 + 1024);
    free(s);
}

static void test_access_log_appends(void **state)
{
    (void)state;
    struct sg_access_entry e = sample_entry();
    struct evbuffer *b = evbuffer_new();
    sg_access_log_format(b, &e);
    size_t one = evbuffer_get_length(b);
    sg_access_log_format(b, &e);
    assert_int_equal(evbuffer_get_length(b), 2 * one);
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_itself),
        cmocka_unit_test(test_json_str_plain_and_escapes),
        cmocka_unit_test(test_json_str_invalid_utf8),
        cmocka_unit_test(test_json_str_truncation),
        cmocka_unit_test(test_access_log_line),
        cmocka_unit_test(test_access_log_no_route),
        cmocka_unit_test(test_access_log_hostile_input),
        cmocka_unit_test(test_access_log_long_path_bounded),
        cmocka_unit_test(test_access_log_appends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
