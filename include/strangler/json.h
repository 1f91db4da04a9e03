/* Minimal JSON output helpers for logs and the admin API. */
#ifndef STRANGLER_JSON_H
#define STRANGLER_JSON_H

#include <stddef.h>

struct evbuffer;

/* Appends s as a quoted JSON string (control chars, quotes, backslash and
 * invalid UTF-8 escaped as \uXXXX / U+FFFD), at most max_bytes of input
 * (0 = no limit). */
void sg_json_str(struct evbuffer *out, const char *s, size_t len, size_t max_bytes);

#endif
