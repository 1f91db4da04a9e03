"""Upstream faults: an upstream that closes, resets, sends garbage, an oversized or invalid
head, invalid framing, or dies part way through a response.

Before any response head has reached the client, the client gets a clean 502 (504 for an
upstream that never answers within the route timeout). Once the head has been forwarded, the
client's response is aborted: HTTP/1.1 closes the connection without completing the body (no
terminating chunk), HTTP/2 resets the stream (RST_STREAM). Never a crash, never a hang (every
wait is bounded), and the next request is served normally - on the same client connection
where it stays open, and on a fresh one.
"""

import socket
import struct
import time

from harness import (Client, ConnectionClosed, Incomplete, ProtocolError, Proxy, RawUpstream, check,
                     config, eq, main)
from test_h2 import H2Client

BEFORE, AFTER, TIMEOUT = "502 before the head", "aborted after the head", "504 timeout"


def rst(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def send(data, keep=False, then=None):
    def respond(sock, req):
        if data:
            sock.sendall(data)
        if then:
            then(sock)
        return keep
    return respond


def hang(seconds, data=b""):
    def respond(sock, req):
        if data:
            sock.sendall(data)
        time.sleep(seconds)
        return False
    return respond


HEAD_CL = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
HEAD_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

# path -> (respond, expected outcome)
FAULTS = {
    "/close-before-any-byte": (send(b""), BEFORE),
    "/reset-before-any-byte": (send(b"", then=rst), BEFORE),
    "/garbage-status-line": (send(b"this is not HTTP\r\n\r\n", keep=True), BEFORE),
    "/garbage-binary": (send(b"\x00\x01\x02\xff" * 64, keep=True), BEFORE),
    "/bad-status-code": (send(b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", keep=True), BEFORE),
    "/oversized-head": (send(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n"
                             b"Content-Length: 2\r\n\r\nok", keep=True), BEFORE),
    "/invalid-content-length": (send(b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nok", keep=True),
                                BEFORE),
    "/differing-content-lengths": (send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"
                                        b"ok!", keep=True), BEFORE),
    "/bare-lf-head": (send(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", keep=True), BEFORE),
    "/space-in-header-name": (send(b"HTTP/1.1 200 OK\r\nX Y: 1\r\nContent-Length: 2\r\n\r\nok", keep=True),
                              BEFORE),
    "/close-mid-head": (send(b"HTTP/1.1 200 OK\r\nContent-Le"), BEFORE),
    "/reset-mid-head": (send(b"HTTP/1.1 200 OK\r\nContent-Le", then=rst), BEFORE),
    "/die-after-head": (send(HEAD_CL), AFTER),
    "/die-mid-body": (send(HEAD_CL + b"x" * 30000), AFTER),
    "/reset-mid-body": (send(HEAD_CL + b"x" * 30000, then=rst), AFTER),
    "/die-mid-chunk": (send(HEAD_CHUNKED + b"1000\r\n" + b"y" * 100), AFTER),
    "/die-after-chunk": (send(HEAD_CHUNKED + b"5\r\nhello\r\n"), AFTER),
    "/invalid-chunk-size": (send(HEAD_CHUNKED + b"5\r\nhello\r\nzz\r\n", keep=True), AFTER),
    "/chunk-without-crlf": (send(HEAD_CHUNKED + b"5\r\nhelloXX0\r\n\r\n", keep=True), AFTER),
    "/hang-after-head": (hang(6, HEAD_CL + b"z" * 10), AFTER),
    "/hang-before-head": (hang(6), TIMEOUT),
}


def dispatch(sock, req):
    path = req.target.split("?")[0]
    if path in FAULTS:
        return FAULTS[path][0](sock, req)
    return RawUpstream.ok(sock, b"fine")


def proxy_config(up):
    # retries off: each fault is seen by the client as it happened
    return config({"up": up}, [{"name": "r", "timeout": "2s", "destinations": [{"upstream": "up"}],
                                "retries": {"attempts": 0}}], workers=1)


def h1_fault(p, path, expect):
    """Runs one fault on a fresh HTTP/1.1 connection; returns the connection state."""
    with Client(p.addr(), timeout=10) as c:
        t0 = time.monotonic()
        c.send(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        if expect in (BEFORE, TIMEOUT):
            r = c.read_response()
            want = 504 if expect == TIMEOUT else 502
            eq(r.status, want, "%s: status" % path)
            check(r.header("content-type", "").startswith("text/plain") and r.body,
                  "%s: the %d is a short text answer" % (path, want))
            # the same client connection goes on
            c.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
            r = c.read_response()
            eq((r.status, r.body), (200, b"fine"), "%s: next request on the same connection" % path)
        else:
            try:
                r = c.read_response()
            except Incomplete as e:
                r = e.response
                check(r is not None and r.status == 200, "%s: head before the abort: %r" % (path, r))
            else:
                raise AssertionError("%s: the response completed (%r), want an abort" % (path, r))
            # what was queued (the head at least) went out before the close
            if r.framing == "chunked":
                check(b"0\r\n\r\n" not in c.reader.buf, "%s: a terminating chunk was sent" % path)
            check(c.wait_closed(5), "%s: client connection not closed after the abort" % path)
        dt = time.monotonic() - t0
        check(dt < 8, "%s took %.1fs" % (path, dt))


def test_http1_clients():
    up = RawUpstream(dispatch)
    with Proxy(proxy_config(up)) as p:
        failures = []
        for path, (_, expect) in FAULTS.items():
            try:
                h1_fault(p, path, expect)
                with Client(p.addr(), timeout=10) as c:
                    r = c.request("GET", "/fresh")
                    eq((r.status, r.body), (200, b"fine"), "%s: next request on a fresh connection" % path)
            except (AssertionError, OSError, ConnectionClosed, ProtocolError) as e:
                failures.append("%s: %s" % (path, e))
        check(not failures, "%d of %d faults mishandled:\n  %s" % (len(failures), len(FAULTS),
                                                                   "\n  ".join(failures)))
        recs = p.access_log(len(FAULTS), lambda r: r.get("path") in FAULTS)
        statuses = {r["path"]: r["status"] for r in recs}
        for path, (_, expect) in FAULTS.items():
            if expect == BEFORE:
                eq(statuses.get(path), 502, "%s: access-log status" % path)


def test_http2_clients():
    up = RawUpstream(dispatch)
    with Proxy(proxy_config(up)) as p:
        failures = []
        h = H2Client(p.addr(), timeout=10)
        for path, (_, expect) in FAULTS.items():
            try:
                if h.closed:
                    raise AssertionError("the HTTP/2 connection was closed by an earlier fault")
                sid = h.request("GET", path)
                st = h.wait_done(sid, timeout=8)
                if expect in (BEFORE, TIMEOUT):
                    want = 504 if expect == TIMEOUT else 502
                    check(st.ended and st.status == want, "%s: stream ended %s status %s reset %s, want %d"
                          % (path, st.ended, st.status, st.reset, want))
                else:
                    check(st.reset is not None and not st.ended,
                          "%s: stream ended %s reset %s, want RST_STREAM" % (path, st.ended, st.reset))
                    # nghttp2 drops a queued HEADERS when the stream is reset before it
                    # went out; a head that did go out was the upstream's
                    check(st.status in (None, 200), "%s: response head before the reset: %s"
                          % (path, st.status))
                # the same HTTP/2 connection goes on
                sid = h.request("GET", "/after")
                st = h.wait_done(sid, timeout=8)
                check(st.ended and st.status == 200 and bytes(st.data) == b"fine",
                      "%s: next stream on the same connection: %s %r" % (path, st.status, bytes(st.data)))
            except (AssertionError, OSError) as e:
                failures.append("%s: %s" % (path, e))
        h.sock.close()
        check(not failures, "%d of %d faults mishandled over HTTP/2:\n  %s"
              % (len(failures), len(FAULTS), "\n  ".join(failures)))


def test_many_faults_in_a_row_leave_the_proxy_healthy():
    up = RawUpstream(dispatch)
    paths = [p for p, (_, e) in FAULTS.items() if e != TIMEOUT and "hang" not in p]
    with Proxy(proxy_config(up)) as p:
        for i in range(3):
            for path in paths:
                with Client(p.addr(), timeout=10) as c:
                    c.send(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path.encode())
                    try:
                        c.read_response()
                    except (Incomplete, ConnectionClosed, OSError):
                        pass
        with Client(p.addr(), timeout=10) as c:
            for i in range(5):
                r = c.request("GET", "/healthy/%d" % i)
                eq((r.status, r.body), (200, b"fine"), "request %d after %d faults" % (i, 3 * len(paths)))


if __name__ == "__main__":
    main(globals())
