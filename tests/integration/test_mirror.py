"""Traffic mirroring (route `mirror`): faithful shadow copies, sampling, a slow / dead / hanging
mirror target that never slows the primary, the body cap, per-worker shadow budgets, separate
and reused shadow connections, metrics, shadow log lines and drain.

Semantics under test (issue 3, behaviour.md "Mirroring"):
- each mirror entry samples independently with `percent`, optional `methods` filter;
- the shadow is an HTTP/1.1 request with the primary's method, rewritten target, end-to-end
  headers (same forwarding rules and route header edits as the primary), the same
  x-request-id and the body; Host gets `host_suffix` (default `-shadow`) before any port;
- shadows use their own upstream connections (reused when complete), never the primary's;
- the client never waits for a shadow;
- bodies over `max_body_bytes` are not mirrored (`body_too_large`); over the per-worker budgets
  `limits.shadow_max_in_flight` / `limits.shadow_max_buffered_bytes`, or the mirror upstream's
  max_connections, shadows are dropped as `overloaded`;
- strangler_mirror_requests_total{route,upstream,outcome,reason} counts each sampled shadow once,
  strangler_mirror_responses_total{route,upstream,code} each sent one's answer (or `error`);
- one JSON line per shadow on stdout with "shadow": true; the primary's line lists `mirrored`.
"""

import hashlib
import re
import statistics
import time

from harness import (KiB, MiB, Client, Proxy, RssSampler, Upstream, build_request,
                     check, closed_port, config, echo_header, echo_headers, eq, main,
                     metric_value, pattern, pattern_bytes, pattern_sha, run_threads,
                     sanitizer_env, wait_until)

MREQ = "strangler_mirror_requests_total"
MRESP = "strangler_mirror_responses_total"
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$")
SHADOW_FIELDS = ("ts", "request_id", "method", "path", "protocol", "status", "duration_ms",
                 "route", "upstream", "bytes_in", "bytes_out", "client", "mirrored", "shadow",
                 "outcome")
# framing and connection management legitimately differ between two upstream requests
NOT_COMPARED = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te"}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def mroute(name, prefix, mirror, dest="primary", **kw):
    r = {"name": name, "match": {"path_prefix": prefix},
         "destinations": [{"upstream": dest}], "mirror": mirror}
    r.update(kw)
    return r


def plain_route(name, prefix, dest="primary"):
    return {"name": name, "match": {"path_prefix": prefix}, "destinations": [{"upstream": dest}]}


def m(upstream, **kw):
    d = {"upstream": upstream}
    d.update(kw)
    return d


def mval(p, name, **labels):
    return metric_value(p.metrics(), name, **labels) or 0


def wait_metric(p, name, want, timeout=6.0, settle=0.3, **labels):
    """Polls until the metric reaches `want`, waits `settle` more (to catch double counting),
    and returns the value."""
    wait_until(lambda: mval(p, name, **labels) >= want, timeout, 0.05)
    if settle:
        time.sleep(settle)
    return mval(p, name, **labels)


def shadow_lines(p, pred=None):
    out = []
    for o in p.stdout_records()[0]:
        if o.get("shadow") is True and (pred is None or pred(o)):
            out.append(o)
    return out


def primary_lines(p, pred=None):
    out = []
    for o in p.stdout_records()[0]:
        if o.get("type") == "mirror_diff" or o.get("shadow"):
            continue
        if pred is None or pred(o):
            out.append(o)
    return out


def wait_lines(fn, p, count, pred=None, timeout=5.0):
    wait_until(lambda: len(fn(p, pred)) >= count, timeout, 0.05)
    return fn(p, pred)


def rid(echo):
    return echo_header(echo, "x-request-id")


def e2e_headers(echo):
    """The end-to-end headers an upstream received, names lower-cased, sorted by name (the
    order of values of one name is kept; the order between names is not significant)."""
    return sorted(((k.lower(), v) for k, v in echo["headers"] if k.lower() not in NOT_COMPARED),
                  key=lambda kv: kv[0])


def wait_count(up, n, timeout=5.0, attr="completed"):
    wait_until(lambda: getattr(up, attr) >= n, timeout, 0.02)
    return getattr(up, attr)


def timed_get(c, path, headers=()):
    t0 = time.perf_counter()
    r = c.request("GET", path, headers)
    dt = time.perf_counter() - t0
    eq(r.status, 200, "status of GET %s" % path)
    check(r.keep_alive, "GET %s: response closes the client connection (%r)" % (path, r))
    return dt


def send_pipelined(c, reqs):
    """Sends [(method, path, headers, body)] back to back on one connection; returns responses."""
    c.send(b"".join(build_request(mt, pa, h, b) for mt, pa, h, b in reqs))
    return [c.read_response(mt) for mt, _, _, _ in reqs]


# ---------------------------------------------------------------------------------------------
# 1. faithful copy
# ---------------------------------------------------------------------------------------------

def test_shadow_is_a_faithful_copy():
    primary, mirror, mirror2 = Upstream("primary"), Upstream("mirror"), Upstream("mirror2")
    routes = [
        mroute("api", "/old", [m("mirror", timeout="2s")], rewrite={"path_prefix": "/new"},
               request_headers={"set": {"x-env": "test"}, "remove": ["x-internal"]}),
        mroute("nosuffix", "/same", [m("mirror2", host_suffix="")]),
    ]
    cfg = config({"primary": primary, "mirror": mirror, "mirror2": mirror2}, routes)
    body = pattern_bytes(200 * KiB + 17)
    body_sha = hashlib.sha256(body).hexdigest()
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with Proxy(cfg) as p, Client(p.addr()) as c:
        # POST with a body and a query through a rewrite; proxy-generated x-request-id
        r = c.request("POST", "/old/items?a=1&b=two%20x", [
            ("Host", "api.example.com"), ("X-Custom", "hello"), ("traceparent", trace),
            ("X-Forwarded-For", "203.0.113.7"), ("x-internal", "secret"),
            ("Connection", "keep-alive, X-Hop"), ("X-Hop", "hop-value"),
            ("X-Multi", "1"), ("X-Multi", "2"), ("Content-Type", "application/octet-stream")],
            body)
        eq(r.status, 200, "primary status")
        pe = r.json()
        eq(pe["server"], "primary", "primary served by")
        eq(pe["path"], "/new/items?a=1&b=two%20x", "primary target after rewrite")
        eq(wait_count(mirror, 1), 1, "shadow requests received by the mirror upstream")
        se = mirror.requests[0]
        eq(se["method"], "POST", "shadow method")
        eq(se["path"], "/new/items?a=1&b=two%20x", "shadow target (rewritten path + query)")
        eq(se["version"], "HTTP/1.1", "shadow protocol version")
        eq(echo_headers(se, "host"), ["api.example.com-shadow"], "shadow Host")
        eq(echo_headers(pe, "host"), ["api.example.com"], "primary Host")
        eq(se["body_len"], len(body), "shadow body length")
        eq(se["body_sha256"], body_sha, "shadow body sha256")
        eq(pe["body_sha256"], body_sha, "primary body sha256")
        prid = rid(pe)
        check(prid and len(prid) >= 8, "generated x-request-id on the primary: %r" % prid)
        eq(echo_headers(se, "x-request-id"), [prid], "shadow x-request-id (= the primary's)")
        eq(echo_headers(se, "x-custom"), ["hello"], "shadow custom header")
        eq(echo_headers(se, "traceparent"), [trace], "shadow traceparent")
        eq(echo_headers(se, "x-multi"), ["1", "2"], "shadow repeated header, in order")
        eq(echo_headers(se, "content-type"), ["application/octet-stream"], "shadow content-type")
        xff = echo_header(se, "x-forwarded-for") or ""
        check(re.match(r"^203\.0\.113\.7\s*,\s*127\.0\.0\.1$", xff),
              "shadow x-forwarded-for not appended like the primary's: %r" % xff)
        eq(echo_header(se, "x-forwarded-proto"), "http", "shadow x-forwarded-proto")
        eq(echo_headers(se, "x-env"), ["test"], "route request_headers.set on the shadow")
        eq(echo_headers(se, "x-internal"), [], "route request_headers.remove on the shadow")
        eq(echo_headers(se, "x-hop"), [], "header named in Connection forwarded to the shadow")
        eq(e2e_headers(se), e2e_headers(pe), "end-to-end headers: shadow vs primary")

        # GET with the client's x-request-id, Host with a port
        r = c.request("GET", "/old/x?q=1", [("Host", "api.example.com:8080"),
                                            ("X-Request-Id", "client-rid-42")])
        eq(r.status, 200, "primary status (GET)")
        pe = r.json()
        eq(echo_headers(pe, "x-request-id"), ["client-rid-42"], "primary keeps client request id")
        eq(wait_count(mirror, 2), 2, "shadows received")
        se = mirror.requests[1]
        eq((se["method"], se["path"]), ("GET", "/new/x?q=1"), "shadow method and target (GET)")
        eq(echo_headers(se, "x-request-id"), ["client-rid-42"], "shadow keeps client request id")
        eq(echo_headers(se, "host"), ["api.example.com-shadow:8080"],
           "shadow Host: suffix goes before the port")
        eq(se["body_len"], 0, "shadow of a GET has no body")
        eq(e2e_headers(se), e2e_headers(pe), "end-to-end headers (GET): shadow vs primary")

        # host_suffix "" leaves Host unchanged (with and without a port)
        for host in ("api.example.com", "legacy.internal:9000"):
            r = c.request("PUT", "/same/k", [("Host", host)], b"put-body")
            eq(r.status, 200, "primary status (host_suffix \"\")")
        eq(wait_count(mirror2, 2), 2, "shadows received with host_suffix \"\"")
        # Shadows are peers: two requests' shadows may arrive in either order.
        eq(sorted(echo_header(x, "host") for x in mirror2.requests),
           ["api.example.com", "legacy.internal:9000"], "shadow Host with host_suffix \"\"")
        eq([(x["method"], x["path"], x["body_len"]) for x in mirror2.requests],
           [("PUT", "/same/k", 8)] * 2, "shadow method/target/body with host_suffix \"\"")
        time.sleep(0.3)
        eq(mirror.completed, 2, "shadows on the first mirror (no duplicates)")
        eq(mirror2.completed, 2, "shadows on the second mirror (no duplicates)")
        eq(primary.completed, 4, "primary requests")


# ---------------------------------------------------------------------------------------------
# 2. sampling
# ---------------------------------------------------------------------------------------------

def _blast(addr, paths, method="GET", batch=25, nconn=2):
    """Sends the paths over `nconn` keep-alive connections in pipelined batches; returns
    the primary echoes."""
    parts = [paths[i::nconn] for i in range(nconn)]

    def one(part):
        out = []
        with Client(addr, timeout=30) as c:
            for i in range(0, len(part), batch):
                rs = send_pipelined(c, [(method, x, (), None) for x in part[i:i + batch]])
                for r in rs:
                    eq(r.status, 200, "primary status while sampling")
                    out.append(r.json())
        return out

    return [e for res in run_threads(one, [(pt,) for pt in parts]) for e in res]


def test_percent_sampling_is_independent_per_entry():
    ups = {"primary": Upstream("primary"), "a": Upstream("a"), "b": Upstream("b"),
           "c": Upstream("c"), "zero": Upstream("zero")}
    routes = [
        mroute("sampled", "/s", [m("a", percent=10), m("b", percent=50), m("c", percent=2.5)]),
        mroute("never", "/z", [m("zero", percent=0)]),
    ]
    n = 2000
    with Proxy(config(ups, routes)) as p:
        echoes = _blast(p.addr(), ["/s/%d" % i for i in range(n)])
        eq(len(echoes), n, "primary answers")
        _blast(p.addr(), ["/z/%d" % i for i in range(200)])
        # let the shadows finish, then compare what each upstream saw with the metrics
        for name in ("a", "b", "c"):
            wait_until(lambda: mval(p, MREQ, route="sampled", upstream=name)
                       == ups[name].completed and ups[name].completed > 0, 8)
        time.sleep(0.5)
        got = {k: ups[k].completed for k in ("a", "b", "c")}
        print("    mirrored of %d: %r" % (n, got))
        check(130 <= got["a"] <= 270, "percent 10 mirrored %d of %d (want ~200)" % (got["a"], n))
        check(850 <= got["b"] <= 1150, "percent 50 mirrored %d of %d (want ~1000)"
              % (got["b"], n))
        check(20 <= got["c"] <= 85, "percent 2.5 mirrored %d of %d (want ~50)" % (got["c"], n))
        for k in ("a", "b", "c"):
            eq(mval(p, MREQ, route="sampled", upstream=k, outcome="sent"), got[k],
               "sent metric for mirror %s" % k)
            eq(mval(p, MREQ, route="sampled", upstream=k, outcome="dropped"), 0,
               "dropped metric for mirror %s" % k)
        # independence: with one shared random number, a (10%) would be a subset of b (50%)
        ids = {k: {rid(x) for x in ups[k].requests} for k in ("a", "b")}
        both = len(ids["a"] & ids["b"])
        check(40 <= both <= 170, "requests mirrored to both a (10%%) and b (50%%): %d (want ~100 "
              "when sampled independently; ~%d if one draw decides both)" % (both, got["a"]))
        primary_ids = {rid(e) for e in echoes}
        for k in ("a", "b", "c"):
            check({rid(x) for x in ups[k].requests} <= primary_ids,
                  "shadow request ids of %s not among the primaries'" % k)
        # percent 0
        eq(ups["zero"].accepted, 0, "connections to a percent-0 mirror")
        eq(mval(p, MREQ, route="never"), 0, "mirror metrics of a percent-0 mirror")


def test_methods_filter_and_multiple_mirrors():
    ups = {"primary": Upstream("primary"), "getonly": Upstream("getonly"),
           "one": Upstream("one"), "two": Upstream("two")}
    routes = [
        mroute("filtered", "/f", [m("getonly", methods=["GET"])]),
        mroute("multi", "/m", [m("one"), m("two", host_suffix="-canary")]),
    ]
    with Proxy(config(ups, routes)) as p, Client(p.addr()) as c:
        for i in range(20):
            eq(c.request("GET", "/f/g%d" % i).status, 200, "GET status")
            eq(c.request("POST", "/f/p%d" % i, (), b"x" * 100).status, 200, "POST status")
            eq(c.request("HEAD", "/f/h%d" % i).status, 200, "HEAD status")
        rids = []
        for i in range(20):
            r = c.request("POST", "/m/%d" % i, (), b"body-%d" % i)
            eq(r.status, 200, "multi-mirror primary status")
            rids.append(rid(r.json()))
        wait_count(ups["getonly"], 20)
        wait_count(ups["one"], 20)
        wait_count(ups["two"], 20)
        time.sleep(0.4)
        eq(sorted(x["method"] for x in ups["getonly"].requests), ["GET"] * 20,
           "methods seen by a mirror with methods: [GET]")
        eq(mval(p, MREQ, route="filtered", upstream="getonly", outcome="sent"), 20,
           "sent metric with methods filter")
        for k, host in (("one", "test.local-shadow"), ("two", "test.local-canary")):
            reqs = ups[k].requests
            eq(len(reqs), 20, "shadows on mirror %s" % k)
            eq(sorted(rid(x) for x in reqs), sorted(rids), "request ids on mirror %s" % k)
            eq({echo_header(x, "host") for x in reqs}, {host}, "Host on mirror %s" % k)
            eq(sorted((x["path"], x["body_sha256"]) for x in reqs),
               sorted(("/m/%d" % i, hashlib.sha256(b"body-%d" % i).hexdigest())
                      for i in range(20)), "targets and bodies on mirror %s" % k)
            eq(mval(p, MREQ, route="multi", upstream=k, outcome="sent"), 20,
               "sent metric for mirror %s" % k)
        recs = wait_lines(primary_lines, p, 20, lambda o: o.get("route") == "multi")
        eq(len(recs), 20, "primary access-log lines of the multi-mirror route")
        for rec in recs:
            eq(sorted(rec.get("mirrored") or []), ["one", "two"], "mirrored list %r" % rec)


# ---------------------------------------------------------------------------------------------
# 3. never slows the primary
# ---------------------------------------------------------------------------------------------

N_LAT = 50


def _latency_phase(p, path_prefix, label):
    """Alternates requests to /plain and to the mirrored route on two keep-alive connections;
    checks medians, then that a second request on one connection is served at once (also
    pipelined). Returns the number of requests sent to the mirrored route."""
    plain, mirrored = [], []
    sent = 0
    with Client(p.addr()) as cp, Client(p.addr()) as cm:
        for i in range(3):  # warm-up: connections, pools
            timed_get(cp, "/plain/warm%d" % i)
            timed_get(cm, "%s/warm%d" % (path_prefix, i))
            sent += 1
        for i in range(N_LAT):
            plain.append(timed_get(cp, "/plain/%d" % i))
            mirrored.append(timed_get(cm, "%s/%d" % (path_prefix, i)))
            sent += 1
    mp, mm = statistics.median(plain), statistics.median(mirrored)
    print("    %s: median plain %.2f ms, mirrored %.2f ms, max mirrored %.1f ms"
          % (label, 1000 * mp, 1000 * mm, 1000 * max(mirrored)))
    check(mm < 0.050, "%s: median primary latency with a mirror %.1f ms (want < 50 ms)"
          % (label, 1000 * mm))
    check(mm < mp + 0.020, "%s: median primary latency %.1f ms vs %.1f ms without a mirror"
          % (label, 1000 * mm, 1000 * mp))
    check(max(mirrored) < 0.5, "%s: slowest mirrored primary took %.0f ms (the client waited "
          "for a shadow?)" % (label, 1000 * max(mirrored)))
    # a fresh connection: the second request is served at once after the first
    with Client(p.addr()) as c:
        t0 = time.perf_counter()
        r1 = c.request("GET", "%s/first" % path_prefix)
        t1 = time.perf_counter()
        r2 = c.request("GET", "%s/second" % path_prefix)
        t2 = time.perf_counter()
        sent += 2
        eq((r1.status, r2.status), (200, 200), "%s: statuses of two requests on one connection"
           % label)
        check(r1.keep_alive, "%s: first response closes the connection" % label)
        check(t1 - t0 < 0.3 and t2 - t1 < 0.3, "%s: two requests on one connection took %.0f "
              "and %.0f ms" % (label, 1000 * (t1 - t0), 1000 * (t2 - t1)))
        eq(r2.json()["path"], "%s/second" % path_prefix, "%s: second response" % label)
        # pipelined pair on the same connection
        t0 = time.perf_counter()
        rs = send_pipelined(c, [("GET", "%s/p1" % path_prefix, (), None),
                                ("GET", "%s/p2" % path_prefix, (), None)])
        dt = time.perf_counter() - t0
        sent += 2
        eq([x.status for x in rs], [200, 200], "%s: pipelined statuses" % label)
        eq([x.json()["path"] for x in rs], ["%s/p1" % path_prefix, "%s/p2" % path_prefix],
           "%s: pipelined order" % label)
        check(dt < 0.3, "%s: pipelined pair took %.0f ms" % (label, 1000 * dt))
    return sent


def test_slow_dead_or_hanging_mirror_never_slows_the_primary():
    primary = Upstream("primary")
    slow = Upstream("slow", delay=2)
    hang = Upstream("hang", action="hang")
    refused = "127.0.0.1:%d" % closed_port()
    ups = {"primary": primary, "slow": slow, "hang": hang, "refused": [refused]}
    routes = [plain_route("plain", "/plain"),
              mroute("slow", "/slow", [m("slow", timeout="5s")]),
              mroute("refused", "/refused", [m("refused", timeout="1s")]),
              mroute("hang", "/hang", [m("hang", timeout="1s")])]
    with Proxy(config(ups, routes)) as p:
        n = {}
        for name in ("slow", "refused", "hang"):
            n[name] = _latency_phase(p, "/" + name, name)
        # the primaries' log lines are not held back by the shadows either
        for name in ("slow", "refused", "hang"):
            recs = wait_lines(primary_lines, p, n[name], lambda o, x=name: o.get("route") == x)
            eq(len(recs), n[name], "access-log lines of route %s" % name)
            worst = max(float(r.get("duration_ms", 0)) for r in recs)
            check(worst < 500, "route %s: access-log duration_ms up to %.0f" % (name, worst))
            for rec in recs:
                eq(rec.get("mirrored"), [name], "mirrored list of a %s primary" % name)
        # answering after 2 s (timeout 5 s): sent, code 200
        eq(wait_metric(p, MREQ, n["slow"], 8, route="slow", upstream="slow", outcome="sent"),
           n["slow"], "slow mirror: sent")
        eq(wait_metric(p, MRESP, n["slow"], 8, route="slow", upstream="slow", code="200"),
           n["slow"], "slow mirror: responses code 200")
        eq(mval(p, MREQ, route="slow", upstream="slow", outcome="dropped"), 0,
           "slow mirror: dropped")
        eq(slow.completed, n["slow"], "requests received by the slow mirror")
        # refusing connections: dropped, connect_failed; no responses
        eq(wait_metric(p, MREQ, n["refused"], 5, route="refused", upstream="refused",
                       outcome="dropped", reason="connect_failed"),
           n["refused"], "refused mirror: dropped with reason connect_failed")
        eq(mval(p, MREQ, route="refused", upstream="refused"), n["refused"],
           "refused mirror: all mirror_requests samples")
        eq(mval(p, MRESP, route="refused"), 0, "refused mirror: responses counted")
        # accepting and never answering (timeout 1 s): sent, then code="error"
        eq(wait_metric(p, MREQ, n["hang"], 5, route="hang", upstream="hang", outcome="sent"),
           n["hang"], "hanging mirror: sent")
        eq(wait_metric(p, MRESP, n["hang"], 6, route="hang", upstream="hang", code="error"),
           n["hang"], "hanging mirror: responses code=error after the mirror timeout")
        eq(mval(p, MRESP, route="hang"), n["hang"], "hanging mirror: all responses samples")
        # shadow log lines agree
        for name, outcome, status, reason in (("slow", "sent", 200, None),
                                              ("refused", "dropped", 0, "connect_failed"),
                                              ("hang", "sent", 0, None)):
            lines = wait_lines(shadow_lines, p, n[name], lambda o, x=name: o.get("route") == x)
            eq(len(lines), n[name], "shadow log lines of route %s" % name)
            for ln in lines:
                eq((ln.get("upstream"), ln.get("outcome"), ln.get("status"), ln.get("reason")),
                   (name, outcome, status, reason),
                   "shadow log line (upstream, outcome, status, reason) %r" % ln)


def test_http10_request_without_host_gets_a_real_shadow_host():
    primary, mirror = Upstream("primary"), Upstream("mirror")
    routes = [mroute("h10", "/", [m("mirror")])]
    with Proxy(config({"primary": primary, "mirror": mirror}, routes)) as p, \
            Client(p.addr()) as c:
        c.send(b"GET /old-client HTTP/1.0\r\n\r\n")
        r = c.read_response()
        eq(r.status, 200, "primary status (HTTP/1.0 without Host)")
        ph = echo_header(r.json(), "host")
        eq(wait_count(mirror, 1), 1, "shadow received")
        sh = echo_header(mirror.requests[0], "host")
        check(sh and re.match(r"^[A-Za-z0-9.\[\]:_-]*[A-Za-z0-9\]]-shadow(:[0-9]+)?$", sh),
              "shadow Host %r for a request without Host (the primary got %r)" % (sh, ph))


# ---------------------------------------------------------------------------------------------
# 4. body cap and streaming
# ---------------------------------------------------------------------------------------------

def test_body_over_cap_reaches_primary_and_is_not_mirrored():
    primary, mirror = Upstream("primary"), Upstream("mirror")
    routes = [mroute("capped", "/up", [m("mirror", max_body_bytes="1MiB", timeout="5s")],
                     timeout="30s")]
    big = 2 * MiB
    with Proxy(config({"primary": primary, "mirror": mirror}, routes)) as p, \
            Client(p.addr(), timeout=30) as c:
        # Content-Length over the cap: known up front, the shadow never starts
        r = c.request("POST", "/up/cl", (), pattern_bytes(big))
        eq(r.status, 200, "primary status (2 MiB, Content-Length)")
        eq((r.json()["body_len"], r.json()["body_sha256"]), (big, pattern_sha(big)),
           "primary body (Content-Length)")
        eq(wait_metric(p, MREQ, 1, route="capped", upstream="mirror", outcome="dropped",
                       reason="body_too_large"), 1, "dropped/body_too_large after Content-Length")
        eq(mirror.heads, 0, "request heads the mirror saw for a body over the cap")
        # chunked over the cap: found while streaming; the mirror must not get a complete request
        c.send(build_request("POST", "/up/chunked", [("Transfer-Encoding", "chunked")]))
        for piece in pattern(big, 64 * KiB):
            c.send(b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n")
        c.send(b"0\r\n\r\n")
        r = c.read_response()
        eq(r.status, 200, "primary status (2 MiB, chunked)")
        eq((r.json()["body_len"], r.json()["body_sha256"]), (big, pattern_sha(big)),
           "primary body (chunked)")
        eq(wait_metric(p, MREQ, 2, route="capped", upstream="mirror", outcome="dropped",
                       reason="body_too_large"), 2, "dropped/body_too_large after chunked")
        time.sleep(0.3)
        eq(mirror.completed, 0, "complete requests the mirror received for bodies over the cap")
        eq(mval(p, MREQ, route="capped", outcome="sent"), 0, "sent metric for bodies over the cap")
        # exactly at the cap (Content-Length and chunked): mirrored intact
        for chunked in (False, True):
            r = c.request("POST", "/up/exact", (), pattern_bytes(MiB), chunked=chunked,
                          chunk_size=100 * KiB)
            eq(r.status, 200, "primary status (1 MiB, chunked=%s)" % chunked)
        eq(wait_count(mirror, 2), 2, "shadows of bodies exactly at the cap")
        for x in mirror.requests:
            eq((x["body_len"], x["body_sha256"]), (MiB, pattern_sha(MiB)),
               "shadow body exactly at the cap")
        eq(wait_metric(p, MREQ, 2, route="capped", outcome="sent"), 2, "sent metric at the cap")
        lines = wait_lines(shadow_lines, p, 4)
        drops = [x for x in lines if x.get("outcome") == "dropped"]
        eq(sorted(x.get("reason") for x in drops), ["body_too_large"] * 2,
           "shadow log lines for bodies over the cap: %r" % lines)
        eq(len(lines), 4, "shadow log lines")


def test_shadow_body_is_streamed_as_it_arrives():
    primary, mirror = Upstream("primary"), Upstream("mirror")
    routes = [mroute("stream", "/s", [m("mirror", timeout="10s")], timeout="30s")]
    total = 512 * KiB
    body = pattern_bytes(total)
    with Proxy(config({"primary": primary, "mirror": mirror}, routes)) as p, \
            Client(p.addr(), timeout=30) as c:
        for chunked in (False, True):
            mirror.reset_stats()
            if chunked:
                c.send(build_request("POST", "/s/chunked", [("Transfer-Encoding", "chunked")]))
                c.send(b"%x\r\n" % (16 * KiB) + body[:16 * KiB] + b"\r\n")
            else:
                c.send(build_request("POST", "/s/cl", [("Content-Length", str(total))]))
                c.send(body[:16 * KiB])
            check(wait_until(lambda: mirror.heads >= 1 and primary.heads >= 1, 3),
                  "chunked=%s: with 16 KiB of %d sent, the mirror saw %d heads (the shadow "
                  "waits for the whole body?)" % (chunked, total, mirror.heads))
            time.sleep(0.2)
            if chunked:
                c.send(encode_rest_chunked(body[16 * KiB:]))
            else:
                c.send(body[16 * KiB:])
            r = c.read_response()
            eq(r.status, 200, "primary status")
            eq(r.json()["body_sha256"], hashlib.sha256(body).hexdigest(), "primary body")
            eq(wait_count(mirror, 1), 1, "shadow completed")
            eq(mirror.requests[0]["body_sha256"], hashlib.sha256(body).hexdigest(),
               "shadow body (chunked=%s)" % chunked)


def encode_rest_chunked(data, size=64 * KiB):
    out = [b"%x\r\n" % len(data[i:i + size]) + data[i:i + size] + b"\r\n"
           for i in range(0, len(data), size)]
    return b"".join(out) + b"0\r\n\r\n"


# ---------------------------------------------------------------------------------------------
# 5. budgets
# ---------------------------------------------------------------------------------------------

def test_in_flight_budget_holds_under_a_burst():
    primary = Upstream("primary")
    stuck = Upstream("stuck", body_delay=600)   # accepts, reads the head, never reads the body
    routes = [mroute("burst", "/b", [m("stuck", timeout="20s")], timeout="30s"),
              plain_route("warm", "/warm")]
    cfg = config({"primary": primary, "stuck": stuck}, routes,
                 limits={"shadow_max_in_flight": 4})
    nthreads, per = 12, 10
    total = nthreads * per
    body = pattern_bytes(768 * KiB)
    with Proxy(cfg, env=sanitizer_env()) as p:
        with Client(p.addr()) as c:         # warm up both paths
            for _ in range(2):
                eq(c.request("POST", "/warm", (), body).status, 200, "warm-up")
        time.sleep(0.2)
        idle = p.rss_kb()

        def worker(t):
            lat = []
            with Client(p.addr(), timeout=30) as c:
                for i in range(per):
                    t0 = time.perf_counter()
                    r = c.request("POST", "/b/%d/%d" % (t, i), (), body)
                    lat.append(time.perf_counter() - t0)
                    eq(r.status, 200, "burst primary status")
                    eq(r.json()["body_sha256"], hashlib.sha256(body).hexdigest(), "primary body")
            return lat

        with RssSampler(p.pid) as rss:
            lats = [x for res in run_threads(worker, [(t,) for t in range(nthreads)]) for x in res]
        growth = rss.max - idle
        print("    %d primaries, median %.1f ms, max %.1f ms; RSS +%d KiB; stuck mirror saw %d "
              "connections" % (len(lats), 1000 * statistics.median(lats), 1000 * max(lats),
                               growth, stuck.accepted))
        dropped = wait_metric(p, MREQ, total - 8, 5, route="burst", upstream="stuck",
                              outcome="dropped", reason="overloaded")
        check(dropped >= total - 8, "dropped/overloaded %d of %d shadows with an in-flight budget "
              "of 4 per worker (2 workers) and a mirror that never reads" % (dropped, total))
        check(stuck.max_active <= 8, "the stuck mirror had %d connections open at once (budget "
              "4 in flight per worker)" % stuck.max_active)
        check(growth < 64 * 1024, "RSS grew by %d KiB during the burst" % growth)
        check(max(lats) < 5, "a primary took %.1f s during the burst" % max(lats))
        # release the stuck shadows: every sampled shadow is counted exactly once
        stuck.close()
        wait_until(lambda: mval(p, MREQ, route="burst") >= total, 5)
        time.sleep(0.3)
        eq(mval(p, MREQ, route="burst"), total, "mirror_requests samples (one per shadow)")
        lines = wait_lines(shadow_lines, p, total)
        eq(len(lines), total, "shadow log lines")
        eq(sum(1 for x in lines if x.get("reason") == "overloaded"), dropped,
           "shadow log lines with reason overloaded vs the metric")
        # refused before they existed, they still say which request they copied
        for x in lines:
            if x.get("reason") == "overloaded":
                check(x.get("request_id") and x.get("path", "").startswith("/") and
                      x.get("outcome") == "dropped" and x.get("shadow") is True and
                      x.get("route") == "burst" and x.get("upstream") == "stuck" and
                      x.get("protocol") == "HTTP/1.1",
                      "an overloaded shadow's log line names its request: %r" % x)


def test_buffered_bytes_budget_bounds_memory():
    primary = Upstream("primary")
    stuck = Upstream("stuck", body_delay=600)
    routes = [mroute("buf", "/b", [m("stuck", timeout="20s", max_body_bytes="64MiB")],
                     timeout="60s"),
              plain_route("warm", "/warm")]
    cfg = config({"primary": primary, "stuck": stuck}, routes,
                 limits={"shadow_max_buffered_bytes": "1MiB"})
    size, n = 12 * MiB, 8
    with Proxy(cfg, env=sanitizer_env()) as p:
        with Client(p.addr()) as c:
            eq(c.request("POST", "/warm", (), b"w" * 1000).status, 200, "warm-up")
        time.sleep(0.2)
        idle = p.rss_kb()
        with RssSampler(p.pid) as rss, Client(p.addr(), timeout=60) as c:
            for i in range(n):
                c.send(build_request("POST", "/b/%d" % i, [("Content-Length", str(size))]))
                for piece in pattern(size, 1 * MiB):
                    c.sock.sendall(piece)
                r = c.read_response()
                eq(r.status, 200, "primary status")
                eq(r.json()["body_sha256"], pattern_sha(size), "primary body %d" % i)
        growth = rss.max - idle
        print("    %d x %d MiB; RSS +%d KiB" % (n, size // MiB, growth))
        dropped = wait_metric(p, MREQ, n, 5, route="buf", outcome="dropped", reason="overloaded")
        eq(dropped, n, "dropped/overloaded with a 1 MiB buffered-bytes budget and a mirror "
                       "that never reads 12 MiB bodies")
        eq(mval(p, MREQ, route="buf", outcome="sent"), 0, "sent")
        check(growth < 32 * 1024, "RSS grew by %d KiB (shadow_max_buffered_bytes 1MiB)" % growth)
        stuck.close()


def test_buffered_budget_counts_bytes_held_not_bytes_delivered():
    # the mirror reads every body at once and answers after 1 s: the proxy holds no shadow
    # body bytes while it waits for the answers, so a 2 MiB budget must not drop 8 shadows of
    # 512 KiB each
    primary, slow = Upstream("primary"), Upstream("slow", delay=1)
    routes = [mroute("held", "/h", [m("slow", timeout="5s")])]
    cfg = config({"primary": primary, "slow": slow}, routes,
                 limits={"shadow_max_buffered_bytes": "2MiB"})
    body = pattern_bytes(512 * KiB)
    with Proxy(cfg) as p, Client(p.addr()) as c:
        for i in range(8):
            eq(c.request("POST", "/h/%d" % i, (), body).status, 200, "primary status")
            # let the mirror read this shadow's whole body before the next request starts
            wait_until(lambda: slow.completed >= i + 1, 0.5)
        sent = wait_metric(p, MREQ, 8, 4, route="held", outcome="sent")
        dropped = mval(p, MREQ, route="held", outcome="dropped")
        eq((sent, dropped), (8, 0), "(sent, dropped) with 8 x 512 KiB shadows already delivered "
                                    "to a mirror that answers after 1 s, budget 2 MiB")


def test_mirror_max_connections_drops_overloaded():
    primary, hang = Upstream("primary"), Upstream("hang", action="hang")
    ups = {"primary": primary, "hang": {"endpoints": [hang], "max_connections": 2}}
    routes = [mroute("maxc", "/x", [m("hang", timeout="3s")])]
    with Proxy(config(ups, routes)) as p, Client(p.addr()) as c:
        for i in range(6):
            t0 = time.perf_counter()
            eq(c.request("GET", "/x/%d" % i).status, 200, "primary status")
            check(time.perf_counter() - t0 < 0.3, "primary %d waited for a shadow slot" % i)
            wait_until(lambda: hang.completed >= min(i + 1, 2), 1)
        eq(wait_metric(p, MREQ, 4, route="maxc", outcome="dropped", reason="overloaded"), 4,
           "shadows dropped as overloaded at the mirror upstream's max_connections (2)")
        check(hang.max_active <= 2, "mirror connections at once: %d (max_connections 2)"
              % hang.max_active)
        eq(wait_metric(p, MREQ, 2, route="maxc", outcome="sent"), 2, "sent")
        eq(mval(p, MREQ, route="maxc", outcome="dropped"), 4, "dropped (all reasons)")


# ---------------------------------------------------------------------------------------------
# 6. connections
# ---------------------------------------------------------------------------------------------

def test_shadow_connections_are_reused_and_separate():
    primary, mirror = Upstream("primary"), Upstream("mirror")
    routes = [mroute("reuse", "/r", [m("mirror")])]
    with Proxy(config({"primary": primary, "mirror": mirror}, routes)) as p:
        def worker(t):
            with Client(p.addr()) as c:
                for i in range(50):
                    eq(c.request("GET", "/r/%d/%d" % (t, i)).status, 200, "status")
        run_threads(worker, [(t,) for t in range(4)])
        eq(wait_count(mirror, 200), 200, "shadows received")
        time.sleep(0.3)
        conns = {x["conn"] for x in mirror.requests}
        print("    200 shadows over %d mirror connections; primary %d connections"
              % (mirror.accepted, primary.accepted))
        check(mirror.accepted <= 20, "200 shadows used %d mirror connections (keep-alive reuse "
              "expected)" % mirror.accepted)
        check(max(x["nreq"] for x in mirror.requests) > 1, "no mirror connection carried a "
              "second shadow (%d connections)" % len(conns))
        check(primary.accepted <= 20, "primary connections with mirroring: %d" % primary.accepted)
        eq(mval(p, MREQ, route="reuse", outcome="sent"), 200, "sent metric")
        eq(mval(p, MRESP, route="reuse", code="200"), 200, "responses code 200")


def test_mirror_to_the_primary_upstream_uses_separate_connections():
    both = Upstream("both")
    routes = [mroute("self", "/x", [m("both")], dest="both")]
    with Proxy(config({"both": both}, routes)) as p:
        def worker(t):
            with Client(p.addr()) as c:
                for i in range(40):
                    r = c.request("GET", "/x/%d/%d" % (t, i), [("Host", "svc.local")])
                    eq(r.status, 200, "status")
                    eq(echo_header(r.json(), "host"), "svc.local", "primary Host")
        run_threads(worker, [(t,) for t in range(3)])
        eq(wait_count(both, 240), 240, "requests (primaries + shadows) the upstream received")
        time.sleep(0.3)
        eq(both.completed, 240, "requests the upstream received")
        by_conn = {}
        for x in both.requests:
            by_conn.setdefault(x["conn"], set()).add(echo_header(x, "host"))
        mixed = [c for c, hosts in by_conn.items() if len(hosts) > 1]
        eq(mixed, [], "connections carrying both primary and shadow requests")
        hosts = sorted(echo_header(x, "host") for x in both.requests)
        eq(hosts, ["svc.local"] * 120 + ["svc.local-shadow"] * 120, "Hosts received")
        check(both.accepted <= 20, "%d connections for 240 requests" % both.accepted)


def test_shadows_never_take_the_primarys_connection_slots():
    # the mirror upstream is also the primary destination and has max_connections: 4; four
    # concurrent primaries must all get a slot, whatever happens to their shadows
    both = Upstream("both", delay=0.4)
    ups = {"both": {"endpoints": [both], "max_connections": 4}}
    routes = [mroute("slots", "/x", [m("both", timeout="5s")], dest="both")]
    with Proxy(config(ups, routes)) as p:
        for rnd in range(3):
            def one(i):
                with Client(p.addr()) as c:
                    r = c.request("GET", "/x/%d/%d" % (rnd, i))
                    return r.status
            statuses = run_threads(one, [(i,) for i in range(4)])
            eq(statuses, [200] * 4, "round %d: statuses of 4 concurrent primaries with "
                                    "max_connections 4 and a mirror to the same upstream" % rnd)
            time.sleep(0.6)
        wait_until(lambda: mval(p, MREQ, route="slots") >= 12, 5)
        time.sleep(0.5)
        eq(mval(p, MREQ, route="slots"), 12, "mirror_requests samples (sent + dropped)")
        eq(mval(p, MREQ, route="slots", outcome="dropped"),
           mval(p, MREQ, route="slots", outcome="dropped", reason="overloaded"),
           "drop reasons when max_connections is reached")


def _shadow_one_at_a_time(p, c, route, n, method="GET", wait=True):
    """n requests; after each, waits (up to 3 s) until its shadow's response is counted, so a
    finished shadow's connection can be reused by the next. Returns the shadows that did not
    end within 3 s."""
    late = 0
    for i in range(n):
        before = mval(p, MRESP, route=route)
        t0 = time.perf_counter()
        r = c.request(method, "/%s/%s%d" % (route, method, i))
        dt = time.perf_counter() - t0
        eq(r.status, 200, "primary status (%s %s)" % (method, route))
        check(dt < 0.5, "primary %s %s took %.0f ms" % (method, route, 1000 * dt))
        if wait and not wait_until(lambda: mval(p, MRESP, route=route) > before, 3):
            late += 1
    return late


def _responses_by_code(p, route):
    text = p.metrics()
    out = {}
    for ln in text.splitlines():
        mm = re.match(r'^%s\{(.*)\} (\S+)$' % MRESP, ln)
        if mm and 'route="%s"' % route in mm.group(1):
            code = re.search(r'code="([^"]*)"', mm.group(1))
            out[code.group(1) if code else "?"] = int(float(mm.group(2)))
    return out


def test_shadow_responses_are_read_to_the_end():
    """Every kind of answer is read to its end and counted by its status, or as an error; a
    complete answer leaves the shadow connection reusable."""
    primary = Upstream("primary")
    ups = {
        "primary": primary,
        "ok": Upstream("ok"),
        "nocontent": Upstream("nocontent", status=204),
        "early": Upstream("early", interim=[103]),
        "big": Upstream("big", body_bytes=5 * MiB, framing="chunked"),
        "eof": Upstream("eof", body_bytes=100 * KiB, framing="close"),
        "garbage": Upstream("garbage", action="garbage"),
    }
    routes = [mroute(k, "/" + k, [m(k, timeout="5s")]) for k in ups if k != "primary"]
    expect = {"ok": "200", "nocontent": "204", "early": "200", "big": "200", "eof": "200",
              "garbage": "error"}
    n = 3
    with Proxy(config(ups, routes)) as p, Client(p.addr()) as c:
        late = {route: _shadow_one_at_a_time(p, c, route, n) for route in expect}
        time.sleep(0.3)
        got = {route: _responses_by_code(p, route) for route in expect}
        eq(got, {route: {code: n} for route, code in expect.items()},
           "shadow responses by code (shadows that took > 3 s: %r)" % late)
        for route in expect:
            eq(mval(p, MREQ, route=route, outcome="sent"), n, "%s mirror: sent" % route)
        for route in ("ok", "nocontent", "early", "big"):
            eq(ups[route].accepted, 1, "%s mirror: connections for %d sequential shadows "
                                       "(complete responses: reused)" % (route, n))
        eq(ups["eof"].accepted, n, "close-delimited answers: one connection per shadow")


def test_shadow_of_head_does_not_wait_for_a_body():
    # a HEAD answer carries Content-Length but no body: the shadow ends with the head
    primary, mirror = Upstream("primary"), Upstream("mirror")
    routes = [mroute("head", "/head", [m("mirror", timeout="5s")])]
    with Proxy(config({"primary": primary, "mirror": mirror}, routes)) as p, \
            Client(p.addr()) as c:
        late = _shadow_one_at_a_time(p, c, "head", 3, method="HEAD")
        eq(late, 0, "HEAD shadows still waiting 3 s after their answer (responses %r)"
           % _responses_by_code(p, "head"))
        eq(_responses_by_code(p, "head"), {"200": 3}, "HEAD shadow responses by code")
        eq(mirror.accepted, 1, "connections for 3 sequential HEAD shadows (reused)")


def test_shadow_timeout_while_reading_the_response_counts_error():
    # the head comes at once, the 2 MiB body trickles for ~6 s; the mirror timeout is 1 s
    primary = Upstream("primary")
    trickle = Upstream("trickle", body_bytes=2 * MiB, chunk=16 * KiB, chunk_delay=0.05)
    routes = [mroute("trickle", "/trickle", [m("trickle", timeout="1s")])]
    with Proxy(config({"primary": primary, "trickle": trickle}, routes)) as p, \
            Client(p.addr()) as c:
        _shadow_one_at_a_time(p, c, "trickle", 2, wait=False)
        wait_until(lambda: sum(_responses_by_code(p, "trickle").values()) >= 2, 4)
        eq(_responses_by_code(p, "trickle"), {"error": 2},
           "responses of shadows whose mirror timeout expired while reading the body")
        eq(mval(p, MREQ, route="trickle", outcome="sent"), 2, "sent")
        lines = wait_lines(shadow_lines, p, 2)
        eq([x.get("outcome") for x in lines], ["sent"] * 2, "shadow lines' outcome")


# ---------------------------------------------------------------------------------------------
# 7. metrics and log lines
# ---------------------------------------------------------------------------------------------

def test_metrics_and_shadow_log_lines():
    primary = Upstream("primary")
    m500 = Upstream("m500", status=500)
    half = Upstream("half")
    ups = {"primary": primary, "m500": m500, "half": half}
    routes = [mroute("logged", "/l", [m("m500")], rewrite={"path_prefix": "/new"}),
              mroute("halfroute", "/h", [m("half", percent=50)])]
    with Proxy(config(ups, routes)) as p, Client(p.addr()) as c:
        n = 30
        for i in range(n):
            r = c.request("POST", "/l/%d?x=%d" % (i, i), [("X-Request-Id", "rid-%d" % i)],
                          b"y" * (100 + i))
            eq(r.status, 200, "primary status (the shadow answers 500)")
        for i in range(100):
            eq(c.request("GET", "/h/%d" % i).status, 200, "primary status")
        eq(wait_metric(p, MREQ, n, route="logged", upstream="m500", outcome="sent"), n,
           "sent metric")
        eq(wait_metric(p, MRESP, n, route="logged", upstream="m500", code="500"), n,
           "responses metric with the shadow's status")
        eq(mval(p, MRESP, route="logged", code="200"), 0, "responses code 200 (primary's status)")
        eq(mval(p, MREQ, route="logged", outcome="dropped"), 0, "dropped metric")
        text = p.metrics()
        check(re.search(r'^%s\{[^}]*outcome="sent"[^}]*\} ' % MREQ, text, re.M),
              "no %s sample with outcome=\"sent\"" % MREQ)
        # shadow lines
        lines = wait_lines(shadow_lines, p, n, lambda o: o.get("route") == "logged")
        eq(len(lines), n, "shadow log lines of route logged")
        prim = wait_lines(primary_lines, p, n, lambda o: o.get("route") == "logged")
        eq(len(prim), n, "primary log lines of route logged")
        by_rid = {x.get("request_id"): x for x in prim}
        eq(sorted(x.get("request_id") for x in lines), sorted("rid-%d" % i for i in range(n)),
           "shadow log lines' request ids")
        for ln in lines:
            for f in SHADOW_FIELDS:
                check(f in ln, "field %r missing from shadow line %r" % (f, ln))
            i = int(ln["request_id"].split("-")[1])
            check(RFC3339_MS.match(str(ln["ts"])), "shadow ts %r" % ln["ts"])
            eq((ln["method"], ln["path"], ln["protocol"], ln["status"], ln["upstream"],
                ln["mirrored"], ln["outcome"]),
               ("POST", "/new/%d?x=%d" % (i, i), "HTTP/1.1", 500, "m500", [], "sent"),
               "shadow line %r" % ln)
            check("reason" not in ln, "reason on a sent shadow line %r" % ln)
            check(isinstance(ln["duration_ms"], (int, float)) and ln["duration_ms"] >= 0,
                  "shadow duration_ms %r" % ln["duration_ms"])
            check(isinstance(ln["bytes_in"], int) and isinstance(ln["bytes_out"], int),
                  "shadow byte counts %r" % ln)
            pl = by_rid.get(ln["request_id"])
            check(pl is not None, "no primary line for %r" % ln["request_id"])
            eq(ln["client"], pl.get("client"), "shadow line client vs primary's")
            eq(ln["bytes_in"], 100 + i, "shadow line bytes_in (the body copied)")
        for pl in prim:
            eq(pl.get("mirrored"), ["m500"], "primary line mirrored %r" % pl)
            check(not pl.get("shadow"), "primary line marked shadow %r" % pl)
            eq(pl.get("status"), 200, "primary line status")
        # 50 %: primary lines' `mirrored`, shadow lines, metric and the upstream agree
        sent = None
        for _ in range(40):
            sent = mval(p, MREQ, route="halfroute", upstream="half", outcome="sent")
            if sent == half.completed and len(shadow_lines(
                    p, lambda o: o.get("route") == "halfroute")) == sent:
                break
            time.sleep(0.1)
        hp = wait_lines(primary_lines, p, 100, lambda o: o.get("route") == "halfroute")
        eq(len(hp), 100, "primary lines of route halfroute")
        marked = {x["request_id"] for x in hp if x.get("mirrored") == ["half"]}
        unmarked = [x for x in hp if x.get("mirrored") != ["half"]]
        for x in unmarked:
            eq(x.get("mirrored"), [], "mirrored list of an unsampled primary")
        sl = shadow_lines(p, lambda o: o.get("route") == "halfroute")
        check(20 <= sent <= 80, "50%% of 100 sampled %r" % sent)
        eq(half.completed, sent, "shadows the mirror received vs the sent metric")
        eq({x["request_id"] for x in sl}, marked, "shadow lines vs primaries marked mirrored")
        eq(len(sl), sent, "shadow lines vs the sent metric")
        eq({rid(x) for x in half.requests}, marked, "request ids the mirror saw")


# ---------------------------------------------------------------------------------------------
# 8. drain
# ---------------------------------------------------------------------------------------------

def test_sigterm_lets_shadows_in_flight_finish():
    primary = Upstream("primary")
    slow = Upstream("slow", delay=1)
    routes = [mroute("drain", "/d", [m("slow", timeout="5s")])]
    with Proxy(config({"primary": primary, "slow": slow}, routes)) as p:
        with Client(p.addr()) as c:
            for i in range(5):
                eq(c.request("POST", "/d/%d" % i, (), b"z" * 1000).status, 200, "status")
        check(wait_until(lambda: slow.heads >= 5, 2), "shadows reached the mirror")
        t0 = time.monotonic()
        rc = p.stop()
        dt = time.monotonic() - t0
        eq(rc, 0, "exit status after SIGTERM")
        print("    exited %.2fs after SIGTERM" % dt)
        eq(slow.completed, 5, "shadow requests the mirror received")
        lines = shadow_lines(p)
        eq(len(lines), 5, "shadow log lines flushed before exit")
        eq([x.get("status") for x in lines], [200] * 5, "statuses of shadows finished in drain")
        check(dt < 3.5, "exit took %.1fs with 1 s shadows in flight" % dt)



def test_sigterm_does_not_wait_past_drain_timeout_for_hanging_shadows():
    primary, hang = Upstream("primary"), Upstream("hang", action="hang")
    routes = [mroute("drainhang", "/d", [m("hang", timeout="30s")])]
    with Proxy(config({"primary": primary, "hang": hang}, routes)) as p:  # drain_timeout 3s
        with Client(p.addr()) as c:
            for i in range(4):
                eq(c.request("GET", "/d/%d" % i).status, 200, "status")
        check(wait_until(lambda: hang.completed >= 4, 2), "shadows reached the mirror")
        t0 = time.monotonic()
        rc = p.stop()
        dt = time.monotonic() - t0
        print("    exited %.2fs after SIGTERM" % dt)
        eq(rc, 0, "exit status after SIGTERM")
        check(dt < 4.5, "exit took %.1fs (drain_timeout 3s) with hanging shadows" % dt)
        lines = shadow_lines(p)
        eq(len(lines), 4, "shadow log lines of shadows cut by the exit")


if __name__ == "__main__":
    main(globals())
