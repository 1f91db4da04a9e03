/* Unit tests for src/proxy/split.c: weighted split, sticky hash, mirror
 * sampling. Random points come from a seeded splitmix64, so every run
 * draws the same numbers and the statistical bounds cannot flake. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "strangler/config.h"
#include "strangler/router.h"

#define DRAWS 100000

/* Sebastiano Vigna's splitmix64: fast, full-period, good enough here. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* A route with n destinations of the given weights, cumulated as the
 * loader compiles them. Upstreams are left NULL: picks are compared by
 * index. */
struct split {
    struct sg_route r;
    struct sg_destination d[8];
};

static void set_weights(struct split *s, const uint32_t *w, size_t n)
{
    memset(s, 0, sizeof *s);
    s->r.name = "split";
    s->r.destinations = s->d;
    s->r.n_destinations = n;
    uint64_t cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += w[i];
        s->d[i].weight = w[i];
        s->d[i].cum_weight = cum;
    }
    s->r.total_weight = cum;
}

static size_t pick(const struct split *s, uint64_t point)
{
    const struct sg_destination *d = sg_split_pick(&s->r, point);
    assert_non_null(d);
    return (size_t)(d - s->d);
}

/* |got - want| within k standard deviations of a binomial(n, p) count. */
static void assert_binomial(size_t got, size_t n, double p, double k)
{
    double mean = (double)n * p, sd = sqrt((double)n * p * (1 - p));
    double diff = (double)got - mean;
    if (diff < 0)
        diff = -diff;
    if (diff > k * sd)
        fail_msg("count %zu, expected %.0f +- %.0f", got, mean, k * sd);
}

static void test_split_distribution_80_20(void **state)
{
    (void)state;
    struct split s;
    set_weights(&s, (const uint32_t[]){ 80, 20 }, 2);
    uint64_t seed = 42;
    size_t count[2] = { 0, 0 };
    for (int i = 0; i < DRAWS; i++)
        count[pick(&s, splitmix64(&seed))]++;
    assert_binomial(count[0], DRAWS, 0.8, 5);
    assert_binomial(count[1], DRAWS, 0.2, 5);
}

static void test_split_distribution_three_way(void **state)
{
    (void)state;
    struct split s;
    set_weights(&s, (const uint32_t[]){ 1, 2, 7 }, 3);
    uint64_t seed = 7;
    size_t count[3] = { 0, 0, 0 };
    for (int i = 0; i < DRAWS; i++)
        count[pick(&s, splitmix64(&seed))]++;
    assert_binomial(count[0], DRAWS, 0.1, 5);
    assert_binomial(count[1], DRAWS, 0.2, 5);
    assert_binomial(count[2], DRAWS, 0.7, 5);
}

static void test_split_weight_zero_never_picked(void **state)
{
    (void)state;
    struct split s;
    uint64_t seed = 1;
    set_weights(&s, (const uint32_t[]){ 0, 50, 0, 50, 0 }, 5);
    for (int i = 0; i < DRAWS; i++) {
        size_t d = pick(&s, splitmix64(&seed));
        assert_true(d == 1 || d == 3);
    }
    /* The edges of the point space, where off-by-ones live. */
    assert_int_equal(pick(&s, 0), 1);
    assert_int_equal(pick(&s, UINT64_MAX), 3);
    assert_int_equal(pick(&s, UINT64_C(1) << 63), 3);
    assert_int_equal(pick(&s, (UINT64_C(1) << 63) - 1), 1);

    set_weights(&s, (const uint32_t[]){ 1, 0 }, 2);
    assert_int_equal(pick(&s, 0), 0);
    assert_int_equal(pick(&s, UINT64_MAX), 0);
    set_weights(&s, (const uint32_t[]){ 0, 1 }, 2);
    assert_int_equal(pick(&s, 0), 1);
    assert_int_equal(pick(&s, UINT64_MAX), 1);
}

static void test_split_degenerate(void **state)
{
    (void)state;
    struct split s;
    set_weights(&s, (const uint32_t[]){ 0, 0 }, 2);
    assert_null(sg_split_pick(&s.r, 123));
    set_weights(&s, NULL, 0);
    assert_null(sg_split_pick(&s.r, 123));
    assert_null(sg_split_pick(NULL, 123));
    /* Large weights: the 128-bit product must not overflow. */
    set_weights(&s, (const uint32_t[]){ UINT32_MAX, UINT32_MAX }, 2);
    assert_int_equal(pick(&s, UINT64_MAX), 1);
    assert_int_equal(pick(&s, (UINT64_C(1) << 63) - 1), 0);
    assert_int_equal(pick(&s, UINT64_C(1) << 63), 1);
}

/* Pinned: these values are the cross-replica contract. They were computed
 * independently from the published definitions (FNV-1a 64 offset
 * 0xcbf29ce484222325, prime 0x100000001b3; murmur3 fmix64). If this test
 * fails, sticky users would move on upgrade: do not "fix" the constants. */
static void test_sticky_hash_pinned(void **state)
{
    (void)state;
    assert_int_equal(sg_sticky_hash(SG_STR_LIT("")), UINT64_C(0x4864b819956661ba));
    assert_int_equal(sg_sticky_hash(SG_STR_LIT("a")), UINT64_C(0xe74f839d94644d09));
    assert_int_equal(sg_sticky_hash(SG_STR_LIT("foobar")), UINT64_C(0xd4dd094a4562817a));
    assert_int_equal(sg_sticky_hash(SG_STR_LIT("user-42")), UINT64_C(0x60fab3bfc0a29251));
    assert_int_equal(sg_sticky_hash((struct sg_str){ "\xff\x00\x01", 3 }), UINT64_C(0x0cc10d5fa5132ff9));
    /* Only the bytes in the range count. */
    assert_int_equal(sg_sticky_hash((struct sg_str){ "user-42-and-more", 7 }), UINT64_C(0x60fab3bfc0a29251));
    /* And the resulting pick: user-42 falls at 37% of the range. */
    struct split s;
    set_weights(&s, (const uint32_t[]){ 37, 63 }, 2);
    assert_int_equal(pick(&s, sg_sticky_hash(SG_STR_LIT("user-42"))), 1);
    set_weights(&s, (const uint32_t[]){ 38, 62 }, 2);
    assert_int_equal(pick(&s, sg_sticky_hash(SG_STR_LIT("user-42"))), 0);
}

static void test_sticky_same_key_same_destination(void **state)
{
    (void)state;
    struct split s1, s2;
    set_weights(&s1, (const uint32_t[]){ 80, 20 }, 2);
    set_weights(&s2, (const uint32_t[]){ 80, 20 }, 2); /* another replica's copy */
    char key[32];
    size_t on_new = 0;
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof key, "session-%d", i);
        struct sg_str k = { key, (size_t)n };
        size_t d = pick(&s1, sg_sticky_hash(k));
        for (int j = 0; j < 3; j++)
            assert_int_equal(pick(&s1, sg_sticky_hash(k)), d);
        assert_int_equal(pick(&s2, sg_sticky_hash(k)), d);
        on_new += d;
    }
    /* Keys spread like random points do: the hash has no bias. */
    assert_binomial(on_new, 10000, 0.2, 5);
}

#define KEYS 10000

/* For [old, new] split on KEYS sticky keys at each weight pair given by
 * weights(step), checks that a key that moved to new never comes back and
 * that the share on new follows the weights. */
static void check_monotonic(void (*weights)(int step, uint32_t w[2]), int steps)
{
    static uint64_t hash[KEYS];
    static bool moved[KEYS];
    char key[32];
    for (int i = 0; i < KEYS; i++) {
        int n = snprintf(key, sizeof key, "user-%d", i);
        hash[i] = sg_sticky_hash((struct sg_str){ key, (size_t)n });
        moved[i] = false;
    }
    for (int step = 0; step <= steps; step++) {
        uint32_t w[2];
        weights(step, w);
        struct split s;
        set_weights(&s, w, 2);
        size_t on_new = 0;
        for (int i = 0; i < KEYS; i++) {
            size_t d = pick(&s, hash[i]);
            if (moved[i] && d == 0)
                fail_msg("key user-%d went back to old at weights %u/%u", i, w[0], w[1]);
            moved[i] = d == 1;
            on_new += d;
        }
        double p = (double)w[1] / (double)(w[0] + w[1]);
        if (w[1] == 0)
            assert_int_equal(on_new, 0);
        else if (w[0] == 0)
            assert_int_equal(on_new, KEYS);
        else
            assert_binomial(on_new, KEYS, p, 5);
    }
}

static void weights_sum_100(int step, uint32_t w[2])
{
    w[0] = (uint32_t)(100 - step);
    w[1] = (uint32_t)step;
}

static void weights_old_fixed(int step, uint32_t w[2])
{
    w[0] = 100;
    w[1] = (uint32_t)step;
}

static void test_sticky_monotonic_sum_100(void **state)
{
    (void)state;
    check_monotonic(weights_sum_100, 100);
}

static void test_sticky_monotonic_old_fixed(void **state)
{
    (void)state;
    check_monotonic(weights_old_fixed, 100);
}

/* The threshold the loader compiles from a percentage. */
static struct sg_mirror mirror_at(double percent)
{
    struct sg_mirror m;
    memset(&m, 0, sizeof m);
    m.percent = percent;
    m.always = percent >= 100;
    m.threshold = m.always ? UINT64_MAX : (uint64_t)(percent / 100.0 * 18446744073709551616.0);
    return m;
}

static size_t sample(const struct sg_mirror *m, const char *method, uint64_t seed)
{
    size_t n = 0;
    for (int i = 0; i < DRAWS; i++)
        n += sg_mirror_selects(m, sg_str_c(method), splitmix64(&seed));
    return n;
}

static void test_mirror_percent(void **state)
{
    (void)state;
    struct sg_mirror m = mirror_at(10);
    assert_binomial(sample(&m, "GET", 3), DRAWS, 0.10, 5);
    m = mirror_at(0.5);
    assert_binomial(sample(&m, "GET", 4), DRAWS, 0.005, 5);
    m = mirror_at(50);
    assert_binomial(sample(&m, "GET", 5), DRAWS, 0.5, 5);
    m = mirror_at(100);
    assert_int_equal(sample(&m, "GET", 6), DRAWS);
    assert_true(sg_mirror_selects(&m, SG_STR_LIT("GET"), UINT64_MAX));
    m = mirror_at(0);
    assert_int_equal(sample(&m, "GET", 7), 0);
    assert_false(sg_mirror_selects(&m, SG_STR_LIT("GET"), 0));
}

static void test_mirror_methods(void **state)
{
    (void)state;
    char *methods[] = { "GET", "HEAD" };
    struct sg_mirror m = mirror_at(100);
    m.methods = methods;
    m.n_methods = 2;
    assert_true(sg_mirror_selects(&m, SG_STR_LIT("GET"), 0));
    assert_true(sg_mirror_selects(&m, SG_STR_LIT("HEAD"), UINT64_MAX));
    assert_false(sg_mirror_selects(&m, SG_STR_LIT("POST"), 0));
    assert_false(sg_mirror_selects(&m, SG_STR_LIT("get"), 0));
    assert_false(sg_mirror_selects(&m, SG_STR_LIT("GETS"), 0));
    assert_false(sg_mirror_selects(&m, SG_STR_LIT(""), 0));
    struct sg_mirror half = mirror_at(50);
    half.methods = methods;
    half.n_methods = 2;
    assert_int_equal(sample(&half, "POST", 8), 0);
    assert_binomial(sample(&half, "HEAD", 9), DRAWS, 0.5, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_distribution_80_20),
        cmocka_unit_test(test_split_distribution_three_way),
        cmocka_unit_test(test_split_weight_zero_never_picked),
        cmocka_unit_test(test_split_degenerate),
        cmocka_unit_test(test_sticky_hash_pinned),
        cmocka_unit_test(test_sticky_same_key_same_destination),
        cmocka_unit_test(test_sticky_monotonic_sum_100),
        cmocka_unit_test(test_sticky_monotonic_old_fixed),
        cmocka_unit_test(test_mirror_percent),
        cmocka_unit_test(test_mirror_methods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
