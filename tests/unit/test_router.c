/* Unit tests for src/proxy/router.c: matching, rewriting, sticky keys.
 * Routes are built by hand, as the loader would compile them. */
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "strangler/config.h"
#include "strangler/headers.h"
#include "strangler/router.h"

static struct sg_route route(const char *name)
{
    struct sg_route r;
    memset(&r, 0, sizeof r);
    r.name = (char *)name;
    return r;
}

static struct sg_config config_of(struct sg_route *routes, size_t n)
{
    struct sg_config c;
    memset(&c, 0, sizeof c);
    c.routes = routes;
    c.n_routes = n;
    for (size_t i = 0; i < n; i++)
        routes[i].index = i;
    return c;
}

static struct sg_request_view req(const char *method, const char *path, const char *host, const struct sg_headers *h)
{
    return (struct sg_request_view){ sg_str_c(method), sg_str_c(path), sg_str_c(host), h };
}

/* True when the single route `r` matches the request. */
static bool matches(struct sg_route *r, struct sg_request_view v)
{
    struct sg_config c = config_of(r, 1);
    return sg_route_match(&c, &v) == r;
}

static bool path_ok(struct sg_route *r, const char *path)
{
    return matches(r, req("GET", path, "h", NULL));
}

static void compile(regex_t *re, const char *src)
{
    assert_int_equal(regcomp(re, src, REG_EXTENDED | REG_NOSUB), 0);
}

static void test_empty_match_matches_all(void **state)
{
    (void)state;
    struct sg_route r = route("default");
    assert_true(path_ok(&r, "/"));
    assert_true(path_ok(&r, "/anything/at/all"));
    assert_true(path_ok(&r, ""));
    assert_true(matches(&r, req("BREW", "*", "", NULL)));
}

static void test_path_exact(void **state)
{
    (void)state;
    struct sg_route r = route("exact");
    r.path_kind = SG_PM_EXACT;
    r.path = "/exact";
    assert_true(path_ok(&r, "/exact"));
    assert_false(path_ok(&r, "/exact/"));
    assert_false(path_ok(&r, "/exac"));
    assert_false(path_ok(&r, "/exactly"));
    assert_false(path_ok(&r, "/EXACT"));
    assert_false(path_ok(&r, ""));
}

static void test_path_prefix_segments(void **state)
{
    (void)state;
    struct sg_route r = route("bar");
    r.path_kind = SG_PM_PREFIX;
    r.path = "/bar";
    assert_true(path_ok(&r, "/bar"));
    assert_true(path_ok(&r, "/bar/"));
    assert_true(path_ok(&r, "/bar/x"));
    assert_true(path_ok(&r, "/bar/x/y"));
    assert_false(path_ok(&r, "/barista"));
    assert_false(path_ok(&r, "/ba"));
    assert_false(path_ok(&r, "/"));
    assert_false(path_ok(&r, "/foo/bar"));
    assert_false(path_ok(&r, "/Bar"));

    r.path = "/bar/";
    assert_true(path_ok(&r, "/bar/"));
    assert_true(path_ok(&r, "/bar/x"));
    assert_false(path_ok(&r, "/bar"));
    assert_false(path_ok(&r, "/barx"));

    r.path = "/";
    assert_true(path_ok(&r, "/"));
    assert_true(path_ok(&r, "/x"));
    assert_false(path_ok(&r, ""));
}

static void test_path_regex(void **state)
{
    (void)state;
    struct sg_route r = route("re");
    r.path_kind = SG_PM_REGEX;
    r.path = "^/bar/[0-9]+$";
    compile(&r.path_re, r.path);
    assert_true(path_ok(&r, "/bar/1"));
    assert_true(path_ok(&r, "/bar/123"));
    assert_false(path_ok(&r, "/bar/"));
    assert_false(path_ok(&r, "/bar/12x"));
    assert_false(path_ok(&r, "/x/bar/12"));
    /* The path is a byte range, not a C string: "$" is its end, and the
     * bytes after it (the query, here) are never looked at. */
    const char *raw = "/bar/12x?q=1";
    struct sg_request_view v = { SG_STR_LIT("GET"), { raw, 7 }, SG_STR_LIT("h"), NULL };
    assert_true(matches(&r, v));
    v.path.len = 8;
    assert_false(matches(&r, v));
    regfree(&r.path_re);

    /* POSIX regexec searches: an unanchored pattern matches anywhere. */
    r.path = "v[0-9]";
    compile(&r.path_re, r.path);
    assert_true(path_ok(&r, "/api/v2/x"));
    assert_false(path_ok(&r, "/api/vx"));
    regfree(&r.path_re);
}

static void test_methods(void **state)
{
    (void)state;
    char *methods[] = { "GET", "POST" };
    struct sg_route r = route("m");
    r.methods = methods;
    r.n_methods = 2;
    assert_true(matches(&r, req("GET", "/", "h", NULL)));
    assert_true(matches(&r, req("POST", "/", "h", NULL)));
    assert_false(matches(&r, req("PUT", "/", "h", NULL)));
    assert_false(matches(&r, req("get", "/", "h", NULL)));
    assert_false(matches(&r, req("GETX", "/", "h", NULL)));
    assert_false(matches(&r, req("GE", "/", "h", NULL)));
    assert_false(matches(&r, req("", "/", "h", NULL)));
}

static void test_host(void **state)
{
    (void)state;
    struct sg_route r = route("host");
    r.host = "api.example.com";
    assert_true(matches(&r, req("GET", "/", "api.example.com", NULL)));
    assert_true(matches(&r, req("GET", "/", "api.example.com:8080", NULL)));
    assert_true(matches(&r, req("GET", "/", "API.Example.COM", NULL)));
    assert_true(matches(&r, req("GET", "/", "Api.Example.Com:443", NULL)));
    assert_false(matches(&r, req("GET", "/", "api.example.com.evil", NULL)));
    assert_false(matches(&r, req("GET", "/", "example.com", NULL)));
    assert_false(matches(&r, req("GET", "/", "xapi.example.com", NULL)));
    assert_false(matches(&r, req("GET", "/", "", NULL)));
    assert_false(matches(&r, req("GET", "/", "api.example.com:8080:1", NULL)));
}

static void test_host_ipv6(void **state)
{
    (void)state;
    struct sg_route r = route("v6");
    r.host = "::1";
    assert_true(matches(&r, req("GET", "/", "[::1]:80", NULL)));
    assert_true(matches(&r, req("GET", "/", "[::1]", NULL)));
    assert_true(matches(&r, req("GET", "/", "::1", NULL)));
    assert_false(matches(&r, req("GET", "/", "[::2]:80", NULL)));
    assert_false(matches(&r, req("GET", "/", "[::1", NULL)));

    r.host = "[2001:db8::a]";
    assert_true(matches(&r, req("GET", "/", "[2001:DB8::A]:8443", NULL)));
    assert_true(matches(&r, req("GET", "/", "[2001:db8::a]", NULL)));
    assert_false(matches(&r, req("GET", "/", "[2001:db8::b]", NULL)));

    r.host = "127.0.0.1";
    assert_true(matches(&r, req("GET", "/", "127.0.0.1:9000", NULL)));
    assert_false(matches(&r, req("GET", "/", "[127.0.0.1]x", NULL)));
}

static struct sg_route header_route(struct sg_header_match *m)
{
    struct sg_route r = route("hdr");
    r.headers = m;
    r.n_headers = 1;
    return r;
}

static bool headers_ok(struct sg_route *r, const struct sg_headers *h)
{
    return matches(r, req("GET", "/", "h", h));
}

static void test_header_exact(void **state)
{
    (void)state;
    struct sg_header_match m = { .name = "x-tenant", .kind = SG_HM_EXACT, .value = "acme" };
    struct sg_route r = header_route(&m);
    struct sg_headers h;
    sg_headers_init(&h);
    assert_false(headers_ok(&r, &h));
    assert_false(headers_ok(&r, NULL));
    sg_headers_add(&h, SG_STR_LIT("X-Tenant"), SG_STR_LIT("other"));
    assert_false(headers_ok(&r, &h));
    /* Any line may satisfy it, not only the first. */
    sg_headers_add(&h, SG_STR_LIT("x-TENANT"), SG_STR_LIT("acme"));
    assert_true(headers_ok(&r, &h));
    sg_headers_free(&h);

    sg_headers_init(&h);
    sg_headers_add(&h, SG_STR_LIT("x-tenant"), SG_STR_LIT("ACME"));
    sg_headers_add(&h, SG_STR_LIT("x-tenant"), SG_STR_LIT("acme2"));
    sg_headers_add(&h, SG_STR_LIT("x-tenants"), SG_STR_LIT("acme"));
    assert_false(headers_ok(&r, &h));
    sg_headers_free(&h);
}

static void test_header_prefix(void **state)
{
    (void)state;
    struct sg_header_match m = { .name = "user-agent", .kind = SG_HM_PREFIX, .value = "Mozilla/" };
    struct sg_route r = header_route(&m);
    struct sg_headers h;
    sg_headers_init(&h);
    sg_headers_add(&h, SG_STR_LIT("User-Agent"), SG_STR_LIT("curl/8.0"));
    assert_false(headers_ok(&r, &h));
    sg_headers_add(&h, SG_STR_LIT("User-Agent"), SG_STR_LIT("Mozilla/5.0 (X11)"));
    assert_true(headers_ok(&r, &h));
    sg_headers_free(&h);

    sg_headers_init(&h);
    sg_headers_add(&h, SG_STR_LIT("User-Agent"), SG_STR_LIT("Mozilla"));
    assert_false(headers_ok(&r, &h));
    sg_headers_add(&h, SG_STR_LIT("User-Agent"), SG_STR_LIT("mozilla/5.0"));
    assert_false(headers_ok(&r, &h));
    sg_headers_free(&h);
}

static void test_header_regex(void **state)
{
    (void)state;
    struct sg_header_match m = { .name = "x-version", .kind = SG_HM_REGEX, .value = "^v[2-9]$" };
    compile(&m.re, m.value);
    struct sg_route r = header_route(&m);
    struct sg_headers h;
    sg_headers_init(&h);
    sg_headers_add(&h, SG_STR_LIT("x-version"), SG_STR_LIT("v1"));
    assert_false(headers_ok(&r, &h));
    /* Value is a byte range: "v3" followed by more bytes must not match. */
    sg_headers_add(&h, SG_STR_LIT("x-version"), (struct sg_str){ "v3x", 3 });
    assert_false(headers_ok(&r, &h));
    sg_headers_add(&h, SG_STR_LIT("X-Version"), (struct sg_str){ "v3x", 2 });
    assert_true(headers_ok(&r, &h));
    sg_headers_free(&h);
    regfree(&m.re);
}

static void test_header_present(void **state)
{
    (void)state;
    struct sg_header_match m = { .name = "x-debug", .kind = SG_HM_PRESENT, .present = true };
    struct sg_route r = header_route(&m);
    struct sg_headers h;
    sg_headers_init(&h);
    sg_headers_add(&h, SG_STR_LIT("x-debug-not"), SG_STR_LIT("1"));
    assert_false(headers_ok(&r, &h));
    assert_false(headers_ok(&r, NULL));
    m.present = false;
    assert_true(headers_ok(&r, &h));
    assert_true(headers_ok(&r, NULL));
    sg_headers_add(&h, SG_STR_LIT("X-Debug"), SG_STR_LIT("")); /* empty value still present */
    assert_false(headers_ok(&r, &h));
    m.present = true;
    assert_true(headers_ok(&r, &h));
    sg_headers_free(&h);
}

static void test_all_conditions_must_hold(void **state)
{
    (void)state;
    char *methods[] = { "GET" };
    struct sg_header_match hm[] = {
        { .name = "x-tenant", .kind = SG_HM_EXACT, .value = "acme" },
        { .name = "x-debug", .kind = SG_HM_PRESENT, .present = false },
    };
    struct sg_route r = route("all");
    r.path_kind = SG_PM_PREFIX;
    r.path = "/bar";
    r.methods = methods;
    r.n_methods = 1;
    r.host = "api.example.com";
    r.headers = hm;
    r.n_headers = 2;
    struct sg_headers h;
    sg_headers_init(&h);
    sg_headers_add(&h, SG_STR_LIT("x-tenant"), SG_STR_LIT("acme"));
    assert_true(matches(&r, req("GET", "/bar/1", "api.example.com", &h)));
    assert_false(matches(&r, req("POST", "/bar/1", "api.example.com", &h)));
    assert_false(matches(&r, req("GET", "/baz", "api.example.com", &h)));
    assert_false(matches(&r, req("GET", "/bar/1", "example.com", &h)));
    sg_headers_add(&h, SG_STR_LIT("x-debug"), SG_STR_LIT("1"));
    assert_false(matches(&r, req("GET", "/bar/1", "api.example.com", &h)));
    sg_headers_free(&h);
}

static void test_first_match_wins(void **state)
{
    (void)state;
    struct sg_route routes[3] = { route("exact"), route("prefix"), route("default") };
    routes[0].path_kind = SG_PM_EXACT;
    routes[0].path = "/bar/special";
    routes[1].path_kind = SG_PM_PREFIX;
    routes[1].path = "/bar";
    struct sg_config c = config_of(routes, 3);
    struct sg_request_view v = req("GET", "/bar/special", "h", NULL);
    assert_ptr_equal(sg_route_match(&c, &v), &routes[0]);
    v = req("GET", "/bar/other", "h", NULL);
    assert_ptr_equal(sg_route_match(&c, &v), &routes[1]);
    v = req("GET", "/other", "h", NULL);
    assert_ptr_equal(sg_route_match(&c, &v), &routes[2]);

    /* A catch-all listed first shadows everything after it. */
    struct sg_route swapped[2] = { route("default"), route("exact") };
    swapped[1].path_kind = SG_PM_EXACT;
    swapped[1].path = "/bar";
    c = config_of(swapped, 2);
    v = req("GET", "/bar", "h", NULL);
    assert_ptr_equal(sg_route_match(&c, &v), &swapped[0]);
}

static void test_no_match(void **state)
{
    (void)state;
    struct sg_route r = route("only");
    r.path_kind = SG_PM_EXACT;
    r.path = "/only";
    struct sg_config c = config_of(&r, 1);
    struct sg_request_view v = req("GET", "/other", "h", NULL);
    assert_null(sg_route_match(&c, &v));
    c.n_routes = 0;
    v = req("GET", "/only", "h", NULL);
    assert_null(sg_route_match(&c, &v));
    assert_null(sg_route_match(NULL, &v));
}

/* Rewrites `path` with prefix -> repl and checks the result. */
static void check_rewrite(const char *prefix, const char *repl, const char *path, const char *want)
{
    struct sg_route r = route("rw");
    r.path_kind = SG_PM_PREFIX;
    r.path = (char *)prefix;
    r.rewrite_prefix = (char *)repl;
    char buf[128];
    size_t n = sg_route_rewrite(&r, sg_str_c(path), buf, sizeof buf);
    assert_int_not_equal(n, SIZE_MAX);
    assert_int_equal(n, strlen(want));
    assert_string_equal(buf, want);
}

static void test_rewrite(void **state)
{
    (void)state;
    check_rewrite("/bar", "/", "/bar", "/");
    check_rewrite("/bar", "/", "/bar/", "/");
    check_rewrite("/bar", "/", "/bar/x/y", "/x/y");
    check_rewrite("/bar", "/v2", "/bar/x", "/v2/x");
    check_rewrite("/bar", "/v2", "/bar", "/v2");
    check_rewrite("/bar", "/v2", "/bar/", "/v2/");
    check_rewrite("/bar", "/v2/", "/bar/x", "/v2/x");
    check_rewrite("/bar", "/v2/", "/bar", "/v2/");
    check_rewrite("/bar", "", "/bar/x", "/x");
    check_rewrite("/bar", "", "/bar", "/");
    check_rewrite("/bar/", "/", "/bar/", "/");
    check_rewrite("/bar/", "/", "/bar/x", "/x");
    check_rewrite("/bar/", "/", "/bar/x/", "/x/");
    check_rewrite("/bar/", "/v2", "/bar/x", "/v2/x");
    check_rewrite("/bar/", "/v2/", "/bar/x", "/v2/x");
    check_rewrite("/", "/v2", "/x", "/v2/x");
    check_rewrite("/", "/v2/", "/x", "/v2/x");
    check_rewrite("/a/b", "/c", "/a/b/d/e", "/c/d/e");
}

static void test_rewrite_none_and_small_buffer(void **state)
{
    (void)state;
    struct sg_route r = route("plain");
    r.path_kind = SG_PM_PREFIX;
    r.path = "/bar";
    char buf[8];
    /* No rewrite: the path is copied. */
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/bar/x"), buf, sizeof buf), 6);
    assert_string_equal(buf, "/bar/x");
    /* Exactly fitting needs room for the NUL. */
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/bar/xy"), buf, sizeof buf), 7);
    assert_string_equal(buf, "/bar/xy");
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/bar/xyz"), buf, sizeof buf), SIZE_MAX);
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/"), buf, 0), SIZE_MAX);

    r.rewrite_prefix = "/version2";
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/bar"), buf, sizeof buf), SIZE_MAX);
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/bar/x"), buf, sizeof buf), SIZE_MAX);
    r.rewrite_prefix = "/v2";
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/bar/abc"), buf, sizeof buf), 7);
    assert_string_equal(buf, "/v2/abc");
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/bar/abcd"), buf, sizeof buf), SIZE_MAX);
    r.rewrite_prefix = "/";
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/bar"), buf, 2), 1);
    assert_string_equal(buf, "/");
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/bar"), buf, 1), SIZE_MAX);

    /* A rewrite on a route that is not a prefix match does nothing. */
    r.path_kind = SG_PM_EXACT;
    assert_int_equal(sg_route_rewrite(&r, SG_STR_LIT("/bar"), buf, sizeof buf), 4);
    assert_string_equal(buf, "/bar");
}

static void test_sticky_header(void **state)
{
    (void)state;
    struct sg_route r = route("s");
    struct sg_headers h;
    struct sg_str key;
    sg_headers_init(&h);
    sg_headers_add(&h, SG_STR_LIT("X-User-Id"), SG_STR_LIT("u-1"));
    sg_headers_add(&h, SG_STR_LIT("x-user-id"), SG_STR_LIT("u-2"));
    assert_false(sg_sticky_key(&r, &h, &key)); /* route not sticky */
    r.sticky_kind = SG_STICKY_HEADER;
    r.sticky_name = "x-user-id";
    assert_true(sg_sticky_key(&r, &h, &key));
    assert_true(sg_str_eq(key, SG_STR_LIT("u-1")));
    r.sticky_name = "x-other";
    assert_false(sg_sticky_key(&r, &h, &key));
    sg_headers_free(&h);

    sg_headers_init(&h);
    sg_headers_add(&h, SG_STR_LIT("x-other"), SG_STR_LIT(""));
    assert_false(sg_sticky_key(&r, &h, &key)); /* empty = no key */
    sg_headers_free(&h);
}

static bool cookie_key(const char *name, const char *const *cookies, size_t n, struct sg_str *key)
{
    struct sg_route r = route("c");
    r.sticky_kind = SG_STICKY_COOKIE;
    r.sticky_name = (char *)name;
    struct sg_headers h;
    sg_headers_init(&h);
    sg_headers_add(&h, SG_STR_LIT("Accept"), SG_STR_LIT("session=not-a-cookie"));
    for (size_t i = 0; i < n; i++)
        sg_headers_add(&h, SG_STR_LIT("Cookie"), sg_str_c(cookies[i]));
    bool ok = sg_sticky_key(&r, &h, key);
    sg_headers_free(&h);
    return ok;
}

static void check_cookie(const char *name, const char *const *cookies, size_t n, const char *want)
{
    struct sg_str key = SG_STR_NULL;
    bool ok = cookie_key(name, cookies, n, &key);
    if (!want) {
        assert_false(ok);
        return;
    }
    assert_true(ok);
    assert_int_equal(key.len, strlen(want));
    assert_memory_equal(key.p, want, key.len);
}

static void test_sticky_cookie(void **state)
{
    (void)state;
    const char *one[] = { "a=1; session=abc; b=2" };
    check_cookie("session", one, 1, "abc");
    check_cookie("a", one, 1, "1");
    check_cookie("b", one, 1, "2");
    check_cookie("Session", one, 1, NULL); /* names are case-sensitive */
    check_cookie("sess", one, 1, NULL);
    check_cookie("ession", one, 1, NULL);

    const char *quoted[] = { "session=\"q v\"" };
    check_cookie("session", quoted, 1, "q v");
    const char *half_quoted[] = { "session=\"abc" };
    check_cookie("session", half_quoted, 1, "\"abc");

    const char *spread[] = { "a=1", "b=2;c=3", "session=xyz" }; /* HTTP/2 splits cookies */
    check_cookie("session", spread, 3, "xyz");
    check_cookie("c", spread, 3, "3");

    const char *messy[] = { " ; junk ;  session = v1 ;; session=v2" };
    check_cookie("session", messy, 1, "v1"); /* first occurrence wins */

    const char *eq_in_value[] = { "session=a=b==; x=y" };
    check_cookie("session", eq_in_value, 1, "a=b==");

    const char *empty[] = { "session=; other=1" };
    check_cookie("session", empty, 1, NULL);
    const char *empty_then[] = { "session=", "session=late" };
    check_cookie("session", empty_then, 2, "late");
    const char *none[] = { "" };
    check_cookie("session", none, 1, NULL);
    check_cookie("session", none, 0, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_match_matches_all),
        cmocka_unit_test(test_path_exact),
        cmocka_unit_test(test_path_prefix_segments),
        cmocka_unit_test(test_path_regex),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_host_ipv6),
        cmocka_unit_test(test_header_exact),
        cmocka_unit_test(test_header_prefix),
        cmocka_unit_test(test_header_regex),
        cmocka_unit_test(test_header_present),
        cmocka_unit_test(test_all_conditions_must_hold),
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_no_match),
        cmocka_unit_test(test_rewrite),
        cmocka_unit_test(test_rewrite_none_and_small_buffer),
        cmocka_unit_test(test_sticky_header),
        cmocka_unit_test(test_sticky_cookie),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
