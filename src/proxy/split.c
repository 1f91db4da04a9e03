/* Weighted split, sticky hashing and mirror sampling.
 *
 * Like nginx's split_clients, the config compiles weights into cumulative
 * sums (and mirror percentages into 64-bit thresholds) so the request path
 * does a multiply and a few comparisons. Nothing here allocates or keeps
 * state: the random points come from the caller. */
#include "strangler/router.h"

#include <stdint.h>

/* The sticky hash is part of the contract between replicas and releases:
 * every process, build and version must send a key to the same
 * destination. Changing any constant below re-shuffles every sticky user.
 *
 *   FNV-1a 64 (http://www.isthe.com/chongo/tech/comp/fnv/):
 *     h = 0xcbf29ce484222325 (offset basis)
 *     for each byte b of the key: h ^= b; h *= 0x100000001b3 (mod 2^64)
 *   then MurmurHash3's fmix64 finaliser (Austin Appleby, public domain):
 *     h ^= h >> 33; h *= 0xff51afd7ed558ccd;
 *     h ^= h >> 33; h *= 0xc4ceb93fe53b6d63;
 *     h ^= h >> 33;
 *
 * FNV-1a alone mixes the last bytes poorly into the high bits, and the
 * split reads the high bits (see sg_split_pick); fmix64 spreads every
 * input bit over all 64 output bits. The key is hashed as raw bytes: no
 * case folding, no trimming beyond what the header parser did. */
#define SG_FNV64_OFFSET UINT64_C(0xcbf29ce484222325)
#define SG_FNV64_PRIME UINT64_C(0x100000001b3)
#define SG_FMIX64_C1 UINT64_C(0xff51afd7ed558ccd)
#define SG_FMIX64_C2 UINT64_C(0xc4ceb93fe53b6d63)

static uint64_t fnv1a64(struct sg_str key)
{
    uint64_t h = SG_FNV64_OFFSET;
    for (size_t i = 0; i < key.len; i++) {
        h ^= (unsigned char)key.p[i];
        h *= SG_FNV64_PRIME;
    }
    return h;
}

static uint64_t fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= SG_FMIX64_C1;
    h ^= h >> 33;
    h *= SG_FMIX64_C2;
    h ^= h >> 33;
    return h;
}

uint64_t sg_sticky_hash(struct sg_str key)
{
    return fmix64(fnv1a64(key));
}

/* point * total / 2^64, exactly, without division or modulo bias: the
 * result is uniform over [0, total) when the point is uniform over 2^64. */
static uint64_t scale(uint64_t point, uint64_t total)
{
    return (uint64_t)(((unsigned __int128)point * total) >> 64);
}

/* The first destination whose cumulative weight exceeds x. A weight-0
 * destination has the same cum_weight as the one before it, so it is
 * never the first to exceed anything. Binary search: routes may list many
 * destinations, and this runs on every request. */
const struct sg_destination *sg_split_pick(const struct sg_route *r, uint64_t point)
{
    if (!r || r->n_destinations == 0 || r->total_weight == 0)
        return NULL;
    uint64_t x = scale(point, r->total_weight);
    size_t lo = 0, hi = r->n_destinations;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->destinations[mid].cum_weight > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo < r->n_destinations ? &r->destinations[lo] : NULL;
}

bool sg_mirror_selects(const struct sg_mirror *m, struct sg_str method, uint64_t random64)
{
    if (m->n_methods) {
        bool listed = false;
        for (size_t i = 0; i < m->n_methods && !listed; i++)
            listed = sg_str_eq(method, sg_str_c(m->methods[i]));
        if (!listed)
            return false;
    }
    return m->always || random64 < m->threshold;
}
