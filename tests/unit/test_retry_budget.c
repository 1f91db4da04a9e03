/* Unit tests for src/proxy/retry_budget.c: the token-bucket arithmetic
 * and the idempotency rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "strangler/headers.h"
#include "strangler/retry_budget.h"

static unsigned drain(struct sg_retry_budget *b, uint32_t min, unsigned workers, uint64_t now)
{
    unsigned n = 0;
    while (sg_retry_budget_withdraw(b, min, workers, now))
        n++;
    return n;
}

static void starts_full_with_the_cap(void **state)
{
    (void)state;
    struct sg_retry_budget b = { 0 };
    /* 10 s of 10/s over 2 workers = 50 tokens per worker */
    assert_int_equal(sg_retry_budget_cap(10, 2), 50000);
    assert_int_equal(drain(&b, 10, 2, 1000), 50);
    /* the floor never goes below 10 tokens */
    assert_int_equal(sg_retry_budget_cap(0, 4), 10000);
    struct sg_retry_budget c = { 0 };
    assert_int_equal(drain(&c, 0, 4, 1000), 10);
}

static void percent_of_requests(void **state)
{
    (void)state;
    struct sg_retry_budget b = { 0 };
    drain(&b, 0, 1, 1000);
    /* 20%: five requests earn one retry */
    for (int i = 0; i < 40; i++)
        sg_retry_budget_deposit(&b, 20, 0, 1);
    assert_int_equal(drain(&b, 0, 1, 1000), 8);
    /* interleaved as under load: one retry per five requests, however many */
    unsigned n = 0;
    for (int i = 0; i < 1000; i++) {
        sg_retry_budget_deposit(&b, 20, 0, 1);
        n += sg_retry_budget_withdraw(&b, 0, 1, 1000);
    }
    assert_int_equal(n, 200);
    /* time earns nothing without a floor */
    assert_int_equal(drain(&b, 0, 1, 60000), 0);
    /* deposits are capped too */
    for (int i = 0; i < 1000; i++)
        sg_retry_budget_deposit(&b, 100, 0, 1);
    assert_int_equal(drain(&b, 0, 1, 60000), 10);
}

static void floor_per_second_shared_by_workers(void **state)
{
    (void)state;
    struct sg_retry_budget b = { 0 };
    uint64_t t = 5000;
    drain(&b, 10, 2, t);
    /* 10/s for the process, 2 workers: 5 per second per worker */
    assert_int_equal(drain(&b, 10, 2, t + 1000), 5);
    /* many small steps lose nothing to rounding */
    unsigned n = 0;
    for (uint64_t ms = 1; ms <= 2000; ms++)
        n += drain(&b, 10, 2, t + 1000 + ms);
    assert_int_equal(n, 10);
    /* a long quiet spell refills to the cap, not beyond */
    assert_int_equal(drain(&b, 10, 2, t + 3600 * 1000), 50);
}

static void clock_going_backwards(void **state)
{
    (void)state;
    struct sg_retry_budget b = { 0 };
    drain(&b, 10, 1, 10000);
    assert_int_equal(drain(&b, 10, 1, 9000), 0);
    assert_int_equal(drain(&b, 10, 1, 10100), 1);
}

static void idempotency(void **state)
{
    (void)state;
    assert_true(sg_retry_idempotent(SG_STR_LIT("GET"), NULL));
    assert_true(sg_retry_idempotent(SG_STR_LIT("PUT"), NULL));
    assert_true(sg_retry_idempotent(SG_STR_LIT("DELETE"), NULL));
    assert_true(sg_retry_idempotent(SG_STR_LIT("OPTIONS"), NULL));
    assert_false(sg_retry_idempotent(SG_STR_LIT("POST"), NULL));
    assert_false(sg_retry_idempotent(SG_STR_LIT("PATCH"), NULL));
    assert_false(sg_retry_idempotent(SG_STR_LIT("GETX"), NULL));
    assert_false(sg_retry_idempotent(SG_STR_LIT("get"), NULL)); /* methods are case-sensitive */
    struct sg_headers h;
    sg_headers_init(&h);
    assert_false(sg_retry_idempotent(SG_STR_LIT("POST"), &h));
    sg_headers_add(&h, SG_STR_LIT("idempotency-key"), SG_STR_LIT("abc"));
    assert_true(sg_retry_idempotent(SG_STR_LIT("POST"), &h));
    sg_headers_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(starts_full_with_the_cap),
        cmocka_unit_test(percent_of_requests),
        cmocka_unit_test(floor_per_second_shared_by_workers),
        cmocka_unit_test(clock_going_backwards),
        cmocka_unit_test(idempotency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
