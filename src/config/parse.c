/* The grammars of scalar values: integers, durations, sizes, addresses,
 * host names and HTTP tokens. Pure functions, shared with the CLI and tests
 * through the sg_parse_* wrappers declared in strangler/config.h. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

const char cfg_bad_syntax[] = "syntax";
const char cfg_bad_overflow[] = "overflow";

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Decimal digits only: no sign, no spaces, no 0x; overflow is an error,
 * never a wrap-around. Parses the leading digits of s; *end is set to the
 * first byte after them. */
static const char *parse_digits(const char *s, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    const char *p = s;
    if (!is_digit(*p))
        return cfg_bad_syntax;
    for (; is_digit(*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return cfg_bad_overflow;
        v = v * 10 + d;
    }
    *out = v;
    *end = p;
    return NULL;
}

const char *cfg_parse_uint(const char *s, uint64_t *out)
{
    const char *end;
    const char *err = parse_digits(s, out, &end);
    if (err)
        return err;
    return *end ? cfg_bad_syntax : NULL;
}

struct unit {
    const char *suffix;
    uint64_t factor;
};

static const char *apply_unit(uint64_t v, const char *suffix, const struct unit *units, uint64_t *out)
{
    for (const struct unit *u = units; u->suffix; u++) {
        if (strcmp(suffix, u->suffix) != 0)
            continue;
        if (v > UINT64_MAX / u->factor)
            return cfg_bad_overflow;
        *out = v * u->factor;
        return NULL;
    }
    return cfg_bad_syntax;
}

static const struct unit duration_units[] = {
    { "ms", 1 }, { "s", 1000 }, { "m", 60 * 1000 }, { "h", 60 * 60 * 1000 }, { NULL, 0 },
};

/* Integer + unit, as in the contract; a bare "0" is accepted because
 * "disabled" is most naturally written that way. */
const char *cfg_parse_duration(const char *s, uint64_t *out_ms)
{
    uint64_t v;
    const char *end;
    const char *err = parse_digits(s, &v, &end);
    if (err)
        return err;
    if (!*end) {
        if (v != 0)
            return cfg_bad_syntax;
        *out_ms = 0;
        return NULL;
    }
    return apply_unit(v, end, duration_units, out_ms);
}

/* Binary units only: "MB" is ambiguous (10^6 or 2^20), so it is refused
 * rather than guessed. */
static const struct unit size_units[] = {
    { "", 1 }, { "KiB", 1024 }, { "MiB", 1024 * 1024 }, { "GiB", 1024 * 1024 * 1024 }, { NULL, 0 },
};

const char *cfg_parse_size(const char *s, uint64_t *out_bytes)
{
    uint64_t v;
    const char *end;
    const char *err = parse_digits(s, &v, &end);
    if (err)
        return err;
    return apply_unit(v, end, size_units, out_bytes);
}

/* Letters, digits, '-', '_' and '.'; this covers DNS names (including
 * Kubernetes service names) and dotted IPv4 literals. */
bool cfg_valid_hostname(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return false;
    for (const char *p = s; *p; p++) {
        char ch = *p;
        bool ok = is_digit(ch) || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '-' ||
                  ch == '.' || ch == '_';
        if (!ok)
            return false;
    }
    return true;
}

/* tchar of RFC 9110 section 5.6.2. */
bool cfg_is_token(const char *s)
{
    if (!*s)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
            continue;
        if (!strchr("!#$%&'*+-.^_`|~", *p))
            return false;
    }
    return true;
}

static const char *parse_port(const char *s, uint16_t *port)
{
    uint64_t v;
    if (!*s)
        return "missing port after ':'";
    if (cfg_parse_uint(s, &v) != NULL)
        return "the port is not a number";
    if (v > 65535)
        return "the port must be between 0 and 65535";
    *port = (uint16_t)v;
    return NULL;
}

/* "[v6]:port": the host is stored without brackets. */
static const char *split_bracketed(const char *s, char **host, const char **port)
{
    const char *close = strchr(s, ']');
    if (!close)
        return "missing ']' after the IPv6 address";
    if (close[1] != ':')
        return "missing :PORT after the IPv6 address";
    char *h = strndup(s + 1, (size_t)(close - s - 1));
    if (!h)
        return "out of memory";
    struct in6_addr a6;
    if (inet_pton(AF_INET6, h, &a6) != 1) {
        free(h);
        return "invalid IPv6 address";
    }
    *host = h;
    *port = close + 2;
    return NULL;
}

static const char *split_plain(const char *s, char **host, const char **port)
{
    const char *colon = strrchr(s, ':');
    if (!colon)
        return "missing :PORT";
    if (memchr(s, ':', (size_t)(colon - s)))
        return "IPv6 addresses must be in brackets, e.g. [::1]:8080";
    if (colon == s)
        return "missing host (use 0.0.0.0:PORT or [::]:PORT for every address)";
    char *h = strndup(s, (size_t)(colon - s));
    if (!h)
        return "out of memory";
    if (!cfg_valid_hostname(h)) {
        free(h);
        return "invalid host name";
    }
    *host = h;
    *port = colon + 1;
    return NULL;
}

const char *cfg_parse_hostport(const char *s, struct sg_hostport *out)
{
    char *host = NULL;
    const char *port;
    const char *err = s[0] == '[' ? split_bracketed(s, &host, &port) : split_plain(s, &host, &port);
    if (err)
        return err;
    uint16_t p;
    err = parse_port(port, &p);
    if (err) {
        free(host);
        return err;
    }
    out->host = host;
    out->port = p;
    return NULL;
}

bool sg_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    return s && cfg_parse_duration(s, out_ms) == NULL;
}

bool sg_parse_size(const char *s, uint64_t *out_bytes)
{
    return s && cfg_parse_size(s, out_bytes) == NULL;
}

bool sg_parse_hostport(const char *s, struct sg_hostport *out)
{
    return s && cfg_parse_hostport(s, out) == NULL;
}
