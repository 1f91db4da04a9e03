/* Byte strings that point into someone else's memory. */
#ifndef STRANGLER_STR_H
#define STRANGLER_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct sg_str {
    const char *p;
    size_t len;
};

#define SG_STR_LIT(s) ((struct sg_str){ (s), sizeof(s) - 1 })
#define SG_STR_NULL ((struct sg_str){ NULL, 0 })

static inline struct sg_str sg_str_c(const char *s)
{
    return (struct sg_str){ s, s ? strlen(s) : 0 };
}

static inline bool sg_str_eq(struct sg_str a, struct sg_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline char sg_ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* ASCII case-insensitive comparison, as HTTP field names need. Inline:
 * field names are compared against fixed names on every request, and most
 * comparisons end at the length. */
static inline bool sg_str_ieq(struct sg_str a, struct sg_str b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++)
        if (a.p[i] != b.p[i] && sg_ascii_lower(a.p[i]) != sg_ascii_lower(b.p[i]))
            return false;
    return true;
}

static inline bool sg_str_ieq_c(struct sg_str a, const char *b)
{
    return sg_str_ieq(a, sg_str_c(b));
}

static inline bool sg_str_has_prefix(struct sg_str s, struct sg_str prefix)
{
    return s.len >= prefix.len && (prefix.len == 0 || memcmp(s.p, prefix.p, prefix.len) == 0);
}

#endif
