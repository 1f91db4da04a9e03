/* Unit tests for src/upstream/health.c: the active health-check state
 * machine and passive outlier detection (counting and ejection). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "strangler/health.h"
#include "strangler/pool.h"

static void hc_first_result_decides(void **state)
{
    (void)state;
    struct sg_hc_state s;
    sg_hc_init(&s);
    assert_true(s.healthy);
    assert_false(sg_hc_record(&s, true, 2, 3)); /* up at start: stays */
    assert_true(s.healthy);

    sg_hc_init(&s);
    assert_true(sg_hc_record(&s, false, 2, 3)); /* down at start: out after one check */
    assert_false(s.healthy);
}

static void hc_thresholds(void **state)
{
    (void)state;
    struct sg_hc_state s;
    sg_hc_init(&s);
    sg_hc_record(&s, true, 2, 3);
    /* unhealthy_threshold 3: two failures keep it, the third takes it out */
    assert_false(sg_hc_record(&s, false, 2, 3));
    assert_false(sg_hc_record(&s, false, 2, 3));
    assert_true(s.healthy);
    assert_true(sg_hc_record(&s, false, 2, 3));
    assert_false(s.healthy);
    /* healthy_threshold 2: a success between failures restarts the count */
    assert_false(sg_hc_record(&s, true, 2, 3));
    assert_false(sg_hc_record(&s, false, 2, 3));
    assert_false(sg_hc_record(&s, true, 2, 3));
    assert_false(s.healthy);
    assert_true(sg_hc_record(&s, true, 2, 3));
    assert_true(s.healthy);
    /* a failure streak broken by a success starts over */
    sg_hc_record(&s, false, 2, 3);
    sg_hc_record(&s, false, 2, 3);
    sg_hc_record(&s, true, 2, 3);
    sg_hc_record(&s, false, 2, 3);
    sg_hc_record(&s, false, 2, 3);
    assert_true(s.healthy);
}

static void hc_threshold_one(void **state)
{
    (void)state;
    struct sg_hc_state s;
    sg_hc_init(&s);
    sg_hc_record(&s, true, 1, 1);
    assert_true(sg_hc_record(&s, false, 1, 1));
    assert_true(sg_hc_record(&s, true, 1, 1));
    assert_true(s.healthy);
}

static void outlier_counts_consecutive_failures(void **state)
{
    (void)state;
    struct sg_endpoint e;
    memset(&e, 0, sizeof e);
    assert_int_equal(sg_outlier_record(&e, 3, SG_OUTCOME_FAIL), SG_OUTLIER_KEEP);
    assert_int_equal(sg_outlier_record(&e, 3, SG_OUTCOME_FAIL), SG_OUTLIER_KEEP);
    assert_int_equal(sg_outlier_record(&e, 3, SG_OUTCOME_OK), SG_OUTLIER_KEEP); /* streak broken */
    assert_int_equal(sg_outlier_record(&e, 3, SG_OUTCOME_FAIL), SG_OUTLIER_KEEP);
    assert_int_equal(sg_outlier_record(&e, 3, SG_OUTCOME_NONE), SG_OUTLIER_KEEP); /* says nothing */
    assert_int_equal(sg_outlier_record(&e, 3, SG_OUTCOME_FAIL), SG_OUTLIER_KEEP);
    /* answers among the failures: eject only while others remain */
    assert_int_equal(sg_outlier_record(&e, 3, SG_OUTCOME_CONNECT_FAIL), SG_OUTLIER_EJECT_IF_OTHERS);
}

static void outlier_connect_failures_eject_any(void **state)
{
    (void)state;
    struct sg_endpoint e;
    memset(&e, 0, sizeof e);
    assert_int_equal(sg_outlier_record(&e, 2, SG_OUTCOME_CONNECT_FAIL), SG_OUTLIER_KEEP);
    assert_int_equal(sg_outlier_record(&e, 2, SG_OUTCOME_CONNECT_FAIL), SG_OUTLIER_EJECT_ANY);
    /* a 5xx in between makes the streak an answering one */
    memset(&e, 0, sizeof e);
    sg_outlier_record(&e, 2, SG_OUTCOME_CONNECT_FAIL);
    assert_int_equal(sg_outlier_record(&e, 2, SG_OUTCOME_FAIL), SG_OUTLIER_EJECT_IF_OTHERS);
}

static void outlier_eject_and_return(void **state)
{
    (void)state;
    struct sg_endpoint e;
    memset(&e, 0, sizeof e);
    uint64_t now = 1000000, cached;
    sg_outlier_record(&e, 1, SG_OUTCOME_FAIL);
    assert_true(sg_outlier_eject(&e, 500, now));
    assert_int_equal(atomic_load(&e.fails), 0); /* comes back with a clean slate */
    assert_false(sg_outlier_eject(&e, 500, now + 10)); /* already out: counted once */
    cached = now + 499;
    assert_false(sg_endpoint_usable(&e, false, true, &cached));
    cached = now + 500;
    assert_true(sg_endpoint_usable(&e, false, true, &cached));
    cached = now + 10;
    assert_true(sg_endpoint_usable(&e, false, false, &cached)); /* no outlier_detection: ignored */
    assert_true(sg_outlier_eject(&e, 500, now + 600)); /* a later streak ejects again */
}

static void usable_health_check_flag(void **state)
{
    (void)state;
    struct sg_endpoint e;
    memset(&e, 0, sizeof e);
    uint64_t now = 0;
    atomic_store(&e.hc_down, true);
    assert_false(sg_endpoint_usable(&e, true, false, &now));
    assert_true(sg_endpoint_usable(&e, false, false, &now)); /* health_check gone from the config */
    assert_int_equal(now, 0); /* no clock read when nothing is time-bound */
}

static void outcome_of_errors(void **state)
{
    (void)state;
    assert_int_equal(sg_outcome_of_error(sg_err_connect), SG_OUTCOME_CONNECT_FAIL);
    assert_int_equal(sg_outcome_of_error(sg_err_connect_timeout), SG_OUTCOME_CONNECT_FAIL);
    assert_int_equal(sg_outcome_of_error(sg_err_tls), SG_OUTCOME_CONNECT_FAIL);
    assert_int_equal(sg_outcome_of_error(sg_err_reset), SG_OUTCOME_FAIL);
    assert_int_equal(sg_outcome_of_error(sg_err_timeout), SG_OUTCOME_FAIL);
    assert_int_equal(sg_outcome_of_error(sg_err_overloaded), SG_OUTCOME_NONE);
    assert_int_equal(sg_outcome_of_error(sg_err_no_endpoint), SG_OUTCOME_NONE);
    assert_int_equal(sg_outcome_of_error(sg_err_no_fd), SG_OUTCOME_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hc_first_result_decides),
        cmocka_unit_test(hc_thresholds),
        cmocka_unit_test(hc_threshold_one),
        cmocka_unit_test(outlier_counts_consecutive_failures),
        cmocka_unit_test(outlier_connect_failures_eject_any),
        cmocka_unit_test(outlier_eject_and_return),
        cmocka_unit_test(usable_health_check_flag),
        cmocka_unit_test(outcome_of_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
