/* Unit tests for the per-thread small-block caches (src/util/mem.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "strangler/mem.h"

#if defined(__SANITIZE_ADDRESS__)
#define CACHED 0 /* sg_mem is malloc itself: nothing is kept */
#else
#define CACHED 1
#endif

/* Every size from 0 to past the largest class: aligned as malloc's, the
 * whole size writable, and realloc keeps the bytes whichever class it
 * moves to. */
static void test_sizes_and_realloc(void **state)
{
    (void)state;
    for (size_t n = 0; n <= 5000; n += (n < 300 ? 1 : 37)) {
        unsigned char *p = sg_mem_malloc(n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xa5, n);
        size_t grown = n * 2 + 1;
        p = sg_mem_realloc(p, grown);
        assert_non_null(p);
        for (size_t i = 0; i < n; i++)
            if (p[i] != 0xa5)
                fail_msg("byte %zu of %zu lost growing to %zu", i, n, grown);
        memset(p, 0x5a, grown);
        size_t shrunk = n / 2 + 1; /* (what realloc does with 0 is malloc's to choose) */
        p = sg_mem_realloc(p, shrunk);
        assert_non_null(p);
        for (size_t i = 0; i < shrunk; i++)
            if (p[i] != 0x5a)
                fail_msg("byte %zu lost shrinking %zu to %zu", i, grown, shrunk);
        sg_mem_free(p);
    }
    void *q = sg_mem_realloc(NULL, 10);
    assert_non_null(q);
    sg_mem_free(q);
    sg_mem_free(NULL);
    sg_mem_thread_exit();
}

static void test_calloc_zeroes_reused_blocks(void **state)
{
    (void)state;
    unsigned char *p = sg_mem_malloc(100);
    assert_non_null(p);
    memset(p, 0xff, 100);
    sg_mem_free(p);
    unsigned char *q = sg_mem_calloc(10, 10);
    assert_non_null(q);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(q[i], 0);
    sg_mem_free(q);
    if (CACHED) /* (AddressSanitizer aborts on such a request) */
        assert_null(sg_mem_calloc(SIZE_MAX / 2, 4)); /* overflow refused */
    sg_mem_thread_exit();
}

/* A freed block of a class comes back for the next request of that class
 * (that is the point); a large one never does. */
static void test_blocks_are_reused(void **state)
{
    (void)state;
    void *a = sg_mem_malloc(200);
    sg_mem_free(a);
    void *b = sg_mem_malloc(250); /* same class: 193 to 256 bytes */
    if (CACHED)
        assert_ptr_equal(a, b);
    sg_mem_free(b);
    void *big = sg_mem_malloc(100000);
    assert_non_null(big);
    memset(big, 1, 100000);
    big = sg_mem_realloc(big, 200000);
    assert_non_null(big);
    assert_int_equal(((unsigned char *)big)[99999], 1);
    sg_mem_free(big);
    sg_mem_thread_exit();
}

/* The cache is bounded: of 1,000 blocks of one class freed at once, 256
 * are kept; of 1,000 of the largest class, no more than 512 KiB in all. What was
 * kept comes back first. */
static void test_cache_is_bounded(void **state)
{
    (void)state;
    enum { N = 1000 };
    void **v = malloc(N * sizeof *v);
    assert_non_null(v);
    /* 256 blocks of 64 bytes; then 4 KiB blocks until 512 KiB in all */
    size_t sizes[] = { 64, 4096 }, kept[] = { 256 * 64, 512u << 10 };
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < N; i++) {
            v[i] = sg_mem_malloc(sizes[k]);
            assert_non_null(v[i]);
        }
        for (int i = 0; i < N; i++)
            sg_mem_free(v[i]);
        if (CACHED)
            assert_int_equal(sg_mem_thread_cached(), kept[k]);
        else
            assert_int_equal(sg_mem_thread_cached(), 0);
    }
    size_t before = sg_mem_thread_cached();
    void *p = sg_mem_malloc(4000);
    if (CACHED) { /* one of the kept ones, out of the cache */
        bool kept_one = false;
        for (int i = 0; i < N; i++)
            kept_one = kept_one || v[i] == p;
        assert_true(kept_one);
        assert_int_equal(sg_mem_thread_cached(), before - 4096);
    }
    sg_mem_free(p);
    sg_mem_thread_exit();
    assert_int_equal(sg_mem_thread_cached(), 0);
    free(v);
}

static void *free_there(void *arg)
{
    sg_mem_free(arg);
    void *p = sg_mem_malloc(300); /* that thread's cache now holds it */
    sg_mem_free(p);
    sg_mem_thread_exit();
    return p;
}

/* A block allocated on one thread and freed on another is that thread's. */
static void test_free_on_another_thread(void **state)
{
    (void)state;
    void *p = sg_mem_malloc(300);
    assert_non_null(p);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, free_there, p), 0);
    void *seen = NULL;
    assert_int_equal(pthread_join(t, &seen), 0);
    if (CACHED)
        assert_ptr_equal(seen, p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_and_realloc),
        cmocka_unit_test(test_calloc_zeroes_reused_blocks),
        cmocka_unit_test(test_blocks_are_reused),
        cmocka_unit_test(test_cache_is_bounded),
        cmocka_unit_test(test_free_on_another_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
