/* Per-thread small-block caches: see include/strangler/mem.h. */
#include "strangler/mem.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define SG_MEM_ON 0
#else
#define SG_MEM_ON 1
#endif

#if SG_MEM_ON

/* 18 classes: every 16 bytes up to 128, then two per power of two (192,
 * 256, 384, ... 3,072, 4,096), so that a block wastes little more than
 * malloc's own rounding: libevent keeps one small allocation per open
 * socket (its evmap entry), which idle connections pay for. Every block
 * starts with a header naming its class (BIG: from malloc at its own size,
 * never cached); the caller's pointer follows it, 16-byte aligned as
 * malloc's. */
#define CLASSES 18
#define SMALL 128u /* classes 0..7: 16, 32, ... 128 */
#define BIG 0xffu
#define HEADER 16u
#define CACHE_COUNT 256u /* blocks kept per class */
#define CACHE_BYTES (512u << 10) /* bytes kept per thread, all classes */

struct block {
    union {
        unsigned cls;
        struct block *next; /* while cached */
    } h;
    char pad[HEADER - sizeof(void *)];
};

_Static_assert(sizeof(struct block) == HEADER, "the caller's pointer keeps malloc's 16-byte alignment");

static _Thread_local struct {
    struct block *head[CLASSES];
    unsigned n[CLASSES];
    size_t bytes;
} cache;

static size_t class_size(unsigned cls)
{
    if (cls < 8)
        return 16u * (cls + 1);
    size_t pow = (size_t)256 << ((cls - 8) / 2); /* 256, 512, ... 4,096 */
    return cls % 2 ? pow : pow / 4 * 3;
}

static unsigned class_of(size_t n)
{
    if (n <= SMALL)
        return n ? (unsigned)((n - 1) / 16) : 0;
    /* n - 1 has `bits` significant bits: 2^(bits-1) < n <= 2^bits */
    unsigned bits = (unsigned)(sizeof(unsigned long) * 8) - (unsigned)__builtin_clzl((unsigned long)(n - 1));
    unsigned cls = 8 + 2 * (bits - 8) + (n > ((size_t)3 << (bits - 2)) ? 1u : 0u);
    return cls < CLASSES ? cls : BIG;
}

static void *user(struct block *b)
{
    return (char *)b + HEADER;
}

static struct block *block_of(void *p)
{
    return (struct block *)(void *)((char *)p - HEADER);
}

void *sg_mem_malloc(size_t n)
{
    unsigned cls = class_of(n);
    struct block *b;
    if (cls == BIG) {
        if (n > SIZE_MAX - HEADER)
            return NULL;
        b = malloc(HEADER + n);
    } else if (cache.head[cls]) {
        b = cache.head[cls];
        cache.head[cls] = b->h.next;
        cache.n[cls]--;
        cache.bytes -= class_size(cls);
    } else {
        b = malloc(HEADER + class_size(cls));
    }
    if (!b)
        return NULL;
    b->h.cls = cls;
    return user(b);
}

void sg_mem_free(void *p)
{
    if (!p)
        return;
    struct block *b = block_of(p);
    unsigned cls = b->h.cls;
    if (cls == BIG || cache.n[cls] >= CACHE_COUNT || cache.bytes + class_size(cls) > CACHE_BYTES) {
        free(b);
        return;
    }
    b->h.next = cache.head[cls];
    cache.head[cls] = b;
    cache.n[cls]++;
    cache.bytes += class_size(cls);
}

void *sg_mem_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    void *p = sg_mem_malloc(count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void *sg_mem_realloc(void *p, size_t n)
{
    if (!p)
        return sg_mem_malloc(n);
    struct block *b = block_of(p);
    unsigned cls = b->h.cls;
    if (cls == BIG) {
        if (n > SIZE_MAX - HEADER)
            return NULL;
        struct block *nb = realloc(b, HEADER + n);
        if (!nb)
            return NULL;
        return user(nb); /* the header still says BIG */
    }
    if (n <= class_size(cls))
        return p;
    void *q = sg_mem_malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, class_size(cls));
    sg_mem_free(p);
    return q;
}

void sg_mem_thread_exit(void)
{
    for (unsigned c = 0; c < CLASSES; c++) {
        while (cache.head[c]) {
            struct block *b = cache.head[c];
            cache.head[c] = b->h.next;
            free(b);
        }
        cache.n[c] = 0;
    }
    cache.bytes = 0;
}

size_t sg_mem_thread_cached(void)
{
    return cache.bytes;
}

#else /* AddressSanitizer: plain malloc, every misuse reported */

void *sg_mem_malloc(size_t n)
{
    return malloc(n);
}

void sg_mem_free(void *p)
{
    free(p);
}

void *sg_mem_calloc(size_t count, size_t size)
{
    return calloc(count, size);
}

void *sg_mem_realloc(void *p, size_t n)
{
    return realloc(p, n);
}

void sg_mem_thread_exit(void)
{
}

size_t sg_mem_thread_cached(void)
{
    return 0;
}

#endif

/* ---- the libraries' hooks --------------------------------------------------- */

static void *ng_malloc(size_t n, void *ud)
{
    (void)ud;
    return sg_mem_malloc(n);
}

static void ng_free(void *p, void *ud)
{
    (void)ud;
    sg_mem_free(p);
}

static void *ng_calloc(size_t count, size_t size, void *ud)
{
    (void)ud;
    return sg_mem_calloc(count, size);
}

static void *ng_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    return sg_mem_realloc(p, n);
}

static nghttp2_mem ng_mem = { NULL, ng_malloc, ng_free, ng_calloc, ng_realloc };
static bool installed;

bool sg_mem_install(void)
{
#if SG_MEM_ON
    event_set_mem_functions(sg_mem_malloc, sg_mem_realloc, sg_mem_free);
    installed = true;
#endif
    return installed;
}

nghttp2_mem *sg_mem_nghttp2(void)
{
    return installed ? &ng_mem : NULL;
}
