/* Unit tests for src/proxy/compare.c: JSON Pointers with the `*`
 * wildcard, the diff walk (what differs, under which pointer, normalised
 * how), and response summaries against their byte budget. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "strangler/compare.h"

/* ---- pointers ------------------------------------------------------------ */

static void test_pointer_parse(void **state)
{
    struct sg_json_pointer p;
    assert_true(sg_json_pointer_parse("", &p));
    assert_int_equal(p.n, 0);
    sg_json_pointer_free(&p);

    assert_true(sg_json_pointer_parse("/a/b~1c/~0d/*/", &p));
    assert_int_equal(p.n, 5);
    assert_string_equal(p.seg[0], "a");
    assert_string_equal(p.seg[1], "b/c");
    assert_string_equal(p.seg[2], "~d");
    assert_string_equal(p.seg[3], "*");
    assert_string_equal(p.seg[4], ""); /* "/a/" has an empty last key */
    sg_json_pointer_free(&p);

    assert_true(sg_json_pointer_parse("/~01", &p)); /* "~01" is "~1", not "/" */
    assert_string_equal(p.seg[0], "~1");
    sg_json_pointer_free(&p);

    assert_false(sg_json_pointer_parse("a/b", &p));
    assert_false(sg_json_pointer_parse("/a~2", &p));
    assert_false(sg_json_pointer_parse("/a~", &p));
}

static void test_pointer_match(void **state)
{
    struct sg_json_pointer p;
    assert_true(sg_json_pointer_parse("/items/*/price", &p));
    const char *seg[] = { "items", "12", "price" };
    size_t len[] = { 5, 2, 5 };
    assert_true(sg_json_pointer_match(&p, seg, len, 3));
    const char *seg2[] = { "items", "12", "prices" };
    size_t len2[] = { 5, 2, 6 };
    assert_false(sg_json_pointer_match(&p, seg2, len2, 3));
    assert_false(sg_json_pointer_match(&p, seg, len, 2)); /* `*` is exactly one level */
    sg_json_pointer_free(&p);
}

/* ---- the diff -------------------------------------------------------------- */

struct seen {
    char ptr[16][128], norm[16][128];
    bool noise[16], a_missing[16], b_missing[16];
    size_t n;
};

static void collect(void *ctx, const char *ptr, const char *norm, const json_t *a, const json_t *b, bool noise)
{
    struct seen *s = ctx;
    if (s->n == 16)
        return;
    snprintf(s->ptr[s->n], sizeof s->ptr[0], "%s", ptr);
    snprintf(s->norm[s->n], sizeof s->norm[0], "%s", norm);
    s->noise[s->n] = noise;
    s->a_missing[s->n] = a == NULL;
    s->b_missing[s->n] = b == NULL;
    s->n++;
}

static json_t *j(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    if (!v)
        fail_msg("bad test JSON %s: %s", text, err.text);
    return v;
}

/* Diffs a and b with the given ignore and noise pointers (NULL-terminated). */
static size_t diff(const char *a, const char *b, const char *const *ignore, const char *const *noise,
                   struct seen *s)
{
    struct sg_json_pointer ig[8], no[8];
    size_t ni = 0, nn = 0;
    for (; ignore && ignore[ni]; ni++)
        assert_true(sg_json_pointer_parse(ignore[ni], &ig[ni]));
    for (; noise && noise[nn]; nn++)
        assert_true(sg_json_pointer_parse(noise[nn], &no[nn]));
    memset(s, 0, sizeof *s);
    struct sg_json_diff_opts o = { ig, ni, no, nn, collect, s };
    json_t *ja = j(a), *jb = j(b);
    size_t n_noise = 0, real = sg_json_diff(ja, jb, &o, &n_noise);
    json_decref(ja);
    json_decref(jb);
    for (size_t i = 0; i < ni; i++)
        sg_json_pointer_free(&ig[i]);
    for (size_t i = 0; i < nn; i++)
        sg_json_pointer_free(&no[i]);
    assert_int_equal(real + n_noise, s->n);
    return real;
}

static void test_equal_despite_order_whitespace_and_number_form(void **state)
{
    struct seen s;
    assert_int_equal(diff("{\"a\":1,\"b\":[1,2.5,{\"c\":null}],\"d\":\"x\"}",
                          "{ \"d\" : \"x\",\n \"b\": [1.0, 2.50, {\"c\": null}], \"a\": 1.0 }", NULL, NULL, &s),
                     0);
    assert_int_equal(diff("1e2", "100", NULL, NULL, &s), 0);
    assert_int_equal(diff("[]", "[]", NULL, NULL, &s), 0);
    /* two absent documents (two empty bodies) are equal; one absent is not */
    struct sg_json_diff_opts o = { 0 };
    assert_int_equal(sg_json_diff(NULL, NULL, &o, NULL), 0);
    json_t *one = json_integer(1);
    assert_int_equal(sg_json_diff(one, NULL, &o, NULL), 1);
    json_decref(one);
}

static void test_differences_are_named(void **state)
{
    struct seen s;
    size_t n = diff("{\"a\":1,\"b\":{\"c\":[1,2,3]},\"only_p\":true,\"t\":\"1\"}",
                    "{\"a\":2,\"b\":{\"c\":[1,2]},\"only_s\":false,\"t\":1}", NULL, NULL, &s);
    assert_int_equal(n, 5);
    assert_string_equal(s.ptr[0], "/a");
    assert_string_equal(s.ptr[1], "/b/c/2");
    assert_string_equal(s.norm[1], "/b/c/*");
    assert_true(s.b_missing[1]);
    assert_string_equal(s.ptr[2], "/only_p");
    assert_true(s.b_missing[2]);
    assert_string_equal(s.ptr[3], "/t"); /* "1" is not 1 */
    assert_string_equal(s.ptr[4], "/only_s");
    assert_true(s.a_missing[4]);
}

static void test_root_and_type_changes(void **state)
{
    struct seen s;
    assert_int_equal(diff("{\"a\":1}", "[1]", NULL, NULL, &s), 1);
    assert_string_equal(s.ptr[0], "");
    assert_int_equal(diff("{\"a\":{\"b\":1}}", "{\"a\":[1]}", NULL, NULL, &s), 1);
    assert_string_equal(s.ptr[0], "/a");
    assert_int_equal(diff("true", "false", NULL, NULL, &s), 1);
    assert_int_equal(diff("null", "null", NULL, NULL, &s), 0);
}

static void test_keys_are_escaped_in_pointers(void **state)
{
    struct seen s;
    assert_int_equal(diff("{\"a/b\":{\"~c\":1}}", "{\"a/b\":{\"~c\":2}}", NULL, NULL, &s), 1);
    assert_string_equal(s.ptr[0], "/a~1b/~0c");
    /* and an ignore pointer written the same way leaves it out */
    const char *ig[] = { "/a~1b/~0c", NULL };
    assert_int_equal(diff("{\"a/b\":{\"~c\":1}}", "{\"a/b\":{\"~c\":2}}", ig, NULL, &s), 0);
}

static void test_ignore_with_wildcards(void **state)
{
    struct seen s;
    const char *ig[] = { "/ts", "/items/*/updated_at", NULL };
    size_t n = diff("{\"ts\":1,\"items\":[{\"updated_at\":1,\"p\":1},{\"updated_at\":2,\"p\":2}]}",
                    "{\"ts\":2,\"items\":[{\"updated_at\":9,\"p\":1},{\"updated_at\":8,\"p\":3}]}", ig, NULL, &s);
    assert_int_equal(n, 1);
    assert_string_equal(s.ptr[0], "/items/1/p");
    /* a missing ignored key is no difference either */
    assert_int_equal(diff("{\"ts\":1,\"x\":1}", "{\"x\":1}", ig, NULL, &s), 0);
    /* "" ignores the whole document */
    const char *all[] = { "", NULL };
    assert_int_equal(diff("{\"a\":1}", "[2]", all, NULL, &s), 0);
    /* `*` is one level: /items/ * /updated_at does not reach deeper */
    assert_int_equal(diff("{\"items\":[{\"x\":{\"updated_at\":1}}]}", "{\"items\":[{\"x\":{\"updated_at\":2}}]}", ig,
                          NULL, &s),
                     1);
}

static void test_noise_is_reported_apart(void **state)
{
    struct seen s;
    const char *no[] = { "/meta/*", NULL };
    size_t n = diff("{\"meta\":{\"ts\":1,\"rid\":\"a\"},\"v\":1}", "{\"meta\":{\"ts\":2,\"rid\":\"a\"},\"v\":2}", NULL,
                    no, &s);
    assert_int_equal(n, 1);
    assert_int_equal(s.n, 2);
    assert_true(s.noise[0]);
    assert_string_equal(s.ptr[0], "/meta/ts");
    assert_false(s.noise[1]);
    assert_string_equal(s.ptr[1], "/v");
}

static void test_deep_documents_are_compared_whole(void **state)
{
    /* 200 levels: deeper than the walk names (64), well within jansson's limit */
    char a[1024], b[1024];
    size_t o = 0;
    for (int i = 0; i < 200; i++)
        a[o++] = '[';
    a[o++] = '1';
    for (int i = 0; i < 200; i++)
        a[o++] = ']';
    a[o] = '\0';
    memcpy(b, a, o + 1);
    b[200] = '2';
    struct seen s;
    assert_int_equal(diff(a, a, NULL, NULL, &s), 0);
    assert_int_equal(diff(a, b, NULL, NULL, &s), 1);
    assert_true(strlen(s.ptr[0]) > 0);
}

/* ---- summaries ------------------------------------------------------------ */

static void test_summary_budget(void **state)
{
    struct sg_compare k = { .status = true, .body = SG_CMP_BODY_JSON, .max_body_bytes = 1 << 20 };
    uint64_t used = 0;
    struct sg_cmp_budget b = { &used, 5000 };
    struct sg_cmp *c = sg_cmp_new(&k);
    assert_non_null(c);
    struct sg_headers h;
    sg_headers_init(&h);
    sg_cmp_head(c, SG_CMP_PRIMARY, 200, &h, b);
    char chunk[1000];
    memset(chunk, 'x', sizeof chunk);
    sg_cmp_body(c, SG_CMP_PRIMARY, chunk, sizeof chunk, b);
    assert_true(used > 0 && used <= 5000);
    for (int i = 0; i < 10; i++)
        sg_cmp_body(c, SG_CMP_PRIMARY, chunk, sizeof chunk, b); /* over the budget: stops holding */
    assert_true(used <= 5000);
    sg_cmp_end(c, SG_CMP_PRIMARY);
    sg_cmp_free(c, b);
    assert_int_equal(used, 0); /* everything given back */
    sg_headers_free(&h);
}

static void test_summary_over_max_body_gives_bytes_back(void **state)
{
    struct sg_compare k = { .status = true, .body = SG_CMP_BODY_JSON, .max_body_bytes = 1500 };
    uint64_t used = 0;
    struct sg_cmp_budget b = { &used, 1 << 20 };
    struct sg_cmp *c = sg_cmp_new(&k);
    struct sg_headers h;
    sg_headers_init(&h);
    sg_cmp_head(c, SG_CMP_OTHER, 200, &h, b);
    char chunk[1000] = { 0 };
    sg_cmp_body(c, SG_CMP_OTHER, chunk, sizeof chunk, b);
    assert_true(used >= 1000);
    sg_cmp_body(c, SG_CMP_OTHER, chunk, sizeof chunk, b); /* 2000 > 1500: dropped */
    assert_int_equal(used, 0);
    sg_cmp_free(c, b);
    sg_headers_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pointer_parse),
        cmocka_unit_test(test_pointer_match),
        cmocka_unit_test(test_equal_despite_order_whitespace_and_number_form),
        cmocka_unit_test(test_differences_are_named),
        cmocka_unit_test(test_root_and_type_changes),
        cmocka_unit_test(test_keys_are_escaped_in_pointers),
        cmocka_unit_test(test_ignore_with_wildcards),
        cmocka_unit_test(test_noise_is_reported_apart),
        cmocka_unit_test(test_deep_documents_are_compared_whole),
        cmocka_unit_test(test_summary_budget),
        cmocka_unit_test(test_summary_over_max_body_gives_bytes_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
