/* HTTP/1.x message heads as llhttp delivers them: pieces of the request
 * line / status and of each field, possibly split across reads. The head
 * copies them into one bounded buffer (max_header_bytes) and, once
 * complete, exposes them as sg_str/sg_headers pointing into it. */
#ifndef STRANGLER_H1_H
#define STRANGLER_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "strangler/headers.h"
#include "strangler/str.h"

struct evbuffer;

enum sg_h1_part { SG_H1_METHOD, SG_H1_URL, SG_H1_STATUS, SG_H1_FIELD, SG_H1_VALUE };

struct sg_h1_span {
    uint32_t off, len;
};

struct sg_h1_field {
    struct sg_h1_span name, value;
};

struct sg_h1_head {
    char *buf;
    size_t len, cap, max;
    size_t wire; /* bytes the peer sent for this head, separators included */
    struct sg_h1_span method, url, status;
    struct sg_h1_field *fields;
    size_t n_fields, cap_fields;
    bool field_open; /* the last piece belonged to a field name */
    /* Valid after sg_h1_head_finish(): */
    struct sg_str s_method, s_url, s_status;
    struct sg_headers headers;
};

void sg_h1_head_init(struct sg_h1_head *h, size_t max_bytes);
void sg_h1_head_reset(struct sg_h1_head *h);
void sg_h1_head_free(struct sg_h1_head *h);
/* Gives the buffers back but keeps the limit: an idle keep-alive
 * connection then holds no head memory (they are allocated again, from
 * malloc's per-thread cache, by the next request). */
void sg_h1_head_release(struct sg_h1_head *h);
/* Returns false when the head would exceed max_bytes (431) or on ENOMEM. */
bool sg_h1_head_append(struct sg_h1_head *h, enum sg_h1_part part, const char *p, size_t n);
/* One whole field at once (a decoded HTTP/2 field): the next name starts
 * a new field. False as sg_h1_head_append. */
bool sg_h1_head_add_field(struct sg_h1_head *h, const char *name, size_t nlen, const char *value, size_t vlen);
/* Builds s_* and headers; trims trailing OWS from values. */
bool sg_h1_head_finish(struct sg_h1_head *h);

/* Every HTTP/1.1 head this proxy sends is serialised through an sg_wbuf:
 * the pieces (request or status line, field lines, framing) are gathered
 * on the caller's stack and reach the evbuffer in one add, because every
 * add runs the buffer's callbacks (the bufferevent's and write-through's).
 * A piece that does not fit is preceded by a flush; one larger than the
 * whole buffer goes straight to the evbuffer. Nothing is sent before
 * sg_wbuf_flush(). */
#define SG_WBUF_SIZE 2048u

struct sg_wbuf {
    struct evbuffer *out;
    size_t len;
    char buf[SG_WBUF_SIZE];
};

void sg_wbuf_init(struct sg_wbuf *w, struct evbuffer *out);
void sg_wbuf_add(struct sg_wbuf *w, const void *p, size_t n);
void sg_wbuf_flush(struct sg_wbuf *w);
/* An sg_header_emit_fn (ctx: the sg_wbuf) writing "name: value\r\n". */
void sg_wbuf_field(void *ctx, struct sg_str name, struct sg_str value);
/* "Content-Length: N\r\n", and one chunk of a chunked body (size line,
 * data, CRLF): without printf, which costs more than the rest of the head
 * on the request path. */
void sg_wbuf_content_length(struct sg_wbuf *w, uint64_t n);
void sg_wbuf_chunk(struct sg_wbuf *w, const char *p, size_t n);
/* Digits of v in base 10 or 16 (lower case) at dst (room for 20); returns how many. */
size_t sg_fmt_u64(char *dst, uint64_t v, unsigned base);

/* ---- strictness beyond llhttp (docs/security.md has the whole table) -----
 *
 * llhttp (built with LLHTTP_STRICT_MODE) checks the grammar; these checks
 * add what RFC 9110/9112 require of a proxy and what llhttp lets through:
 * raw-byte rules on the head (sg_h1_scan), then the meaning of a complete
 * head (sg_h1_request_check). Every HTTP/1.1 request the server accepts has
 * passed both; the fuzz target tests/fuzz/fuzz_h1_request.c runs the same
 * functions. */

/* Raw-byte scanner over a request head as it arrives, in pieces. */
struct sg_h1_scan {
    char prev; /* last byte seen */
    size_t line_len; /* bytes of the current line, CR/LF excluded */
    unsigned spaces; /* SP in the request line */
    bool seen_line; /* the request line is complete */
    bool head_end; /* the empty line ending the head was seen */
    bool in_name; /* inside a field name */
};

void sg_h1_scan_reset(struct sg_h1_scan *sc);
/* Scans more head bytes, up to the end of the head (then sc->head_end is
 * set and the rest, the body, is not looked at). Returns why the head must
 * be refused with 400, or NULL. Refused: bare CR or LF as a line end (RFC
 * 9112 2.2), NUL, obs-fold (5.2), whitespace in a field name or before its
 * colon (5.1), an empty field name, and a request line that is not exactly
 * `method SP target SP version` (3: no HTAB, no repeated or trailing SP, no
 * control characters). Empty lines before the request line are allowed
 * (2.2). */
const char *sg_h1_scan(struct sg_h1_scan *sc, const char *p, size_t n);

/* RFC 9110 5.6.2 token (field names, methods). */
bool sg_h1_token(struct sg_str s);

/* The field rule llhttp leaves to us: a name is never empty (RFC 9110
 * 5.6.2: a token has one byte at least). llhttp itself, strict and with no
 * lenient flag set (none is, anywhere), rejects a name byte outside tchar
 * and a control byte other than HTAB in a value (RFC 9110 5.5) before the
 * field reaches us; test_h1_head pins that for every byte in requests,
 * responses and both kinds of trailers, so an llhttp that stopped doing
 * it fails the tests. Works on a finished head parsed by llhttp; returns
 * why not, or NULL. Used for request heads and trailers, and for response
 * heads and trailers from upstreams. */
const char *sg_h1_fields_problem(const struct sg_h1_head *h);

/* RFC 9110 7.2 / RFC 3986 3.2.2: `host [":" port]` where host is a reg-name
 * (unreserved, pct-encoded and sub-delims except ','), an IPv4 address or
 * a bracketed IPv6 literal, and port 1-5 digits up to 65535. No userinfo,
 * no whitespace, nothing a downstream parser could split differently. */
bool sg_h1_authority_valid(struct sg_str a);

/* The request as the proxy forwards it, from a complete and valid head. */
struct sg_h1_target {
    struct sg_str target; /* origin-form path + query (absolute-form reduced) */
    struct sg_str path; /* without the query */
    struct sg_str query; /* without '?' */
    struct sg_str host; /* the authority: the absolute-form target's, else Host; empty for HTTP/1.0 without Host */
    int64_t content_length; /* -1 chunked, else the length (0: none) */
    bool http10;
};

/* Validates a complete, finished request head (after on_headers_complete)
 * against what llhttp reported in `p`. Returns 0 and fills `t`, or the
 * status to refuse it with and sets *why:
 *   505 HTTP version other than 1.0 and 1.1
 *   405 CONNECT (no tunnels to arbitrary authorities)
 *   400 invalid field, request target or Host; missing Host on HTTP/1.1;
 *       two Host fields; Transfer-Encoding on HTTP/1.0; Content-Length
 *       over 2^63-1
 *   501 a transfer coding other than chunked
 */
int sg_h1_request_check(const struct sg_h1_head *h, const llhttp_t *p, struct sg_h1_target *t, const char **why);

/* The status for an llhttp error on a request: 505 for a well-formed but
 * unsupported version (llhttp 8 refuses HTTP/1.2 itself), else 400. */
int sg_h1_parse_error_status(const llhttp_t *p, llhttp_errno_t err);

#endif
