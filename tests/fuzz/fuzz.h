/* Shared by the libFuzzer targets in tests/fuzz (see tests/fuzz/README.md).
 *
 * Each target defines LLVMFuzzerTestOneInput. Built with clang and
 * -fsanitize=fuzzer (STRANGLER_FUZZ=ON) it is a fuzzer; built with the normal
 * compiler and replay.c's main() it replays corpus and crasher files as a
 * regression test. */
#ifndef STRANGLER_FUZZ_H
#define STRANGLER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "strangler/exchange.h"
#include "strangler/headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant the code under test must keep: abort (a crash to libFuzzer,
 * a failure to the replay driver) with the condition and where. */
#define FUZZ_ASSERT(cond)                                                                                      \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                        \
            abort();                                                                                           \
        }                                                                                                      \
    } while (0)

/* The upstream side of an exchange, as exchange.c drives it for an
 * HTTP/1.1 upstream (h1_client.c writes the request line, Host and framing;
 * headers.c the forwarded fields), on a bufferevent that is never flushed.
 * fuzz_upstream_end() then checks what would have gone on the wire: clean
 * CRLF lines, no obs-fold, token names, no control characters, and that a
 * fresh strict parser reads exactly one complete request from it, ending
 * exactly at the last byte, whose head passes the proxy's own checks. */
void fuzz_upstream_begin(const struct sg_request *req);
void fuzz_upstream_body(const char *p, size_t n);
void fuzz_upstream_end(const struct sg_headers *trailers);
/* The request was refused part way: what was written is dropped. */
void fuzz_upstream_abort(void);

#endif
