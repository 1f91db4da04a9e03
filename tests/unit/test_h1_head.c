/* The HTTP/1 head accumulator: pieces split across reads, the byte limit
 * (separators counted), release on idle and reuse afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <llhttp.h>

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
    struct sg_wbuf wb;
    sg_wbuf_init(&wb, b);
    sg_wbuf_content_length(&wb, 0);
    sg_wbuf_content_length(&wb, 1234567890123ULL);
    assert_int_equal(evbuffer_get_length(b), 0); /* nothing before the flush */
    sg_wbuf_flush(&wb);
    char *s = drain(b);
    assert_string_equal(s, "Content-Length: 0\r\nContent-Length: 1234567890123\r\n");
    free(s);

    sg_wbuf_chunk(&wb, "hello", 5);
    char big[300];
    memset(big, 'x', sizeof big);
    sg_wbuf_chunk(&wb, big, sizeof big);
    sg_wbuf_flush(&wb);
    s = drain(b);
    assert_int_equal(strlen(s), 3 + 5 + 2 + 5 + 300 + 2);
    assert_memory_equal(s, "5\r\nhello\r\n12c\r\nx", 16);
    free(s);

    /* Lines that fit are gathered; one longer than the room left flushes
     * first, one longer than the whole buffer goes straight through: the
     * bytes and their order are the same. */
    sg_wbuf_field(&wb, SG_STR_LIT("a"), SG_STR_LIT("b"));
    char longv[SG_WBUF_SIZE + 100];
    memset(longv, 'v', sizeof longv);
    sg_wbuf_field(&wb, SG_STR_LIT("long"), (struct sg_str){ longv, sizeof longv });
    char mid[SG_WBUF_SIZE - 10];
    memset(mid, 'm', sizeof mid);
    sg_wbuf_field(&wb, SG_STR_LIT("c"), SG_STR_LIT("d"));
    sg_wbuf_add(&wb, mid, sizeof mid);
    sg_wbuf_field(&wb, SG_STR_LIT("e"), SG_STR_LIT(""));
    sg_wbuf_flush(&wb);
    size_t want = 6 + 4 + 2 + sizeof longv + 2 + 6 + sizeof mid + 5;
    assert_int_equal(evbuffer_get_length(b), want);
    s = drain(b);
    assert_memory_equal(s, "a: b\r\nlong: vvv", 15);
    assert_memory_equal(s + 6 + 6 + sizeof longv - 1, "v\r\nc: d\r\nmmm", 12);
    assert_memory_equal(s + want - 6, "m" "e: \r\n", 6);
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

static const char *scan_pieces(const char *text, size_t piece)
{
    struct sg_h1_scan sc;
    sg_h1_scan_reset(&sc);
    size_t len = strlen(text);
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        const char *why = sg_h1_scan(&sc, text + off, n);
        if (why)
            return why;
    }
    return sc.head_end ? NULL : "incomplete";
}

/* Whole, byte by byte and in 3-byte pieces (runs of plain bytes are
 * skipped in one step; the state carries across pieces): same verdict. */
static const char *scan(const char *text)
{
    const char *whole = scan_pieces(text, SIZE_MAX);
    const char *bytes = scan_pieces(text, 1);
    const char *threes = scan_pieces(text, 3);
    if (whole != bytes || whole != threes)
        fail_msg("scan of \"%s\": verdicts differ by piece size", text);
    return whole;
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
    assert_non_null(scan("GET / HTTP/1.1\r\nHost: a\r\nX-Long-Name\t: 1\r\n\r\n"));
    assert_non_null(scan("GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_non_null(scan("GET /abc HTTP/1.1\r\nHost: a\r\nX: long value\rmore\r\n\r\n"));
    assert_non_null(scan("GET /abc HTTP/1.1\r\nHost: a\r\nX: long value\nmore\r\n\r\n"));
    assert_null(scan("GET /a/b/c?d=e HTTP/1.1\r\nHost: a\r\nX-Name: v a l u e\t\x80\xff\r\n\r\n"));
}

/* Every byte at 20 positions of a request target, a field name and a field
 * value (inside and at the ends of the runs of plain bytes the scanner
 * skips in one step): the verdict the per-byte rules say. */
static void test_scan_every_byte(void **state)
{
    (void)state;
    char msg[256];
    for (unsigned c = 0; c < 256; c++) {
        for (size_t at = 0; at < 20; at++) {
            char run[21];
            memset(run, 'a', 20);
            run[20] = '\0';
            run[at] = (char)c;
            /* Target: SP (a third), controls, DEL, CR and LF are refused. */
            bool bad = c <= 0x20 || c == 0x7f;
            snprintf(msg, sizeof msg, "GET /%s HTTP/1.1\r\nHost: a\r\n\r\n", run);
            if (c && (scan_pieces(msg, SIZE_MAX) != NULL) != bad)
                fail_msg("byte 0x%02x at %zu of a target", c, at);
            /* Name (after its first byte): SP, HTAB, CR, LF and NUL are
             * refused; a colon ends it early, which is fine. */
            bad = c == ' ' || c == '\t' || c == '\r' || c == '\n';
            snprintf(msg, sizeof msg, "GET / HTTP/1.1\r\nX%s: v\r\n\r\n", run);
            if (c && (scan_pieces(msg, SIZE_MAX) != NULL) != bad)
                fail_msg("byte 0x%02x at %zu of a name", c, at);
            /* Value: CR, LF and NUL are refused. */
            bad = c == '\r' || c == '\n';
            snprintf(msg, sizeof msg, "GET / HTTP/1.1\r\nX: v%s\r\n\r\n", run);
            if (c && (scan_pieces(msg, SIZE_MAX) != NULL) != bad)
                fail_msg("byte 0x%02x at %zu of a value", c, at);
        }
    }
    /* NUL (which snprintf cannot carry) in each part, at each position. */
    const char *tpl[] = { "GET /aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n",
                          "GET / HTTP/1.1\r\nXaaaaaaaaaaaaaaaaaaaa: v\r\n\r\n",
                          "GET / HTTP/1.1\r\nX: vaaaaaaaaaaaaaaaaaaaa\r\n\r\n" };
    for (size_t t = 0; t < 3; t++) {
        const char *a = strchr(tpl[t], 'a');
        for (size_t at = 0; at < 20; at++) {
            size_t len = strlen(tpl[t]);
            memcpy(msg, tpl[t], len);
            msg[(size_t)(a - tpl[t]) + at] = '\0';
            struct sg_h1_scan sc;
            sg_h1_scan_reset(&sc);
            if (!sg_h1_scan(&sc, msg, len))
                fail_msg("NUL at %zu of template %zu accepted", at, t);
        }
    }
}

static const char *fields_problem(const char *name, const char *value)
{
    struct sg_h1_head h;
    sg_h1_head_init(&h, 65536);
    assert_true(sg_h1_head_append(&h, SG_H1_FIELD, name, strlen(name)));
    assert_true(sg_h1_head_append(&h, SG_H1_VALUE, value, strlen(value)));
    assert_true(sg_h1_head_finish(&h));
    const char *why = sg_h1_fields_problem(&h); /* a string constant */
    sg_h1_head_free(&h);
    return why;
}

/* llhttp hands over a field with an empty name (": v"); that one is ours. */
static void test_fields_problem(void **state)
{
    (void)state;
    assert_non_null(fields_problem("", "v"));
    assert_null(fields_problem("X-Ok", "plain value\twith tab \x80\xfe\xff~!"));
    assert_null(fields_problem("X", ""));
}

/* What llhttp guarantees and sg_h1_fields_problem relies on: every field it
 * delivers has a name of tchar bytes (or an empty one) and a value with no
 * control byte but HTAB. Every byte 0x00-0xff at the start, middle and end
 * of a name and of a value, in a request head, a response head and the
 * trailers of both; the message either fails to parse or its fields obey. */
struct pin {
    char name[64], value[64];
    size_t nlen, vlen;
    unsigned bad;
};

static int pin_add(char *buf, size_t cap, size_t *len, const char *at, size_t n)
{
    if (*len + n > cap)
        return -1;
    memcpy(buf + *len, at, n);
    *len += n;
    return 0;
}

static int pin_name(llhttp_t *p, const char *at, size_t n)
{
    struct pin *pn = p->data;
    return pin_add(pn->name, sizeof pn->name, &pn->nlen, at, n);
}

static int pin_value(llhttp_t *p, const char *at, size_t n)
{
    struct pin *pn = p->data;
    return pin_add(pn->value, sizeof pn->value, &pn->vlen, at, n);
}

static int pin_value_done(llhttp_t *p)
{
    struct pin *pn = p->data;
    /* An empty name is the one llhttp leaves to sg_h1_fields_problem. */
    if (pn->nlen && !sg_h1_token((struct sg_str){ pn->name, pn->nlen }))
        pn->bad++;
    for (size_t i = 0; i < pn->vlen; i++) {
        unsigned char c = (unsigned char)pn->value[i];
        pn->bad += (c < 0x20 && c != '\t') || c == 0x7f;
    }
    pn->nlen = pn->vlen = 0;
    return 0;
}

static void test_llhttp_field_bytes(void **state)
{
    (void)state;
    static const struct {
        llhttp_type_t type;
        const char *before, *after;
    } kinds[] = {
        { HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\n", "\r\n\r\n" },
        { HTTP_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", "\r\n\r\n" },
        { HTTP_REQUEST, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n",
          "\r\n\r\n" },
        { HTTP_RESPONSE, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", "\r\n\r\n" },
    };
    static const char *const shapes[] = { "%cab: cd", "a%cb: cd", "ab%c: cd", "ab: %ccd", "ab: c%cd", "ab: cd%c" };
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_header_field = pin_name;
    settings.on_header_value = pin_value;
    settings.on_header_value_complete = pin_value_done;
    unsigned refused = 0, delivered = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (unsigned c = 0; c < 256; c++) {
                char field[16], msg[256];
                size_t flen = 0;
                for (const char *f = shapes[s]; *f; f++) {
                    if (f[0] == '%' && f[1] == 'c') {
                        field[flen++] = (char)c;
                        f++;
                    } else {
                        field[flen++] = *f;
                    }
                }
                size_t blen = strlen(kinds[k].before), alen = strlen(kinds[k].after);
                memcpy(msg, kinds[k].before, blen);
                memcpy(msg + blen, field, flen);
                memcpy(msg + blen + flen, kinds[k].after, alen);
                struct pin pn = { .nlen = 0 };
                llhttp_t p;
                llhttp_init(&p, kinds[k].type, &settings);
                p.data = &pn;
                llhttp_errno_t err = llhttp_execute(&p, msg, blen + flen + alen);
                if (err != HPE_OK) {
                    refused++;
                    continue;
                }
                delivered++;
                if (pn.bad)
                    fail_msg("kind %zu, field \"%s\" with byte 0x%02x: delivered with a bad byte", k, shapes[s], c);
            }
    /* Both outcomes occur: the loop above really tried bad bytes. */
    assert_true(refused > 4 * 6 * 30);
    assert_true(delivered > 4 * 6 * 70);
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
        cmocka_unit_test(test_scan_every_byte),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_fields_problem),
        cmocka_unit_test(test_llhttp_field_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
