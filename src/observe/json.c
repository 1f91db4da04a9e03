/* JSON string output for the access log, mismatch lines and the admin API.
 *
 * Input comes from the network (paths, methods, ids), so it may be any
 * bytes: the output must still be one valid JSON string on one line. */
#include "strangler/json.h"

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdint.h>

/* Length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629 section 4,
 * Unicode Table 3-7: no overlongs, no surrogates, nothing above
 * U+10FFFF), or 0 with *bad = length of the maximal ill-formed subpart,
 * which is replaced by one U+FFFD as Unicode 3.9 and WHATWG recommend. */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t need;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        *bad = 1;
        return 0;
    }
    size_t i = 1;
    for (; i < need && i < n; i++) {
        unsigned char b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xbf))
            break;
    }
    if (i == need)
        return need;
    *bad = i;
    return 0;
}

static void add_escape(struct evbuffer *out, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
    if (c == '"' || c == '\\') {
        e[1] = (char)c;
        evbuffer_add(out, e, 2);
    } else {
        evbuffer_add(out, e, sizeof e);
    }
}

/* Copies runs of bytes that need no escaping in one evbuffer_add; stops
 * before a character that would cross max_bytes, never inside one. */
void sg_json_str(struct evbuffer *out, const char *s, size_t len, size_t max_bytes)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t limit = max_bytes && max_bytes < len ? max_bytes : len;
    size_t i = 0, run = 0;
    evbuffer_add(out, "\"", 1);
    while (i < limit) {
        size_t bad = 0, n = utf8_seq(u + i, len - i, &bad);
        size_t step = n ? n : bad;
        if (i + step > limit)
            break;
        bool plain = n > 1 || (n == 1 && u[i] >= 0x20 && u[i] != '"' && u[i] != '\\');
        if (!plain) {
            if (i > run)
                evbuffer_add(out, s + run, i - run);
            if (n)
                add_escape(out, u[i]);
            else
                evbuffer_add(out, "\\ufffd", 6);
            run = i + step;
        }
        i += step;
    }
    if (i > run)
        evbuffer_add(out, s + run, i - run);
    evbuffer_add(out, "\"", 1);
}
