"""HTTP/1.1 strictness: a table of malformed and smuggling requests (docs/security.md has the
same table with the RFC reason for each row).

Every case is sent on its own connection, followed by a second request ("GET /smuggled") in
the same write, to a proxy whose upstream is a RawUpstream that records every byte it
receives. A case is either
  - refused: the expected status, the connection closed, nothing of it reached the upstream
    (for errors in a chunked body, which streams: the upstream never sees a complete request
    and the connection that carried its start is closed), and /smuggled never arrives; or
  - normalised: the upstream receives exactly the clean, re-serialised request (head bytes
    compared exactly; a chunked body's chunk lines checked and its data and trailer section
    compared exactly).
After every case a request on a fresh connection reaches the upstream clean.
"""

import re
import time

from harness import (Client, ConnectionClosed, Incomplete, Proxy, RawUpstream, check, config, eq,
                     main)

SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
RID = "x-request-id: case-%d"


def head(method="GET", target="/", version="HTTP/1.1", lines=("Host: t",)):
    return ("%s %s %s\r\n" % (method, target, version)).encode() + \
        b"".join(l.encode("latin-1") + b"\r\n" for l in lines) + b"\r\n"


def post(lines, body=b""):
    return head("POST", "/x", "HTTP/1.1", ("Host: t",) + tuple(lines)) + body


def chunked(body_wire, extra=()):
    return post(("Transfer-Encoding: chunked",) + tuple(extra), body_wire)


R = "refuse"        # refused before anything is forwarded
RB = "refuse-body"  # refused in a streamed chunked body: no complete request upstream
N = "normalise"     # forwarded clean: expected upstream head (and chunked body) below

LONG = 10 * 1024

# (name, raw request, kind, status or expectation)
CASES = [
    # --- Content-Length / Transfer-Encoding conflicts (RFC 9112 6.1, 6.3) ---
    ("CL and TE", post(("Content-Length: 5", "Transfer-Encoding: chunked"), b"0\r\n\r\n"), R, 400),
    ("TE and CL", post(("Transfer-Encoding: chunked", "Content-Length: 5"), b"0\r\n\r\n"), R, 400),
    ("TE chunked, identity", post(("Transfer-Encoding: chunked, identity",), b"0\r\n\r\n"), R, 400),
    ("TE gzip, chunked", post(("Transfer-Encoding: gzip, chunked",), b"0\r\n\r\n"), R, 501),
    ("TE identity, chunked", post(("Transfer-Encoding: identity, chunked",), b"0\r\n\r\n"), R, 501),
    ("TE gzip only", post(("Transfer-Encoding: gzip",), b"abc"), R, 400),
    ("TE chunked twice in one line", post(("Transfer-Encoding: chunked, chunked",), b"0\r\n\r\n"), R, 400),
    ("TE in two lines", post(("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), b"0\r\n\r\n"),
     R, 400),
    ("TE with obs-fold", post(("Transfer-Encoding:", " chunked"), b"0\r\n\r\n"), R, 400),
    ("TE space before colon", post(("Transfer-Encoding : chunked",), b"0\r\n\r\n"), R, 400),
    ("TE xchunked", post(("Transfer-Encoding: xchunked",), b"0\r\n\r\n"), R, 400),
    ("TE on HTTP/1.0", head("POST", "/x", "HTTP/1.0", ("Host: t", "Transfer-Encoding: chunked"))
     + b"0\r\n\r\n", R, 400),
    ("TE with a control char", post(("Transfer-Encoding: chunked\x01",), b"0\r\n\r\n"), R, 400),
    # --- Content-Length values (RFC 9110 8.6) ---
    ("CL twice, same value", post(("Content-Length: 5", "Content-Length: 5"), b"hello"), R, 400),
    ("CL twice, different", post(("Content-Length: 5", "Content-Length: 6"), b"hello!"), R, 400),
    ("CL list", post(("Content-Length: 5, 5",), b"hello"), R, 400),
    ("CL with plus sign", post(("Content-Length: +5",), b"hello"), R, 400),
    ("CL negative", post(("Content-Length: -5",), b"hello"), R, 400),
    ("CL hex", post(("Content-Length: 0x5",), b"hello"), R, 400),
    ("CL with inner space", post(("Content-Length: 5 5",), b"hello"), R, 400),
    ("CL empty", post(("Content-Length:",), b""), R, 400),
    ("CL overflow 2^64+", post(("Content-Length: 99999999999999999999",), b"hello"), R, 400),
    ("CL 2^64-1", post(("Content-Length: 18446744073709551615",), b"hello"), R, 400),
    ("CL 2^63", post(("Content-Length: 9223372036854775808",), b"hello"), R, 400),
    # --- chunked bodies (RFC 9112 7.1) ---
    ("chunk size not hex", chunked(b"zz\r\nhello\r\n0\r\n\r\n"), RB, 400),
    ("chunk size overflow", chunked(b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"), RB, 400),
    ("chunk size negative", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), RB, 400),
    ("chunk size trailing space", chunked(b"5 \r\nhello\r\n0\r\n\r\n"), RB, 400),
    ("chunk ext with CRLF in quotes", chunked(b'5;a="b\r\nc"\r\nhello\r\n0\r\n\r\n'), RB, 400),
    ("chunk ext control char", chunked(b"5;a\x01\r\nhello\r\n0\r\n\r\n"), RB, 400),
    ("chunk data without CRLF", chunked(b"5\r\nhelloXX0\r\n\r\n"), RB, 400),
    ("chunk longer than its size", chunked(b"5\r\nhelloEXTRA\r\n0\r\n\r\n"), RB, 400),
    ("bare LF after chunk size", chunked(b"5\nhello\r\n0\r\n\r\n"), RB, 400),
    ("bare LF after chunk data", chunked(b"5\r\nhello\n0\r\n\r\n"), RB, 400),
    ("bare LF ending the body", chunked(b"5\r\nhello\r\n0\r\n\n"), RB, 400),
    ("trailer with bare LF", chunked(b"0\r\nX-T: 1\nX-U: 2\r\n\r\n"), RB, 400),
    ("trailer with empty name", chunked(b"0\r\n:x: 1\r\n\r\n"), RB, 400),
    ("trailer name with space", chunked(b"0\r\nX T: 1\r\n\r\n"), RB, 400),
    ("Transfer-Encoding in a trailer", chunked(b"0\r\nTransfer-Encoding: chunked\r\n\r\n"), RB, 400),
    ("two chunk extensions (llhttp 8)", chunked(b"5;a=1;b\r\nhello\r\n0\r\n\r\n"), RB, 400),
    # --- line endings, folding, NUL, field syntax (RFC 9112 2.2, 5.1, 5.2; RFC 9110 5.5) ---
    ("obs-fold", head(lines=("Host: t", "X-A: 1", "  folded")), R, 400),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: t\n\n", R, 400),
    ("bare LF in a header line", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\nX-B: 2\r\n\r\n", R, 400),
    ("bare CR in a header", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\rX-B: 2\r\n\r\n", R, 400),
    ("bare LF in the request line", b"GET / HTTP/1.1\nHost: t\r\n\r\n", R, 400),
    ("bare CR in the request line", b"GET /\r HTTP/1.1\r\nHost: t\r\n\r\n", R, 400),
    ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", R, 400),
    ("NUL in the target", b"GET /a\x00b HTTP/1.1\r\nHost: t\r\n\r\n", R, 400),
    ("control char in a value", head(lines=("Host: t", "X-A: a\x01b")), R, 400),
    ("DEL in a value", head(lines=("Host: t", "X-A: a\x7fb")), R, 400),
    ("space before colon", head(lines=("Host: t", "X-A : 1")), R, 400),
    ("space inside a name", head(lines=("Host: t", "X A: 1")), R, 400),
    ("empty field name", head(lines=("Host: t", ":x: 1")), R, 400),
    ("invalid name char", head(lines=("Host: t", "X(A): 1")), R, 400),
    # --- Host (RFC 9112 3.2, RFC 9110 7.2) ---
    ("missing Host", head(lines=("X-A: 1",)), R, 400),
    ("two Host fields", head(lines=("Host: a.example", "Host: b.example")), R, 400),
    ("two identical Host fields", head(lines=("Host: a.example", "Host: a.example")), R, 400),
    ("empty Host", head(lines=("Host:",)), R, 400),
    ("Host with a space", head(lines=("Host: a b",)), R, 400),
    ("Host with userinfo", head(lines=("Host: user@a.example",)), R, 400),
    ("Host list", head(lines=("Host: a.example,b.example",)), R, 400),
    ("Host with a path", head(lines=("Host: a.example/x",)), R, 400),
    ("Host port too large", head(lines=("Host: a.example:99999",)), R, 400),
    ("Host port not numeric", head(lines=("Host: a.example:http",)), R, 400),
    ("Host bad IPv6 literal", head(lines=("Host: [::1",)), R, 400),
    # --- request line, version, method, target (RFC 9112 2.3, 3; RFC 9110 9, 15.6.6) ---
    ("HTTP/1.2", head(version="HTTP/1.2"), R, 505),
    ("HTTP/2.0 request line", head(version="HTTP/2.0"), R, 505),
    ("HTTP/0.9 request line", head(version="HTTP/0.9"), R, 505),
    ("HTTP/3.0", head(version="HTTP/3.0"), R, 505),
    ("lowercase http/1.1", head(version="http/1.1"), R, 400),
    ("HTTP/1.10", head(version="HTTP/1.10"), R, 400),
    ("no version", b"GET /\r\nHost: t\r\n\r\n", R, 400),
    ("lowercase method", head(method="get"), R, 400),
    ("method with @", head(method="G@T"), R, 400),
    ("unknown method", head(method="FOO"), R, 400),
    ("two spaces after method", b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", R, 400),
    ("space after the version", b"GET / HTTP/1.1 \r\nHost: t\r\n\r\n", R, 400),
    ("HTAB in the request line", b"GET\t/ HTTP/1.1\r\nHost: t\r\n\r\n", R, 400),
    ("space in the target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", R, 400),
    ("fragment in the target", head(target="/a#b"), R, 400),
    ("non-ASCII target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", R, 400),
    ("over-long request line", head(target="/" + "a" * LONG), R, 414),
    ("asterisk-form", head(method="OPTIONS", target="*"), R, 400),
    ("authority-form on GET", head(target="a.example:80"), R, 400),
    ("absolute-form with userinfo", head(target="http://user:pw@a.example/x"), R, 400),
    ("absolute-form other scheme", head(target="ftp://a.example/x"), R, 400),
    ("absolute-form bad authority", head(target="http://a b/x"), R, 400),
    ("CONNECT (no tunnel route)", head(method="CONNECT", target="a.example:443",
                                       lines=("Host: a.example:443",)), R, 405),
]

# Normalised cases: (name, raw request, expected upstream head lines after the Host line and
# before the proxy's own fields, expected host, expected target, expected chunked body
# (data, trailer section) or None)
XFF = "x-forwarded-for: 127.0.0.1"
XFP = "x-forwarded-proto: http"

NORMALISED = [
    ("TE with HTAB before chunked",
     post(("Transfer-Encoding:\tchunked",), b"5\r\nhello\r\n0\r\n\r\n"),
     dict(method="POST", target="/x", framing="chunked", data=b"hello")),
    ("TE in capitals",
     post(("Transfer-Encoding: CHUNKED",), b"5\r\nhello\r\n0\r\n\r\n"),
     dict(method="POST", target="/x", framing="chunked", data=b"hello")),
    ("chunk extensions are dropped",
     chunked(b"5;name=value\r\nhello\r\n6;q=\"a b\"\r\n world\r\n0;last\r\n\r\n"),
     dict(method="POST", target="/x", framing="chunked", data=b"hello world")),
    ("chunk size with leading zeros",
     chunked(b"0005\r\nhello\r\n000\r\n\r\n"),
     dict(method="POST", target="/x", framing="chunked", data=b"hello")),
    ("framing and routing fields dropped from trailers",
     chunked(b"5\r\nhello\r\n0\r\nContent-Length: 5\r\nHost: evil\r\n"
             b"X-Forwarded-For: 6.6.6.6\r\nAuthorization: x\r\nX-Ok: 1\r\n\r\n"),
     dict(method="POST", target="/x", framing="chunked", data=b"hello", trailers=b"X-Ok: 1\r\n")),
    ("obs-fold in a trailer becomes SP",
     chunked(b"0\r\nX-T: 1\r\n folded\r\n\r\n"),
     dict(method="POST", target="/x", framing="chunked", data=b"", trailers=b"X-T: 1 folded\r\n")),
    ("CL with trailing whitespace",
     post(("Content-Length: 5 ",), b"hello"),
     dict(method="POST", target="/x", framing="length", data=b"hello")),
    ("Connection-named fields removed",
     head(lines=("Host: t", "Connection: keep-alive, X-Secret", "X-Secret: 1", "X-Kept: 2")),
     dict(fields=["X-Kept: 2"])),
    ("Connection naming x-forwarded-for keeps the proxy's own",
     head(lines=("Host: t", "Connection: x-forwarded-for", "X-Forwarded-For: 6.6.6.6")),
     dict(fields=[])),
    ("Upgrade: h2c never forwarded",
     head(lines=("Host: t", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
                 "HTTP2-Settings: AAMAAABkAAQAAP__")),
     dict(fields=[])),
    ("HTTP2-Settings dropped even unnamed",
     head(lines=("Host: t", "HTTP2-Settings: AAMAAABkAAQAAP__", "Upgrade: h2c")),
     dict(fields=[])),
    ("hop-by-hop fields dropped, te: trailers kept",
     head(lines=("Host: t", "Keep-Alive: timeout=5", "Proxy-Connection: keep-alive",
                 "TE: trailers, deflate", "X-A: 1")),
     dict(fields=["X-A: 1"], te=True)),
    ("absolute-form: its authority replaces Host",
     head(target="http://b.example/p?q=1", lines=("Host: a.example",)),
     dict(host="b.example", target="/p?q=1")),
    ("absolute-form without a path",
     head(target="HTTP://b.example:8080", lines=("Host: a.example",)),
     dict(host="b.example:8080", target="/")),
    ("absolute-form https with IPv6",
     head(target="https://[::1]:8443/v", lines=("Host: [::1]:8443",)),
     dict(host="[::1]:8443", target="/v")),
    ("empty lines before the request line",
     b"\r\n\r\n" + head(lines=("Host: t", "X-A: 1")),
     dict(fields=["X-A: 1"])),
    ("OWS around values trimmed",
     head(lines=("Host: \t t \t", "X-A: \t v  w \t")),
     dict(fields=["X-A: v  w"])),
    ("field name case kept",
     head(lines=("Host: t", "x-CuStOm-Name: 1")),
     dict(fields=["x-CuStOm-Name: 1"])),
    ("obs-text in a value passes",
     head(lines=("Host: t", "X-A: caf\xe9")),
     dict(fields=["X-A: caf\xe9"])),
    ("Expect: 100-continue answered, not forwarded",
     post(("Expect: 100-continue", "Content-Length: 5"), b"hello"),
     dict(method="POST", target="/x", framing="length", data=b"hello", interim=100)),
    ("HTTP/1.0 without Host",
     head(version="HTTP/1.0", lines=("X-A: 1",)),
     dict(host="UPSTREAM", fields=["X-A: 1"])),
]


def expected_head(up, spec, case_no):
    host = spec.get("host", "t")
    if host == "UPSTREAM":
        host = up.addr_str
    lines = ["%s %s HTTP/1.1" % (spec.get("method", "GET"), spec.get("target", "/")), "Host: " + host]
    framing = spec.get("framing")
    if framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
    elif framing == "length" and spec["data"]:
        lines.append("Content-Length: %d" % len(spec["data"]))
    lines += spec.get("fields", [])
    lines += [XFF, XFP, RID % case_no]
    if spec.get("te"):
        lines.append("te: trailers")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def with_request_id(raw, case_no):
    """Adds x-request-id after the request line so the upstream head is predictable."""
    j = 0
    while raw[j:j + 2] == b"\r\n":     # leading empty lines
        j += 2
    i = raw.index(b"\n", j) + 1
    return raw[:i] + (RID % case_no).encode() + b"\r\n" + raw[i:]


def clean_chunked(raw_body):
    """(data, trailer section bytes) of a chunked body, checking every line is clean."""
    pos, data = 0, b""
    while True:
        eol = raw_body.index(b"\r\n", pos)
        line = raw_body[pos:eol]
        check(re.match(rb"^[0-9a-f]+$", line), "chunk line %r is not bare lower-case hex" % line)
        size = int(line, 16)
        pos = eol + 2
        if size == 0:
            break
        data += raw_body[pos:pos + size]
        eq(raw_body[pos + size:pos + size + 2], b"\r\n", "CRLF after chunk data")
        pos += size + 2
    trailers = raw_body[pos:]
    check(trailers.endswith(b"\r\n"), "trailer section %r does not end with CRLF" % trailers)
    return data, trailers[:-2]


def proxy_config(up):
    return config({"up": up}, [{"name": "r", "destinations": [{"upstream": "up"}]}],
                  limits={"max_header_bytes": "8KiB"}, workers=1)


def fresh_request_is_clean(p, up, tag):
    before = len(up.requests())
    with Client(p.addr(), timeout=5) as c:
        c.send(b"GET /after/%s HTTP/1.1\r\nHost: t\r\nx-request-id: after\r\n\r\n" % tag.encode())
        r = c.read_response()
    eq(r.status, 200, "%s: a clean request afterwards" % tag)
    reqs = up.requests()[before:]
    eq(len(reqs), 1, "%s: requests upstream for the clean request" % tag)
    eq(reqs[0].raw, ("GET /after/%s HTTP/1.1\r\nHost: t\r\n%s\r\n%s\r\nx-request-id: after\r\n\r\n"
                     % (tag, XFF, XFP)).encode(), "%s: the clean request upstream" % tag)


def run_refused(p, up, no, name, raw, kind, status):
    before_bytes = up.total_bytes()
    with Client(p.addr(), timeout=5) as c:
        try:
            c.send(raw + SMUGGLE)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            r = c.read_response()
        except (ConnectionClosed, Incomplete, OSError) as e:
            raise AssertionError("%s: no %d response: %r" % (name, status, e))
        if r.status != status:
            raise AssertionError("%s: status %d, want %d (%r)" % (name, r.status, status, r.body[:100]))
        if not c.wait_closed(3):
            raise AssertionError("%s: connection not closed after the %d" % (name, status))
        if b"HTTP/1." in c.trailing:
            raise AssertionError("%s: a second response after the %d: %r" % (name, status, c.trailing[:100]))
    time.sleep(0.05)
    if any(x.target == "/smuggled" for x in up.requests()):
        raise AssertionError("%s: the smuggled request reached the upstream" % name)
    if kind == R:
        if up.total_bytes() != before_bytes:
            raise AssertionError("%s: %d bytes reached the upstream" % (name, up.total_bytes() - before_bytes))
        return
    # A chunked body streams: its head may have gone ahead, but the upstream never sees the
    # request complete, and the connection carrying the start of it is closed.
    if any(x.target == "/x" for x in up.requests()):
        raise AssertionError("%s: a complete request reached the upstream" % name)
    for cn in up.conns:
        consumed = sum(len(x.raw) for x in cn.requests)
        if len(cn.data) > consumed and not wait_eof(cn):
            raise AssertionError("%s: the upstream connection with the partial request is still open" % name)


def wait_eof(cn, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not cn.eof and time.monotonic() < deadline:
        time.sleep(0.02)
    return cn.eof


def run_normalised(p, up, no, name, raw, spec):
    before = len(up.requests())
    with Client(p.addr(), timeout=5) as c:
        c.send(raw)
        try:
            r = c.read_response("POST" if spec.get("method") == "POST" else "GET")
        except (ConnectionClosed, Incomplete, OSError) as e:
            raise AssertionError("%s: no response: %r" % (name, e))
    if r.status != 200:
        raise AssertionError("%s: status %d (%r)" % (name, r.status, r.body[:100]))
    if spec.get("interim"):
        eq([x.status for x in r.interim], [spec["interim"]], "%s: interim responses" % name)
    reqs = up.requests()[before:]
    if len(reqs) != 1:
        raise AssertionError("%s: %d requests upstream (errors %r)" % (name, len(reqs), up.errors()))
    got = reqs[0].raw
    want_head = expected_head(up, spec, no)
    got_head = got[:got.index(b"\r\n\r\n") + 4]
    if got_head != want_head:
        raise AssertionError("%s: upstream head\n  got  %r\n  want %r" % (name, got_head, want_head))
    body = got[len(got_head):]
    if spec.get("framing") == "chunked":
        data, trailers = clean_chunked(body)
        eq(data, spec["data"], "%s: chunked data upstream" % name)
        eq(trailers, spec.get("trailers", b""), "%s: trailer section upstream" % name)
    else:
        eq(body, spec.get("data", b""), "%s: body upstream" % name)


def test_table_has_enough_cases():
    check(len(CASES) + len(NORMALISED) >= 40, "only %d cases" % (len(CASES) + len(NORMALISED)))
    names = [c[0] for c in CASES] + [c[0] for c in NORMALISED]
    eq(len(names), len(set(names)), "case names are unique")


def test_refused_requests():
    up = RawUpstream()
    with Proxy(proxy_config(up)) as p:
        failures = []
        for no, (name, raw, kind, status) in enumerate(CASES):
            try:
                run_refused(p, up, no, name, raw, kind, status)
                fresh_request_is_clean(p, up, "r%d" % no)
            except AssertionError as e:
                failures.append(str(e))
        eq(up.errors(), [], "strict parse errors at the upstream")
        check(not failures, "%d of %d refused cases failed:\n  %s"
              % (len(failures), len(CASES), "\n  ".join(failures)))


def test_normalised_requests():
    up = RawUpstream()
    with Proxy(proxy_config(up)) as p:
        failures = []
        for no, (name, raw, spec) in enumerate(NORMALISED):
            try:
                run_normalised(p, up, no, name, with_request_id(raw, no), spec)
                fresh_request_is_clean(p, up, "n%d" % no)
            except AssertionError as e:
                failures.append(str(e))
        eq(up.errors(), [], "strict parse errors at the upstream")
        check(not failures, "%d of %d normalised cases failed:\n  %s"
              % (len(failures), len(NORMALISED), "\n  ".join(failures)))


if __name__ == "__main__":
    main(globals())
