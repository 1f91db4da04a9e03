"""Resilience: active health checks, outlier detection, 503 when no endpoint is left, retries
(idempotency, a different endpoint, per-try timeout, the retry budget), and accept() running out
of file descriptors."""

import hashlib
import json
import os
import resource
import socket
import time

from harness import (Client, Proxy, Upstream, check, closed_port, config, eq, main, metric_value,
                     request, wait_until)

HC = {"path": "/healthz", "interval": "200ms", "timeout": "500ms", "healthy_threshold": 2,
      "unhealthy_threshold": 2}


class HealthUpstream(Upstream):
    """An Upstream whose GET /healthz answers `self.health` (changeable at any time) and is
    counted in `self.checks` (with the request heads in `self.check_heads`); other paths
    behave as in Upstream."""

    def __init__(self, name, health=200, **opts):
        self.health = health
        self.checks = 0
        self.check_heads = []
        Upstream.__init__(self, name, **opts)

    def _one(self, conn, reader, head, cid, nreq):
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        if first.split(" ")[1:2] == ["/healthz"]:
            with self.lock:
                self.checks += 1
                self.check_heads.append(head)
            conn.sendall(b"HTTP/1.1 %d Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhc"
                         % self.health)
            return False
        return Upstream._one(self, conn, reader, head, cid, nreq)


def upstream_cfg(endpoints, **kw):
    d = {"endpoints": list(endpoints), "balance": "round_robin", "connect_timeout": "2s"}
    d.update(kw)
    return d


def one_route(ups, workers=2, **route_kw):
    r = {"name": "r", "destinations": [{"upstream": "up"}]}
    r.update(route_kw)
    return config({"up": ups}, [r], workers=workers)


def healthy(p, ep):
    return metric_value(p.metrics(), "strangler_upstream_endpoint_healthy", upstream="up",
                        endpoint=str(ep))


def wait_healthy(p, ep, want, timeout=6.0):
    ok = wait_until(lambda: healthy(p, ep) == want, timeout)
    check(ok, "endpoint %s healthy gauge is %r after %ss, want %r" % (ep, healthy(p, ep), timeout, want))


def servers(n_requests, p, path="/x", **kw):
    out = []
    for i in range(n_requests):
        r = request(p.addr(), "GET", "%s/%d" % (path, i), **kw)
        eq(r.status, 200, "request %d" % i)
        out.append(r.json()["server"])
    return out


# --- active health checks ----------------------------------------------------------------------

def test_health_check_flapping_endpoint_leaves_and_rejoins_rotation():
    a = HealthUpstream("a")
    b = HealthUpstream("b")
    with Proxy(one_route(upstream_cfg([a, b], health_check=HC))) as p:
        wait_until(lambda: a.checks >= 1 and b.checks >= 1, 5)
        eq(healthy(p, a), 1.0, "a healthy at start")
        eq(sorted(set(servers(10, p))), ["a", "b"], "both endpoints in rotation")

        a.health = 500
        wait_healthy(p, a, 0)
        eq(healthy(p, b), 1.0, "b still healthy")
        eq(set(servers(20, p)), {"b"}, "requests while a fails its health check")
        check("unhealthy" in p.stderr(), "no log line about the unhealthy endpoint:\n" + p.stderr()[-2000:])

        a.health = 200
        wait_healthy(p, a, 1)
        eq(sorted(set(servers(10, p))), ["a", "b"], "a back in rotation after passing checks")
        m = p.metrics()
        check(metric_value(m, "strangler_upstream_health_checks_total", upstream="up", endpoint=str(a),
                           result="failure") >= 2, "failed checks counted")
        check(metric_value(m, "strangler_upstream_health_checks_total", upstream="up", endpoint=str(a),
                           result="success") >= 3, "passed checks counted")
        head = a.check_heads[-1].decode("latin-1")
        check(head.startswith("GET /healthz HTTP/1.1\r\n"), "probe request line: %r" % head[:60])
        check("strangler-health-check" in head, "probe user agent: %r" % head)


def test_health_checks_run_once_per_interval_per_process():
    a = HealthUpstream("a")
    hc = dict(HC, interval="250ms")
    with Proxy(one_route(upstream_cfg([a], health_check=hc), workers=4)) as p:
        wait_until(lambda: a.checks >= 1, 5)
        n0, t0 = a.checks, time.monotonic()
        time.sleep(2.5)
        n, dt = a.checks - n0, time.monotonic() - t0
        # one probe per 250 ms (plus its own duration) for the process, not one per worker
        check(3 <= n <= dt / 0.25 + 2, "%d probes in %.1fs with interval 250ms and 4 workers" % (n, dt))


def test_endpoint_that_stops_listening_leaves_rotation():
    a = HealthUpstream("a")
    b = HealthUpstream("b")
    with Proxy(one_route(upstream_cfg([a, b], health_check=HC))) as p:
        wait_until(lambda: b.checks >= 1, 5)
        b.close()
        wait_healthy(p, b, 0)
        eq(set(servers(20, p)), {"a"}, "requests after b stopped listening (no retries configured)")


def test_all_endpoints_down_is_503_at_once():
    # TEST-NET-1 addresses: nothing answers (connects hang or fail); connect_timeout is 2s
    eps = ["192.0.2.1:81", "192.0.2.2:81"]
    ups = upstream_cfg(eps, health_check=dict(HC, timeout="300ms", unhealthy_threshold=1))
    with Proxy(one_route(ups, timeout="10s")) as p:
        for ep in eps:
            wait_healthy(p, ep, 0)
        for i in range(10):
            t0 = time.monotonic()
            r = request(p.addr(), "GET", "/down/%d" % i)
            dt = time.monotonic() - t0
            eq(r.status, 503, "request %d with every endpoint unhealthy" % i)
            check(b"unavailable" in r.body, "503 body: %r" % r.body)
            check(dt < 1.0, "503 took %.2fs (connect_timeout is 2s)" % dt)
        log = p.access_log(10)
        check(all(e.get("error") == "upstream unavailable: no healthy endpoint" for e in log[-10:]),
              "access-log error: %r" % [e.get("error") for e in log[-10:]])


def test_health_check_of_an_h2c_upstream():
    from test_h2_upstream import H2Upstream
    good, bad = H2Upstream(), H2Upstream()
    ups = {"good": {"endpoints": [good.addr], "protocol": "h2c", "health_check": dict(HC)},
           # the Python h2 server resets stream /reset: a failing check
           "bad": {"endpoints": [bad.addr], "protocol": "h2c", "health_check": dict(HC, path="/reset")}}
    routes = [{"name": "bad", "match": {"path_prefix": "/bad"}, "destinations": [{"upstream": "bad"}]},
              {"name": "good", "destinations": [{"upstream": "good"}]}]
    try:
        with Proxy(config(ups, routes)) as p:
            gauge = lambda u, a: metric_value(p.metrics(), "strangler_upstream_endpoint_healthy",
                                              upstream=u, endpoint=a)
            check(wait_until(lambda: gauge("bad", bad.addr) == 0, 6), "h2c endpoint failing /reset still healthy")
            eq(gauge("good", good.addr), 1.0, "h2c endpoint answering 200")
            probes = [h for h, _ in good.seen.requests if h.get(":path") == "/healthz"]
            check(probes, "no HTTP/2 probe reached the good upstream")
            eq(probes[0].get(":method"), "GET", "probe method")
            eq(probes[0].get("user-agent"), "strangler-health-check", "probe user agent")
            eq(request(p.addr(), "GET", "/ok").status, 200, "request to the healthy h2c upstream")
            eq(request(p.addr(), "GET", "/bad/x").status, 503, "request to the unhealthy h2c upstream")
    finally:
        good.stop()
        bad.stop()


def test_health_check_of_an_h2_upstream_over_tls():
    from test_h2_upstream import H2Upstream
    from test_tls import make_pki
    pki = make_pki()
    up = H2Upstream(tls_files=(pki("srv.crt"), pki("srv.key")))
    ups = {"up": {"endpoints": [up.addr], "protocol": "h2", "tls": {"ca": pki("ca.crt"), "sni": "localhost"},
                  "health_check": dict(HC)},
           # same server, but the certificate does not match this name: every check fails
           "wrong": {"endpoints": [up.addr], "protocol": "h2", "tls": {"ca": pki("ca.crt"), "sni": "other.test"},
                     "health_check": dict(HC)}}
    try:
        with Proxy(config(ups, [{"name": "r", "destinations": [{"upstream": "up"}]}])) as p:
            gauge = lambda u: metric_value(p.metrics(), "strangler_upstream_endpoint_healthy", upstream=u,
                                           endpoint=up.addr)
            check(wait_until(lambda: gauge("wrong") == 0, 6), "checks with a mismatched certificate pass")
            check(wait_until(lambda: any(h.get(":path") == "/healthz" for h, _ in up.seen.requests), 5),
                  "no probe over h2 + TLS")
            probe = [h for h, _ in up.seen.requests if h.get(":path") == "/healthz"][0]
            eq(probe.get(":scheme"), "https", "probe :scheme")
            eq(gauge("up"), 1.0, "h2 + TLS endpoint answering 200")
            # the server records a probe before answering it: wait for the result
            check(wait_until(lambda: (metric_value(p.metrics(), "strangler_upstream_health_checks_total",
                                                   upstream="up", endpoint=up.addr, result="success") or 0) >= 1, 5),
                  "successful checks counted")
            eq(request(p.addr(), "GET", "/tls").status, 200, "request through the checked upstream")
    finally:
        up.stop()


def test_reload_keeps_or_drops_health_state():
    a = HealthUpstream("a", health=500)
    b = HealthUpstream("b")
    with_hc = one_route(upstream_cfg([a, b], health_check=HC))
    with Proxy(with_hc) as p:
        wait_healthy(p, a, 0)
        # a reload that keeps the health check keeps the endpoint out
        with open(p.config_path, "a") as f:
            f.write("# touched\n")
        eq(request(p.admin, "POST", "/reload").status, 200, "reload")
        eq(set(servers(10, p)), {"b"}, "requests after a reload that kept health_check")
        # a reload without health_check puts every endpoint back in rotation
        with open(p.config_path, "w") as f:
            f.write(one_route(upstream_cfg([a, b])))
        eq(request(p.admin, "POST", "/reload").status, 200, "reload without health_check")
        eq(healthy(p, a), 1.0, "gauge after health_check was removed")
        eq(sorted(set(servers(10, p))), ["a", "b"], "requests after health_check was removed")
        n = a.checks
        time.sleep(0.6)
        eq(a.checks, n, "checks continue after health_check was removed")


# --- outlier detection -------------------------------------------------------------------------

def test_outlier_ejection_after_consecutive_5xx_and_return():
    bad = Upstream("bad", status=500)
    good = Upstream("good")
    od = {"consecutive_failures": 3, "ejection_time": "1500ms"}
    with Proxy(one_route(upstream_cfg([bad, good], outlier_detection=od))) as p:
        codes = [request(p.addr(), "GET", "/o/%d" % i).status for i in range(30)]
        eq(bad.completed, 3, "requests at the failing endpoint before its ejection")
        eq(codes.count(500), 3, "500s passed to clients")
        eq(healthy(p, bad), 0.0, "ejected endpoint's gauge")
        eq(metric_value(p.metrics(), "strangler_upstream_ejections_total", upstream="up", endpoint=str(bad)),
           1.0, "ejections counted")
        check("ejected" in p.stderr(), "no log line about the ejection")
        check(wait_until(lambda: healthy(p, bad) == 1, 4), "endpoint not back after ejection_time")
        n = bad.completed
        for i in range(10):
            request(p.addr(), "GET", "/again/%d" % i)
        check(bad.completed > n, "the endpoint got no request after its ejection ended")


def test_the_last_answering_endpoint_is_not_ejected_for_its_answers():
    only = Upstream("only", status=500)
    od = {"consecutive_failures": 2, "ejection_time": "30s"}
    with Proxy(one_route(upstream_cfg([only], outlier_detection=od))) as p:
        codes = [request(p.addr(), "GET", "/l/%d" % i).status for i in range(8)]
        eq(codes, [500] * 8, "answers of the only endpoint")
        eq(only.completed, 8, "requests that reached it")
        eq(healthy(p, only), 1.0, "still in rotation")


def test_unreachable_endpoints_are_ejected_then_503_at_once():
    dead = ["127.0.0.1:%d" % closed_port(), "127.0.0.1:%d" % closed_port()]
    od = {"consecutive_failures": 2, "ejection_time": "30s"}
    with Proxy(one_route(upstream_cfg(dead, outlier_detection=od))) as p:
        codes = [request(p.addr(), "GET", "/d/%d" % i).status for i in range(10)]
        eq(codes[:4], [502] * 4, "connect failures before the ejections")
        eq(codes[4:], [503] * 6, "answers once every endpoint is ejected")
        for ep in dead:
            eq(healthy(p, ep), 0.0, "gauge of %s" % ep)


# --- retries -----------------------------------------------------------------------------------

def test_retries_go_to_the_healthy_endpoint():
    bad = Upstream("bad", status=503)
    good = Upstream("good")
    with Proxy(one_route(upstream_cfg([bad, good]), retries={"attempts": 1, "on": [503]})) as p:
        for i in range(10):
            r = request(p.addr(), "GET", "/r/%d" % i)
            eq(r.status, 200, "request %d" % i)
            eq(r.json()["server"], "good", "answered by")
        check(1 <= bad.completed <= 10, "the failing endpoint was tried %d times" % bad.completed)
        m = p.metrics()
        eq(metric_value(m, "strangler_retries_total", route="r", upstream="up", result="sent"),
           float(bad.completed), "retries counted")


def test_post_that_reached_the_upstream_is_not_retried():
    bad = Upstream("bad", action="reset")
    good = Upstream("good")
    cfg = one_route(upstream_cfg([bad, good]), retries={"attempts": 2, "on": ["reset", 503]})
    with Proxy(cfg) as p:
        codes = []
        for i in range(12):
            body = b"post-%d" % i * 100
            r = request(p.addr(), "POST", "/p/%d" % i, (), body)
            codes.append(r.status)
            if r.status == 200:
                eq(r.json()["server"], "good", "a POST answered by")
        check(502 in codes, "no POST reached the resetting endpoint: %r" % codes)
        eq(codes.count(502), bad.heads, "every POST the resetting endpoint saw failed, none was resent")
        eq(good.completed, codes.count(200), "POSTs at the good endpoint")

        # idempotent methods, and POST with an Idempotency-Key, are retried
        for i in range(6):
            body = b"put-%d" % i * 100
            r = request(p.addr(), "PUT", "/u/%d" % i, (), body)
            eq(r.status, 200, "PUT %d" % i)
            eq(r.json()["body_sha256"], hashlib.sha256(body).hexdigest(), "replayed PUT body")
            r = request(p.addr(), "POST", "/k/%d" % i, [("Idempotency-Key", "k-%d" % i)], b"k" * 50)
            eq(r.status, 200, "POST with Idempotency-Key %d" % i)


def test_post_is_retried_after_a_connect_failure():
    good = Upstream("good")
    dead = "127.0.0.1:%d" % closed_port()
    cfg = one_route(upstream_cfg([dead, good]), retries={"attempts": 1, "on": ["connect-failure"]})
    with Proxy(cfg) as p:
        for i in range(8):
            body = b"c-%d" % i * 1000
            r = request(p.addr(), "POST", "/c/%d" % i, (), body)
            eq(r.status, 200, "POST %d with a dead endpoint in rotation" % i)
            eq(r.json()["body_sha256"], hashlib.sha256(body).hexdigest(), "body of POST %d" % i)


def test_per_try_timeout_retries_elsewhere_and_ejects_the_slow_endpoint():
    slow = Upstream("slow", delay=3)
    fast = Upstream("fast")
    ups = upstream_cfg([slow, fast], outlier_detection={"consecutive_failures": 2, "ejection_time": "30s"})
    cfg = one_route(ups, timeout="10s", retries={"attempts": 1, "on": [504], "per_try_timeout": "300ms"})
    with Proxy(cfg) as p:
        for i in range(8):
            t0 = time.monotonic()
            r = request(p.addr(), "GET", "/t/%d" % i)
            dt = time.monotonic() - t0
            eq(r.status, 200, "request %d" % i)
            eq(r.json()["server"], "fast", "answered by")
            check(dt < 1.5, "request %d took %.2fs with per_try_timeout 300ms" % (i, dt))
        eq(slow.heads, 2, "tries that reached the slow endpoint before its ejection")
        eq(healthy(p, slow), 0.0, "slow endpoint ejected")


def _budget_run(budget):
    bad = Upstream("bad", status=503)
    retries = {"attempts": 3, "on": [503], "budget": budget}
    with Proxy(one_route(upstream_cfg([bad]), retries=retries)) as p:
        with Client(p.addr()) as c:
            for i in range(100):
                eq(c.request("GET", "/b/%d" % i).status, 503, "request %d" % i)
        m = p.metrics()
        sent = metric_value(m, "strangler_retries_total", route="r", upstream="up", result="sent") or 0
        denied = metric_value(m, "strangler_retries_total", route="r", upstream="up", result="denied") or 0
        return bad.completed, sent, denied


def test_retry_budget_caps_retries_during_an_outage():
    # control: a budget as large as the retries asked for
    arrived, sent, denied = _budget_run({"percent": 100, "min_retries_per_second": 1000})
    eq(arrived, 400, "requests at the failing upstream with a large budget (100 x (1 + 3 retries))")
    eq(denied, 0, "retries denied with a large budget")
    # 20% of 100 requests + the initial bucket (10 per worker, 2 workers)
    arrived, sent, denied = _budget_run({"percent": 20, "min_retries_per_second": 0})
    check(100 <= arrived <= 100 + 20 + 20 + 5, "%d requests at the failing upstream with a 20%% budget"
          % arrived)
    eq(sent, float(arrived - 100), "retries counted as sent")
    # a request whose retry is denied stops retrying: about one denial per request left without
    # a token
    check(denied >= 50, "retries denied by the budget: %r" % denied)


# --- file descriptors ----------------------------------------------------------------------------

def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_accept_out_of_file_descriptors_pauses_and_recovers():
    up = Upstream("up")
    with Proxy(one_route(upstream_cfg([up]), workers=1)) as p:
        keep = Client(p.addr())
        eq(keep.request("GET", "/first").status, 200, "first request")  # pools one upstream connection
        nfd = len(os.listdir("/proc/%d/fd" % p.pid))
        resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (nfd + 8, nfd + 8))
        extra = []
        try:
            for i in range(40):
                s = socket.create_connection(p.addr(), timeout=5)
                extra.append(s)
            check(wait_until(lambda: "accept failed" in p.stderr(), 5),
                  "no accept failure logged with %d connections over the limit" % len(extra))
            c0 = _cpu_seconds(p.pid)
            time.sleep(2)
            cpu = _cpu_seconds(p.pid) - c0
            check(cpu < 0.5, "proxy used %.2fs CPU in 2s while out of file descriptors" % cpu)
            r = keep.request("GET", "/existing")
            eq(r.status, 200, "request on an existing connection while accept fails")
        finally:
            for s in extra:
                s.close()
        with Client(p.addr(), timeout=10) as c:
            eq(c.request("GET", "/after").status, 200, "new connection after clients closed")
        keep.close()
        lines = [l for l in p.stderr().splitlines() if "accept failed" in l]
        check(len(lines) <= 3, "%d accept-failure log lines (rate-limited to one per 5s):\n%s"
              % (len(lines), "\n".join(lines)))


if __name__ == "__main__":
    main(globals())
