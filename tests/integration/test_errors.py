"""Errors the proxy answers itself (400/408/413/431/502/503/504) and retries."""

import hashlib
import json
import re
import select
import socket
import threading
import time

from harness import (Client, ConnectionClosed, Proxy, Upstream, check, closed_port, config, eq,
                     main, metric_value, request, run_threads, wait_until)

CAUSE = {
    400: r"bad request|malformed|invalid|ambiguous|host|chunk|length|header|request|framing",
    404: r"route|not found",
    408: r"time",
    413: r"large|body|size|payload|content",
    431: r"large|header",
    502: r"upstream|gateway|refused|reset|invalid|connect",
    503: r"unavailable|connection|limit|capacity|overload",
    504: r"time",
}


def check_error(r, status, what):
    eq(r.status, status, "%s: status (body %r)" % (what, r.body[:200]))
    ct = r.header("content-type", "")
    check(ct.startswith("text/plain"), "%s: %d content-type %r" % (what, status, ct))
    check(0 < len(r.body) < 1024, "%s: %d body is not short text: %r" % (what, status, r.body))
    check(re.search(CAUSE[status].encode(), r.body, re.I),
          "%s: %d body does not name the cause: %r" % (what, status, r.body))


def behave(**o):
    return ("x-behave", json.dumps(o))


def simple(upstreams, limits=None, **route_kw):
    r = {"name": "r", "destinations": [{"upstream": "up"}]}
    r.update(route_kw)
    if not isinstance(upstreams, dict):
        upstreams = {"up": upstreams}
    return config(upstreams, [r], limits=limits)


# --- 502 ----------------------------------------------------------------------------------------

def test_502_connection_refused():
    with Proxy(simple(["127.0.0.1:%d" % closed_port()])) as p:
        for i in range(3):
            check_error(request(p.addr(), "GET", "/refused"), 502, "refused upstream")


def test_dead_upstream_under_load_is_not_one_error_line_per_request():
    with Proxy(simple(["127.0.0.1:%d" % closed_port()])) as p:
        t0 = time.monotonic()
        for i in range(300):
            eq(request(p.addr(), "GET", "/d/%d" % i).status, 502, "request %d" % i)
        seconds = time.monotonic() - t0
        log = p.access_log(300)
        eq({e.get("error") for e in log}, {"upstream connect failed"}, "access-log error field on 502s")
        lines = [l for l in p.stderr().splitlines() if "connect failed" in l]
        # At most one line per second per worker's pool (2 workers), however many requests fail.
        most = 2 * (int(seconds) + 2)
        check(1 <= len(lines) <= most, "%d error-log lines for 300 failed requests in %.1fs (at most %d):\n%s"
              % (len(lines), seconds, most, "\n".join(lines[:12])))


def test_502_upstream_reset_garbage_or_silent_close():
    up = Upstream("bad")
    with Proxy(simple(up)) as p:
        for action in ("reset", "garbage", "close"):
            r = request(p.addr(), "GET", "/" + action, [behave(action=action)])
            check_error(r, 502, "upstream %s" % action)
        # a normal request right after still works
        eq(request(p.addr(), "GET", "/fine").status, 200, "request after the failures")


def test_upstream_ambiguous_response_framing():
    up = Upstream("ambiguous")
    both = ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n")
    two = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello12"
    with Proxy(simple(up)) as p:
        r = request(p.addr(), "GET", "/both", [behave(raw=both)])
        # RFC 9112 6.3: Transfer-Encoding wins (and Content-Length is dropped), or 502
        if r.status != 502:
            eq((r.status, r.body), (200, b"hello"), "response with Content-Length and "
               "Transfer-Encoding")
        r = request(p.addr(), "GET", "/two", [behave(raw=two)])
        check_error(r, 502, "response with two differing Content-Length")


def test_metrics_count_errors():
    dead = "127.0.0.1:%d" % closed_port()
    with Proxy(simple({"up": [dead]})) as p:
        for _ in range(2):
            eq(request(p.addr(), "GET", "/x").status, 502, "refused upstream")
        text = p.metrics()
        v = metric_value(text, "strangler_upstream_connect_failures_total", upstream="up")
        check(v is not None and v >= 2, "strangler_upstream_connect_failures_total{upstream=up}"
              " = %r after 2 refused connects" % v)
        v = metric_value(text, "strangler_requests_total", route="r", code="502")
        check(v is not None and v >= 2, "strangler_requests_total{route=r,code=502} = %r" % v)


# --- 503 / 504 ----------------------------------------------------------------------------------

def test_503_when_max_connections_exhausted():
    up = Upstream("slow")
    cfg = simple({"up": {"endpoints": [up], "max_connections": 1}})
    with Proxy(cfg) as p:
        res = []
        holder = threading.Thread(target=lambda: res.append(
            request(p.addr(), "GET", "/slow", [behave(delay=2)])), daemon=True)
        holder.start()
        check(wait_until(lambda: up.heads >= 1, 5), "slow request never reached the upstream")

        def quick(i):
            t0 = time.monotonic()
            r = request(p.addr(), "GET", "/excess/%d" % i)
            return r, time.monotonic() - t0
        for r, dt in run_threads(quick, [(i,) for i in range(4)]):
            check_error(r, 503, "request beyond max_connections")
            check(dt < 1.5, "503 took %.2fs (queued behind the slow request?)" % dt)
        holder.join(10)
        check(res and res[0].status == 200, "the in-flight request: %r" % res)
        eq(up.head_paths.count("/slow"), 1, "slow request forwarded once")
        check(not any(x.startswith("/excess") for x in up.head_paths),
              "an excess request was forwarded")


def test_max_connections_slot_is_released():
    up = Upstream("one")
    cfg = simple({"up": {"endpoints": [up], "max_connections": 1}})
    with Proxy(cfg) as p:
        # nothing in flight: fresh client connections (landing on either worker) must succeed
        for i in range(8):
            r = request(p.addr(), "GET", "/seq/%d" % i)
            eq(r.status, 200, "sequential request %d with max_connections 1 (body %r)"
               % (i, r.body[:100]))


def test_max_connections_under_concurrency():
    up = Upstream("capped", delay=0.5)
    cfg = simple({"up": {"endpoints": [up], "max_connections": 3}})
    with Proxy(cfg) as p:
        codes = run_threads(lambda i: request(p.addr(), "GET", "/c/%d" % i).status,
                            [(i,) for i in range(12)])
        check(up.max_active <= 3, "%d upstream connections open at once with max_connections 3"
              % up.max_active)
        check(codes.count(200) >= 3 and set(codes) <= {200, 503},
              "codes of 12 concurrent requests with max_connections 3: %r" % codes)


def test_connect_timeout():
    # a listener whose accept queue is full drops SYNs: connect() hangs
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    fill = []
    try:
        for _ in range(3):
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect(s.getsockname())
            except BlockingIOError:
                pass
            fill.append(f)
        time.sleep(0.2)
        cfg = simple({"up": {"endpoints": ["127.0.0.1:%d" % s.getsockname()[1]],
                             "connect_timeout": "500ms"}}, timeout="10s")
        with Proxy(cfg) as p:
            t0 = time.monotonic()
            r = request(p.addr(), "GET", "/ct")
            dt = time.monotonic() - t0
            check(r.status in (502, 503, 504), "status after connect_timeout: %d" % r.status)
            check(0.4 <= dt < 2.5, "answer after %.2fs with connect_timeout 500ms" % dt)
    finally:
        for f in fill:
            f.close()
        s.close()


def test_504_route_timeout():
    up = Upstream("delay")
    with Proxy(simple(up, timeout="1s")) as p:
        t0 = time.monotonic()
        r = request(p.addr(), "GET", "/delayed", [behave(delay=3)])
        dt = time.monotonic() - t0
        check_error(r, 504, "upstream slower than the route timeout")
        check(0.8 <= dt <= 2.5, "504 after %.2fs with timeout 1s" % dt)
        recs = p.access_log(1, lambda x: x.get("status") == 504)
        check(recs, "no access log line with status 504")


def test_504_route_timeout_after_fast_requests():
    """The route timer outlives a request that finished in time (the exchange that reuses its
    memory keeps it, exchange.c): a later request on the same connection, started while an
    earlier one's timer is still pending, times out a full timeout after its own start, neither
    at the earlier one's deadline nor never."""
    up = Upstream("delay")
    with Proxy(simple(up, timeout="1s")) as p:
        with Client(p.addr(), timeout=10) as c:
            for i in range(3):
                eq(c.request("GET", "/fast/%d" % i).status, 200, "fast request %d" % i)
            time.sleep(0.6)  # the fast requests' deadlines pass 0.4 s into the next one
            t0 = time.monotonic()
            r = c.request("GET", "/delayed", [behave(delay=3)])
            dt = time.monotonic() - t0
        check_error(r, 504, "upstream slower than the route timeout")
        check(0.8 <= dt <= 2.5, "504 after %.2fs with timeout 1s" % dt)


# --- 400 ----------------------------------------------------------------------------------------

SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"

BAD_HEADS = [
    ("Content-Length and Transfer-Encoding",
     b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n"),
    ("Transfer-Encoding and Content-Length",
     b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 35\r\n\r\n"
     b"0\r\n\r\n"),
    ("two differing Content-Length",
     b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("Content-Length list with differing values",
     b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!"),
    ("non-numeric Content-Length",
     b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5x\r\n\r\nhello"),
    ("negative Content-Length",
     b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n"),
    ("Transfer-Encoding without final chunked",
     b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
    ("obs-fold", b"GET /x HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  b\r\n\r\n"),
    ("bare LF line endings", b"GET /x HTTP/1.1\nHost: t\n\n"),
    ("bare LF in one header line", b"GET /x HTTP/1.1\r\nHost: t\r\nX-A: 1\nX-B: 2\r\n\r\n"),
    ("bare CR in the head", b"GET /x HTTP/1.1\r\nHost: t\r\nX-A: 1\rX-B: 2\r\n\r\n"),
    ("missing Host on HTTP/1.1", b"GET /x HTTP/1.1\r\nX-A: 1\r\n\r\n"),
    ("two Host headers", b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
    ("invalid request line", b"HELLO\r\n\r\n"),
    ("space inside the request target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("whitespace before the colon", b"GET /x HTTP/1.1\r\nHost: t\r\nX-A : 1\r\n\r\n"),
    ("invalid header name", b"GET /x HTTP/1.1\r\nHost: t\r\nX(A): 1\r\n\r\n"),
]

BAD_BODIES = [
    ("bad chunk size",
     b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("chunk size overflow",
     b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"fffffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
    ("chunk longer than its size",
     b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhelloEXTRA\r\n0\r\n\r\n"),
]


def send_bad(p, what, raw):
    with Client(p.addr(), timeout=5) as c:
        c.send(raw + SMUGGLE)
        try:
            r = c.read_response()
        except ConnectionClosed:
            raise AssertionError("%s: connection closed without a 400" % what)
        check_error(r, 400, what)
        check(c.wait_closed(3), "%s: connection not closed after the 400 (then got %r)"
              % (what, c.trailing[:200]))
        check(b"HTTP/1." not in c.trailing, "%s: a second response after the 400: %r"
              % (what, c.trailing[:200]))


def test_400_malformed_heads_close_and_forward_nothing():
    up = Upstream("never")
    with Proxy(simple(up)) as p:
        failures = []
        for what, raw in BAD_HEADS:
            before = len(up.head_paths)
            try:
                send_bad(p, what, raw)
            except AssertionError as e:
                failures.append(str(e))
            time.sleep(0.05)
            if len(up.head_paths) > before:
                failures.append("%s: forwarded upstream: %r" % (what, up.head_paths[before:]))
        check(not failures, "%d of %d malformed heads mishandled:\n  %s"
              % (len(failures), len(BAD_HEADS), "\n  ".join(failures)))
        eq(request(p.addr(), "GET", "/ok").status, 200, "a good request afterwards")


def test_400_bad_chunked_bodies():
    up = Upstream("never")
    with Proxy(simple(up)) as p:
        failures = []
        for what, raw in BAD_BODIES:
            before = (up.completed, len(up.head_paths))
            try:
                send_bad(p, what, raw)
            except AssertionError as e:
                failures.append(str(e))
            time.sleep(0.05)
            if up.completed > before[0] or "/smuggled" in up.head_paths[before[1]:]:
                failures.append("%s: forwarded upstream: %r" % (what, up.head_paths[before[1]:]))
        eq(up.completed, 0, "requests with a broken chunked body completed upstream")
        check("/smuggled" not in up.head_paths, "request after a broken body was forwarded")
        check(not failures, "%d of %d broken bodies mishandled:\n  %s"
              % (len(failures), len(BAD_BODIES), "\n  ".join(failures)))


# --- 408 / 413 / 431 ----------------------------------------------------------------------------

def _read_after(c, t0, what):
    try:
        r = c.read_response()
    except ConnectionClosed:
        raise AssertionError("%s: connection closed after %.2fs without a 408"
                             % (what, time.monotonic() - t0))
    return r, time.monotonic() - t0


def test_408_slowloris():
    up = Upstream("never")
    with Proxy(simple(up, limits={"header_timeout": "1s"})) as p:
        # a head trickled one header line every 250 ms: the deadline is for the whole head
        with Client(p.addr(), timeout=10) as c:
            t0 = time.monotonic()
            c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n")
            for i in range(40):
                if select.select([c.sock], [], [], 0.25)[0]:
                    break
                try:
                    c.send(b"X-Trickle-%d: %d\r\n" % (i, i))
                except (BrokenPipeError, ConnectionResetError):
                    break
            r, dt = _read_after(c, t0, "trickled head")
            check_error(r, 408, "trickled head")
            check(0.8 <= dt <= 3.5, "408 after %.2fs with header_timeout 1s" % dt)
            check(c.wait_closed(3), "connection open after the 408")
        # a partial head, then silence
        with Client(p.addr(), timeout=10) as c:
            t0 = time.monotonic()
            c.send(b"GET /slow HTTP/1.1\r\nHo")
            r, dt = _read_after(c, t0, "partial head")
            check_error(r, 408, "partial head")
            check(0.8 <= dt <= 3.5, "408 after %.2fs with header_timeout 1s" % dt)
        eq(up.head_paths, [], "slow heads forwarded upstream")
        eq(request(p.addr(), "GET", "/ok").status, 200, "a prompt request still works")


def test_408_partial_head_after_a_request_on_the_same_connection():
    # The connection's timer is set lazily: a deadline moved later leaves the pending timer
    # alone (it re-arms when it fires early) and a cleared one is only forgotten. The header
    # deadline of a second request must hold all the same: head started at once (the 20 ms
    # park timer still pending) and after the connection parked.
    up = Upstream("again")
    with Proxy(simple(up, limits={"header_timeout": "1s", "idle_timeout": "30s"})) as p:
        for pause in (0.0, 0.2):
            with Client(p.addr(), timeout=10) as c:
                eq(c.request("GET", "/first").status, 200, "first request (pause %.1fs)" % pause)
                time.sleep(pause)
                t0 = time.monotonic()
                c.send(b"GET /second HTTP/1.1\r\nHo")
                r, dt = _read_after(c, t0, "partial second head")
                check_error(r, 408, "partial second head (pause %.1fs)" % pause)
                check(0.8 <= dt <= 3.5, "408 after %.2fs with header_timeout 1s (pause %.1fs)"
                      % (dt, pause))
        eq(up.head_paths, ["/first", "/first"], "only the complete heads went upstream")


def _send_head_then_body(c, head, body):
    """Sends the head; the body only if no response came within 1 s (a proxy may refuse on
    the Content-Length alone, and then a client writing the body would hit a reset)."""
    c.send(head)
    if not select.select([c.sock], [], [], 1.0)[0]:
        try:
            c.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
    return c.read_response()


def test_413_request_body_too_large():
    up = Upstream("sink")
    limits = {"max_request_body_bytes": "1KiB"}
    with Proxy(simple(up, limits=limits)) as p:
        with Client(p.addr()) as c:
            r = _send_head_then_body(c, b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 2000"
                                        b"\r\n\r\n", b"a" * 2000)
            check_error(r, 413, "Content-Length over the limit")
        with Client(p.addr()) as c:
            r = c.request("POST", "/exact", (), b"b" * 1024)
            eq(r.status, 200, "body of exactly the limit")
            eq(r.json()["body_len"], 1024, "body length upstream")
            r = c.request("POST", "/small-chunked", (), b"c" * 1000, chunked=True, chunk_size=300)
            eq(r.status, 200, "chunked body under the limit")
            eq(r.json()["body_len"], 1000, "chunked body length upstream")
        with Client(p.addr()) as c:
            c.send(b"POST /big-chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(16):              # 8 KiB in 512-byte chunks, until the proxy answers
                if select.select([c.sock], [], [], 0.05)[0]:
                    break
                try:
                    c.send(b"200\r\n" + b"d" * 512 + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
            else:
                try:
                    c.send(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
            check_error(c.read_response(), 413, "chunked body over the limit")
        check(not any(r["path"].startswith("/big") for r in up.requests),
              "an oversized body completed upstream")


def test_431_request_head_too_large():
    up = Upstream("hdr")
    with Proxy(simple(up, limits={"max_header_bytes": "4KiB"})) as p:
        r = request(p.addr(), "GET", "/big", [("X-Big", "a" * 5000)])
        check_error(r, 431, "one 5000-byte header")
        r = request(p.addr(), "GET", "/many", [("X-H%03d" % i, "v" * 40) for i in range(120)])
        check_error(r, 431, "120 headers of ~50 bytes")
        r = request(p.addr(), "GET", "/fits", [("X-Ok", "a" * 3000)])
        eq(r.status, 200, "3000-byte header under a 4KiB limit")
        check(not any(x in ("/big", "/many") for x in up.head_paths),
              "an oversized head was forwarded")


# --- retries ------------------------------------------------------------------------------------

def test_retry_on_connect_failure():
    live = Upstream("live")
    dead = "127.0.0.1:%d" % closed_port()
    ups = {"up": {"endpoints": [dead, live], "balance": "round_robin"}}
    cfg = simple(ups, retries={"attempts": 2, "on": ["connect-failure"]})
    with Proxy(cfg) as p, Client(p.addr()) as c:
        for i in range(20):
            r = c.request("GET", "/r/%d" % i)
            eq(r.status, 200, "request %d with one dead endpoint and retries" % i)
            eq(r.json()["server"], "live", "answered by")
        eq(live.completed, 20, "requests at the live endpoint")


def test_retries_try_every_endpoint_before_going_back():
    # two answering 503 and one live, attempts 2, random balance: every request must reach the
    # live endpoint within its three tries, because a retry goes to an endpoint this request has
    # not tried yet (avoiding only the last one would let the third try land on the first again)
    bad1, bad2, live = Upstream("bad1", status=503), Upstream("bad2", status=503), Upstream("live")
    ups = {"up": {"endpoints": [bad1, bad2, live], "balance": "random"}}
    cfg = simple(ups, retries={"attempts": 2, "on": [503], "budget": {"percent": 100,
                                                                      "min_retries_per_second": 1000}})
    with Proxy(cfg) as p, Client(p.addr()) as c:
        for i in range(60):
            r = c.request("GET", "/t/%d" % i)
            eq(r.status, 200, "request %d with two failing endpoints and two retries" % i)
            eq(r.json()["server"], "live", "answered by")
        eq(live.completed, 60, "requests at the live endpoint")
        check(bad1.completed <= 60 and bad2.completed <= 60,
              "each failing endpoint tried at most once per request: %d, %d"
              % (bad1.completed, bad2.completed))


def test_without_retries_dead_endpoint_fails():
    # control for the test above: the dead endpoint really is in rotation
    live = Upstream("live")
    dead = "127.0.0.1:%d" % closed_port()
    with Proxy(simple({"up": {"endpoints": [dead, live], "balance": "round_robin"}})) as p:
        codes = [request(p.addr(), "GET", "/n/%d" % i).status for i in range(20)]
        check(502 in codes and 200 in codes, "codes without retries: %r" % codes)


def test_retry_on_503():
    bad = Upstream("bad", status=503)
    good = Upstream("good")
    cfg = simple({"up": {"endpoints": [bad, good], "balance": "round_robin"}},
                 retries={"attempts": 2, "on": [503]})
    with Proxy(cfg) as p, Client(p.addr()) as c:
        for i in range(10):
            r = c.request("GET", "/r/%d" % i)
            eq(r.status, 200, "request %d retried after a 503" % i)
        check(bad.completed >= 1, "the 503 endpoint was never tried")


def test_retry_replays_request_body_after_reset():
    bad = Upstream("bad", action="reset")
    good = Upstream("good")
    cfg = simple({"up": {"endpoints": [bad, good], "balance": "round_robin"}},
                 retries={"attempts": 2, "on": ["reset"]})
    with Proxy(cfg) as p:
        for i in range(4):
            body = ("body-%d-" % i).encode() * 3000
            # PUT: idempotent, so it may be resent after it reached the upstream (a POST may
            # not: test_resilience.py)
            r = request(p.addr(), "PUT", "/p/%d" % i, (), body)
            eq(r.status, 200, "PUT %d retried after a reset" % i)
            e = r.json()
            eq(e["server"], "good", "answered by")
            eq(e["body_sha256"], hashlib.sha256(body).hexdigest(), "replayed body %d" % i)
        check(bad.heads >= 1, "the resetting endpoint was never tried")


def test_per_try_timeout():
    slow = Upstream("slow", delay=3)
    fast = Upstream("fast")
    ups = {"up": {"endpoints": [slow, fast], "balance": "round_robin"}}
    retry = simple(ups, timeout="10s",
                   retries={"attempts": 2, "on": [504], "per_try_timeout": "500ms"})
    with Proxy(retry) as p:
        for i in range(4):
            t0 = time.monotonic()
            r = request(p.addr(), "GET", "/t/%d" % i)
            dt = time.monotonic() - t0
            eq(r.status, 200, "request %d: a slow try is retried after per_try_timeout" % i)
            check(dt < 2.0, "request %d took %.2fs with per_try_timeout 500ms" % (i, dt))
    no_retry = simple(ups, timeout="10s",
                      retries={"attempts": 2, "on": [502], "per_try_timeout": "500ms"})
    with Proxy(no_retry) as p:
        codes = []
        for i in range(4):
            t0 = time.monotonic()
            r = request(p.addr(), "GET", "/n/%d" % i)
            codes.append(r.status)
            if r.status == 504:
                check_error(r, 504, "per_try_timeout without a retry on 504")
                check(0.4 <= time.monotonic() - t0 < 2.0, "504 after %.2fs"
                      % (time.monotonic() - t0))
        check(504 in codes, "per_try_timeout never answered 504: %r" % codes)


if __name__ == "__main__":
    main(globals())
