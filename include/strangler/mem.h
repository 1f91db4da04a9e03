/* Per-thread caches of small blocks for libevent and nghttp2.
 *
 * Every request allocates and frees a handful of small objects inside
 * libevent (evbuffer chains, buffers) and nghttp2 (streams, frames queued
 * for sending). With many requests in flight they come and go in bursts
 * larger than glibc's per-thread cache (seven blocks per size), so most of
 * them went through malloc's shared bins. sg_mem keeps freed blocks of
 * 18 size classes (16 bytes to 4 KiB) in per-thread lists, bounded in
 * count and bytes, and hands them out again; larger requests go to
 * malloc. A block freed on another thread joins that
 * thread's lists. No locks. The proxy's own per-request allocations
 * (header arrays, HTTP/2 streams, rewritten targets, deferred frees) use
 * it too; what sg_mem_*alloc() returns must go back through sg_mem_free()
 * or sg_mem_realloc(), never free().
 *
 * Under AddressSanitizer (STRANGLER_SANITIZE builds) the functions are
 * malloc's and nothing is installed, so that every use after free is still
 * caught. */
#ifndef STRANGLER_MEM_H
#define STRANGLER_MEM_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>

void *sg_mem_malloc(size_t n);
void *sg_mem_calloc(size_t count, size_t size);
void *sg_mem_realloc(void *p, size_t n);
void sg_mem_free(void *p);

/* Makes libevent allocate through sg_mem; call first thing in main(),
 * before any other libevent call. Returns whether it did (not under
 * AddressSanitizer). */
bool sg_mem_install(void);

/* For nghttp2_session_*_new3(): sg_mem when installed, else NULL (which
 * nghttp2 takes as malloc). */
nghttp2_mem *sg_mem_nghttp2(void);

/* Gives the calling thread's cached blocks back to malloc (thread exit). */
void sg_mem_thread_exit(void);
/* Bytes of blocks the calling thread's cache holds (0 under ASan). */
size_t sg_mem_thread_cached(void);

#endif
