"""Routing, rewriting, header handling and the access log, through the real binary."""

import json
import re
import time

from harness import (Client, Proxy, Upstream, check, config, echo_header, echo_headers, eq, main,
                     request)


def route(name, match=None, upstream=None, **kw):
    r = {"name": name}
    if match:
        r["match"] = match
    r["destinations"] = [{"upstream": upstream or name}]
    r.update(kw)
    return r


MATCH_ROUTES = [
    route("exact", {"path": "/exact"}),
    route("prefix", {"path_prefix": "/bar"}, rewrite={"path_prefix": "/"}),
    route("regex", {"path_regex": "^/items/[0-9]+$"}),
    route("methods", {"path_prefix": "/m", "methods": ["POST", "PUT"]}),
    route("anymethod", {"path_prefix": "/m"}),
    route("host", {"path_prefix": "/h", "host": "api.example.com"}),
    route("tenant", {"path_prefix": "/hdr", "headers": {"x-tenant": "acme"}}),
    route("debug", {"path_prefix": "/hdr", "headers": {"x-debug": {"present": True}}}),
    route("ver", {"path_prefix": "/hdr", "headers": {"x-ver": {"prefix": "v2"}}}),
    route("verre", {"path_prefix": "/hdr", "headers": {"x-ver": {"regex": "^v[0-9]+\\.[0-9]+$"}}}),
    route("first", {"path_prefix": "/first"}),
    route("second", {"path_prefix": "/first/x"}),
    route("both", {"path": "/both", "methods": ["GET"], "headers": {"x-a": "1"}}),
]


def match_proxy():
    ups = {r["name"]: Upstream(r["name"]) for r in MATCH_ROUTES}
    return Proxy(config(ups, MATCH_ROUTES)), ups


def expect(c, method, path, want, headers=(), host="test.local", want_path=None):
    """want: upstream (= route) name, or 404."""
    body = b"x" * 10 if method in ("POST", "PUT") else None
    r = c.request(method, path, headers, body, host=host)
    what = "%s %s %s host=%s" % (method, path, list(headers), host)
    if want == 404:
        eq(r.status, 404, what + " status")
        ct = r.header("content-type", "")
        check(ct.startswith("text/plain"), what + ": 404 content-type %r" % ct)
        if method != "HEAD":
            check(0 < len(r.body) < 512, what + ": 404 body %r" % r.body)
        return r
    eq(r.status, 200, what + " status (body %r)" % r.body[:200])
    e = r.json()
    eq(e["server"], want, what + " routed to")
    if want_path is not None:
        eq(e["path"], want_path, what + " path seen upstream")
    return e


def test_path_exact():
    p, _ = match_proxy()
    with p, Client(p.addr()) as c:
        expect(c, "GET", "/exact", "exact", want_path="/exact")
        expect(c, "GET", "/exact?x=1", "exact", want_path="/exact?x=1")
        expect(c, "GET", "/exact/", 404)
        expect(c, "GET", "/exactly", 404)
        expect(c, "GET", "/", 404)


def test_path_prefix_is_segment_wise_and_rewritten():
    p, _ = match_proxy()
    with p, Client(p.addr()) as c:
        expect(c, "GET", "/bar/x?q=1", "prefix", want_path="/x?q=1")
        expect(c, "GET", "/bar/x/y", "prefix", want_path="/x/y")
        expect(c, "GET", "/bar/", "prefix", want_path="/")
        expect(c, "GET", "/bar", "prefix", want_path="/")
        expect(c, "GET", "/bar?q=2", "prefix", want_path="/?q=2")
        expect(c, "GET", "/barista", 404)
        expect(c, "GET", "/barista/x", 404)
        expect(c, "GET", "/ba", 404)


def test_path_regex():
    p, _ = match_proxy()
    with p, Client(p.addr()) as c:
        expect(c, "GET", "/items/42", "regex", want_path="/items/42")
        expect(c, "GET", "/items/42?verbose=1", "regex", want_path="/items/42?verbose=1")
        expect(c, "GET", "/items/abc", 404)
        expect(c, "GET", "/items/42/x", 404)
        expect(c, "GET", "/items/", 404)


def test_methods():
    p, _ = match_proxy()
    with p, Client(p.addr()) as c:
        expect(c, "POST", "/m/1", "methods")
        expect(c, "PUT", "/m/1", "methods")
        expect(c, "GET", "/m/1", "anymethod")
        expect(c, "DELETE", "/m/1", "anymethod")
        e = expect(c, "POST", "/m/1", "methods")
        eq(e["method"], "POST", "method seen upstream")
        eq(e["body_len"], 10, "body length seen upstream")


def test_host_match_ignores_port_and_case_and_passes_host_through():
    p, _ = match_proxy()
    with p, Client(p.addr()) as c:
        e = expect(c, "GET", "/h", "host", host="api.example.com")
        eq(echo_header(e, "host"), "api.example.com", "Host seen upstream")
        e = expect(c, "GET", "/h/x", "host", host="API.Example.COM:8080")
        eq(echo_header(e, "host"), "API.Example.COM:8080", "Host seen upstream (unchanged)")
        expect(c, "GET", "/h", 404, host="other.example.com")
        expect(c, "GET", "/h", 404, host="api.example.com.evil.net")
        expect(c, "GET", "/h", 404, host="xapi.example.com")


def test_header_matches():
    p, _ = match_proxy()
    with p, Client(p.addr()) as c:
        expect(c, "GET", "/hdr", "tenant", [("x-tenant", "acme")])
        expect(c, "GET", "/hdr", "tenant", [("X-Tenant", "acme")])
        expect(c, "GET", "/hdr", 404, [("x-tenant", "acme2")])
        expect(c, "GET", "/hdr", 404, [("x-tenant", "other")])
        expect(c, "GET", "/hdr", "debug", [("x-debug", "0")])
        expect(c, "GET", "/hdr", "debug", [("X-DEBUG", "yes")])
        expect(c, "GET", "/hdr", "ver", [("x-ver", "v2")])
        expect(c, "GET", "/hdr", "ver", [("x-ver", "v2-beta")])
        expect(c, "GET", "/hdr", "verre", [("x-ver", "v3.1")])
        expect(c, "GET", "/hdr", 404, [("x-ver", "v3.1x")])
        expect(c, "GET", "/hdr", 404, [("x-ver", "3.1")])
        expect(c, "GET", "/hdr", 404)
        # several conditions: all must hold
        expect(c, "GET", "/both", "both", [("x-a", "1")])
        expect(c, "GET", "/both", 404, [("x-a", "2")])
        expect(c, "HEAD", "/both", 404, [("x-a", "1")])


def test_first_match_wins():
    p, _ = match_proxy()
    with p, Client(p.addr()) as c:
        expect(c, "GET", "/first/x", "first")
        expect(c, "GET", "/first/x/y", "first")
        # x-tenant route comes before the x-debug one
        expect(c, "GET", "/hdr", "tenant", [("x-debug", "1"), ("x-tenant", "acme")])


def test_absolute_form_request_target():
    # RFC 9112 3.2.2: a server MUST accept the absolute-form; routing uses its path
    p, _ = match_proxy()
    with p, Client(p.addr()) as c:
        r = c.request("GET", "http://test.local/exact")
        eq(r.status, 200, "absolute-form GET status")
        eq(r.json()["server"], "exact", "absolute-form routed by its path")
        r = c.request("GET", "http://api.example.com/h", host="api.example.com")
        eq(r.json()["server"], "host", "absolute-form routed by host and path")


def test_404_when_nothing_matches():
    p, ups = match_proxy()
    with p:
        r = request(p.addr(), "GET", "/nothing/here")
        eq(r.status, 404, "status")
        check(r.header("content-type", "").startswith("text/plain"),
              "404 content-type %r" % r.header("content-type"))
        check(0 < len(r.body) < 512, "404 body %r" % r.body)
        check(re.search(rb"(?i)route|not found", r.body), "404 body names no cause: %r" % r.body)
        check(sum(u.heads for u in ups.values()) == 0, "a 404 request reached an upstream")


def test_request_and_response_header_manipulation():
    up = Upstream("hm")
    routes = [route("hm", {"path_prefix": "/"},
                    request_headers={"set": {"x-env": "prod", "x-override": "proxy"},
                                     "remove": ["x-internal"]},
                    response_headers={"set": {"x-served-by": "strangler-test"},
                                      "remove": ["x-up-secret"]})]
    with Proxy(config({"hm": up}, routes)) as p:
        behave = {"headers": [["x-up-secret", "s3cr3t"], ["x-up-keep", "k"],
                              ["x-served-by", "upstream"]]}
        r = request(p.addr(), "GET", "/a", [("x-internal", "1"), ("X-Override", "client"),
                                            ("x-keep", "1"), ("x-behave", json.dumps(behave))])
        eq(r.status, 200, "status")
        e = r.json()
        eq(echo_headers(e, "x-env"), ["prod"], "x-env set upstream")
        eq(echo_headers(e, "x-override"), ["proxy"], "set replaces the client's value")
        eq(echo_headers(e, "x-internal"), [], "x-internal removed")
        eq(echo_headers(e, "x-keep"), ["1"], "other headers kept")
        eq(r.headers.all("x-served-by"), ["strangler-test"], "response x-served-by")
        eq(r.headers.all("x-up-secret"), [], "response x-up-secret removed")
        eq(r.headers.all("x-up-keep"), ["k"], "other response headers kept")


def test_hop_by_hop_headers_are_not_forwarded():
    up = Upstream("hop")
    with Proxy(config({"hop": up}, [route("hop")])) as p, Client(p.addr()) as c:
        behave = {"headers": [["Connection", "x-up-hop"], ["X-Up-Hop", "1"],
                              ["Keep-Alive", "timeout=5"], ["X-Up-End", "2"]]}
        r = c.request("GET", "/a", [
            ("Connection", "keep-alive, X-Hop-Custom"), ("X-Hop-Custom", "secret"),
            ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
            ("TE", "gzip"), ("Upgrade", "example/1"), ("X-End", "kept"),
            ("x-behave", json.dumps(behave))])
        eq(r.status, 200, "status")
        e = r.json()
        for h in ("x-hop-custom", "keep-alive", "proxy-connection", "upgrade"):
            eq(echo_headers(e, h), [], "hop-by-hop %s forwarded upstream" % h)
        check(echo_header(e, "te") in (None, "trailers"), "TE forwarded: %r" % echo_header(e, "te"))
        check(not re.search(r"(?i)x-hop-custom", echo_header(e, "connection") or ""),
              "Connection forwarded with the client's options: %r" % echo_header(e, "connection"))
        eq(echo_headers(e, "x-end"), ["kept"], "end-to-end header")
        eq(r.headers.all("x-up-hop"), [], "response header named in upstream Connection")
        eq(r.headers.all("keep-alive"), [], "upstream Keep-Alive forwarded to the client")
        eq(r.headers.all("x-up-end"), ["2"], "end-to-end response header")
        # the client connection is still usable
        eq(c.request("GET", "/b").status, 200, "next request on the same connection")
        r = c.request("GET", "/c", [("TE", "trailers")])
        check(echo_header(r.json(), "te") in (None, "trailers"), "TE: trailers handling")


def test_forwarded_headers_and_request_id():
    up = Upstream("fwd")
    with Proxy(config({"fwd": up}, [route("fwd")])) as p, Client(p.addr()) as c:
        e1 = c.request("GET", "/one").json()
        eq(echo_header(e1, "x-forwarded-for"), "127.0.0.1", "x-forwarded-for without one")
        eq(echo_header(e1, "x-forwarded-proto"), "http", "x-forwarded-proto")
        id1 = echo_header(e1, "x-request-id")
        check(id1 and len(id1) >= 8, "generated x-request-id %r" % id1)
        eq(len(echo_headers(e1, "x-request-id")), 1, "one x-request-id upstream")
        e2 = c.request("GET", "/two", [("X-Forwarded-For", "203.0.113.7")]).json()
        xff = echo_header(e2, "x-forwarded-for")
        check(re.match(r"^203\.0\.113\.7\s*,\s*127\.0\.0\.1$", xff or ""),
              "x-forwarded-for appended: %r" % xff)
        id2 = echo_header(e2, "x-request-id")
        check(id2 and id2 != id1, "request ids not unique: %r %r" % (id1, id2))
        e3 = c.request("GET", "/three", [("X-Request-Id", "client-id-123")]).json()
        eq(echo_headers(e3, "x-request-id"), ["client-id-123"], "client x-request-id kept")
        recs = p.access_log(3)
        by_path = {r.get("path", "").split("?")[0]: r for r in recs}
        eq(by_path.get("/one", {}).get("request_id"), id1, "access log request_id of /one")
        eq(by_path.get("/two", {}).get("request_id"), id2, "access log request_id of /two")
        eq(by_path.get("/three", {}).get("request_id"), "client-id-123",
           "access log request_id of /three")


def test_rewrite_to_another_prefix_and_header_order():
    up = Upstream("v2")
    routes = [route("v2", {"path_prefix": "/api/v1"}, rewrite={"path_prefix": "/v2"})]
    with Proxy(config({"v2": up}, routes)) as p, Client(p.addr()) as c:
        for src, dst in (("/api/v1/users?x=1", "/v2/users?x=1"), ("/api/v1", "/v2"),
                         ("/api/v1/", "/v2/"), ("/api/v1?q", "/v2?q")):
            expect(c, "GET", src, "v2", want_path=dst)
        expect(c, "GET", "/api/v10", 404)
        e = c.request("GET", "/api/v1/h", [("X-Multi", "1"), ("X-Other", "a"),
                                            ("X-Multi", "2")]).json()
        eq(echo_headers(e, "x-multi"), ["1", "2"], "repeated header values in order")


def test_trace_headers_pass_through():
    up = Upstream("trace")
    trace = [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
             ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
             ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
             ("X-B3-SpanId", "e457b5a2e4d86bd1"), ("X-B3-Sampled", "1"),
             ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]
    with Proxy(config({"trace": up}, [route("trace")])) as p:
        e = request(p.addr(), "GET", "/t", trace).json()
        for k, v in trace:
            eq(echo_headers(e, k), [v], "%s upstream" % k)


RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$")
FIELDS = ("ts", "request_id", "method", "path", "protocol", "status", "duration_ms", "route",
          "upstream", "bytes_in", "bytes_out", "client", "mirrored")


def test_access_log_fields_and_no_secrets():
    up = Upstream("logged")
    routes = [route("logged", {"path_prefix": "/log"})]
    with Proxy(config({"logged": up}, routes)) as p, Client(p.addr()) as c:
        body = b"BODY-SECRET-" + b"b" * 88
        r = c.request("POST", "/log/path?q=1", [("Authorization", "Bearer AUTH-SECRET-1"),
                                                ("Cookie", "session=COOKIE-SECRET-2"),
                                                ("X-Request-Id", "log-test-1")], body)
        eq(r.status, 200, "POST status")
        resp_len = len(r.body)
        r = c.request("GET", "/nowhere", [("X-Request-Id", "log-test-2")])
        eq(r.status, 404, "unrouted status")
        recs = p.access_log(2)
        eq(len(recs), 2, "access log lines for 2 requests (%r)" % recs)
        time.sleep(0.5)
        eq(len(p.access_log()), 2, "access log lines after a pause (one per request)")
        a = [x for x in recs if x.get("request_id") == "log-test-1"]
        b = [x for x in recs if x.get("request_id") == "log-test-2"]
        check(a and b, "log lines by request_id: %r" % recs)
        a, b = a[0], b[0]
        for f in FIELDS:
            check(f in a, "field %r missing from %r" % (f, a))
        check(RFC3339_MS.match(str(a["ts"])), "ts not RFC 3339 with ms: %r" % a["ts"])
        eq(a["method"], "POST", "method")
        check(a["path"] in ("/log/path?q=1", "/log/path"), "path %r" % a["path"])
        check(re.match(r"(?i)^HTTP/1\.1$", str(a["protocol"])), "protocol %r" % a["protocol"])
        eq(a["status"], 200, "status")
        check(isinstance(a["duration_ms"], (int, float)) and 0 <= a["duration_ms"] < 10000,
              "duration_ms %r" % a["duration_ms"])
        eq(a["route"], "logged", "route")
        eq(a["upstream"], "logged", "upstream")
        check(isinstance(a["bytes_in"], int) and len(body) <= a["bytes_in"] < 10000,
              "bytes_in %r (body %d)" % (a["bytes_in"], len(body)))
        check(isinstance(a["bytes_out"], int) and resp_len <= a["bytes_out"] < resp_len + 10000,
              "bytes_out %r (body %d)" % (a["bytes_out"], resp_len))
        check(str(a["client"]).startswith("127.0.0.1"), "client %r" % a["client"])
        eq(a["mirrored"], [], "mirrored")
        eq(b["status"], 404, "404 status in the log")
        check(b.get("route") in (None, ""), "route of an unrouted request: %r" % b.get("route"))
        for f in FIELDS:
            check(f in b, "field %r missing from the 404 line %r" % (f, b))
        out = p.stdout() + p.stderr()
        for secret in ("AUTH-SECRET-1", "COOKIE-SECRET-2", "BODY-SECRET"):
            check(secret not in out, "%s appears in the proxy's logs" % secret)
        objs, bad = p.stdout_records()
        eq(bad, [], "stdout lines that are not JSON objects")


if __name__ == "__main__":
    main(globals())
