"""Comparing shadow responses with the primary's (mirror[].compare, issue 9).

Two real upstreams answer differently in controlled ways: each test gives the primary and the
mirror a Python function that computes the answer (status, headers, JSON body) from the request.

Semantics under test (behaviour.md "Comparing shadow responses", docs/mirroring.md):
- status, the configured headers and the body are compared; `body: json` compares parsed values
  (key order, whitespace and 1 vs 1.0 do not matter) and names each differing JSON Pointer;
  `ignore` pointers (with `*` for one level) do not count; `bytes` compares SHA-256 digests;
- a body over compare.max_body_bytes, memory over limits.shadow_max_buffered_bytes, or different
  Content-Encodings make the comparison `skipped`; a side without a complete answer, `error`;
- `noise: auto` sends a sample of GET/HEAD (never other methods) a second time to the primary's
  upstream; pointers that differ between the two primary answers are learnt as noise, reported
  apart and no longer count as mismatches;
- results: strangler_mirror_comparisons_total{route,upstream,result},
  strangler_mirror_diff_fields_total{route,upstream,pointer} (array indexes as `*`, at most 20
  pointers per route and upstream, the rest `other`), rate-limited `mirror_diff` lines, and
  GET /mirror/diffs on the admin port;
- the client never waits for the comparison or the shadow.
"""

import hashlib
import http.server
import json
import statistics
import threading
import time
import uuid

from harness import (Client, Proxy, check, config, eq, main, metric_value, request, wait_until)

CMP = "strangler_mirror_comparisons_total"
FIELDS = "strangler_mirror_diff_fields_total"
PROBES = "strangler_mirror_noise_probes_total"


# ---------------------------------------------------------------------------------------------
# upstreams that answer what a function says
# ---------------------------------------------------------------------------------------------

class JsonUpstream:
    """HTTP/1.1 keep-alive server on 127.0.0.1:0. answer(method, path, headers) returns
    (status, [(name, value)], body) with body bytes, or any other value to send as compact JSON;
    None closes the connection without an answer. `delay` seconds before each answer."""

    def __init__(self, name, answer, delay=0.0):
        self.name, self.answer, self.delay = name, answer, delay
        self.lock = threading.Lock()
        self.seen = []  # (method, path, host)
        up = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("content-length") or 0)
                if n:
                    self.rfile.read(n)
                with up.lock:
                    up.seen.append((self.command, self.path, self.headers.get("host")))
                if up.delay:
                    time.sleep(up.delay)
                got = up.answer(self.command, self.path, self.headers)
                if got is None:
                    self.close_connection = True
                    return
                status, headers, body = got
                if not isinstance(body, (bytes, bytearray)):
                    body = json.dumps(body, separators=(",", ":")).encode()
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _any

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.addr_str = "127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def count(self, method=None, shadow=None):
        with self.lock:
            return sum(1 for m, _, h in self.seen
                       if (method is None or m == method)
                       and (shadow is None or (h or "").endswith("-shadow") == shadow))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


JSON_CT = [("Content-Type", "application/json")]


def doc(path):
    """The document both services agree on for a path."""
    n = int(path.rsplit("/", 1)[-1].split("?")[0] or 0) if path[-1].isdigit() else 0
    return {"id": n, "name": "item %d" % n, "price": 10.5, "count": 3,
            "items": [{"sku": "a", "price": 1}, {"sku": "b", "price": 2}],
            "meta": {"tags": ["x", "y"], "owner": None, "active": True}}


def reordered(obj):
    """Same value, keys in reverse order at every level, integers that are whole as floats."""
    if isinstance(obj, dict):
        return {k: reordered(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [reordered(v) for v in obj]
    if isinstance(obj, int) and not isinstance(obj, bool):
        return float(obj)
    return obj


def pretty(obj):
    return (json.dumps(obj, indent=3) + "\n").encode()


def cmp_route(name, prefix, compare, dest="primary", mirror="mirror", **mirror_kw):
    m = {"upstream": mirror, "compare": compare}
    m.update(mirror_kw)
    return {"name": name, "match": {"path_prefix": prefix}, "destinations": [{"upstream": dest}],
            "mirror": [m]}


def mval(p, name, **labels):
    return metric_value(p.metrics(), name, **labels) or 0


def results(p, route, upstream="mirror"):
    text = p.metrics()
    return {r: int(metric_value(text, CMP, route=route, upstream=upstream, result=r) or 0)
            for r in ("match", "mismatch", "skipped", "error")}


def wait_results(p, route, total, upstream="mirror", timeout=10.0):
    wait_until(lambda: sum(results(p, route, upstream).values()) >= total, timeout, 0.05)
    time.sleep(0.2)  # catches double counting
    got = results(p, route, upstream)
    eq(sum(got.values()), total, "comparisons of route %s (%r)" % (route, got))
    return got


def report(p, route, upstream="mirror"):
    r = p.admin_get("/mirror/diffs")
    eq(r.status, 200, "GET /mirror/diffs")
    eq(r.header("content-type"), "application/json", "report content type")
    for e in r.json()["mirrors"]:
        if e["route"] == route and e["upstream"] == upstream:
            return e
    raise AssertionError("no report entry for %s/%s in %s" % (route, upstream, r.body[:2000]))


def diff_lines(p, route=None):
    return [o for o in p.stdout_records()[0]
            if o.get("type") == "mirror_diff" and (route is None or o.get("route") == route)]


def get_ok(c, path, method="GET", headers=(), body=None):
    r = c.request(method, path, headers, body)
    eq(r.status, 200, "%s %s" % (method, path))
    return r


def reset(p):
    r = request(p.admin, "POST", "/mirror/diffs/reset")
    eq(r.status, 200, "POST /mirror/diffs/reset")


# ---------------------------------------------------------------------------------------------
# JSON: what matches and what does not
# ---------------------------------------------------------------------------------------------

def test_same_json_in_another_key_order_and_whitespace_matches():
    def prim(m, path, h):
        return 200, JSON_CT, doc(path)

    def shad(m, path, h):
        return 200, JSON_CT, pretty(reordered(doc(path)))

    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror, \
            JsonUpstream("slowprimary", prim, delay=0.2) as slow:
        cfg = config({"primary": primary, "mirror": mirror, "slow": slow},
                     [cmp_route("same", "/same", {"body": "json"}),
                      # the primary answers last: the shadow's summary waits for it
                      cmp_route("late", "/late", {"body": "json"}, dest="slow")])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                for i in range(10):
                    body = get_ok(c, "/same/%d" % i).body
                    eq(json.loads(body), doc("/same/%d" % i), "the client gets the primary's answer")
                for i in range(3):
                    get_ok(c, "/late/%d" % i)
                for i in range(2):
                    get_ok(c, "/same/head/%d" % i, method="HEAD")
            eq(wait_results(p, "same", 12), {"match": 12, "mismatch": 0, "skipped": 0, "error": 0},
               "reordered, re-indented JSON with 1 as 1.0; HEAD answers without bodies")
            eq(wait_results(p, "late", 3)["match"], 3, "compared when the primary ends last")
            rep = report(p, "same")
            eq((rep["compared"], rep["matched"], rep["mismatched"], rep["match_rate"]), (12, 12, 0, 1.0),
               "report")
            eq(rep["top_pointers"], [], "no differing pointer")
            eq(rep["recent_mismatches"], [], "no mismatch")
            eq(diff_lines(p), [], "no mirror_diff line")


def test_changed_field_is_a_mismatch_naming_its_pointer():
    def prim(m, path, h):
        return 200, JSON_CT, doc(path)

    def shad(m, path, h):
        d = reordered(doc(path))
        d["items"][1]["price"] = 2.5          # the bug: /items/1/price
        return 200, JSON_CT, d

    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror:
        cfg = config({"primary": primary, "mirror": mirror},
                     [cmp_route("bar", "/bar", {"body": "json"})])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                for i in range(6):
                    get_ok(c, "/bar/%d?q=%d" % (i, i), headers=[("x-request-id", "req-%d" % i)])
            eq(wait_results(p, "bar", 6)["mismatch"], 6, "every answer differs")
            wait_until(lambda: len(diff_lines(p, "bar")) >= 6, 3)
            lines = diff_lines(p, "bar")
            eq(len(lines), 6, "one mirror_diff line per mismatch")
            line = [x for x in lines if x["request_id"] == "req-3"][0]
            for k in ("type", "request_id", "route", "upstream", "method", "path", "status", "headers", "body"):
                check(k in line, "mirror_diff has %s: %r" % (k, line))
            eq((line["route"], line["upstream"], line["method"], line["path"]),
               ("bar", "mirror", "GET", "/bar/3?q=3"), "who and what")
            eq(line["status"], [200, 200], "status pair")
            eq(line["headers"], {}, "no header compared")
            eq(line["body"], [{"pointer": "/items/1/price", "primary": 2, "shadow": 2.5}],
               "the differing pointer with both values")
            eq(mval(p, FIELDS, route="bar", upstream="mirror", pointer="/items/*/price"), 6,
               "diff_fields metric, array index normalised")
            rep = report(p, "bar")
            eq((rep["compared"], rep["mismatched"], rep["match_rate"]), (6, 6, 0.0), "report counts")
            eq(rep["top_pointers"], [{"pointer": "/items/*/price", "count": 6, "share": 1.0}], "top pointers")
            eq(len(rep["recent_mismatches"]), 6, "recent mismatches")
            eq(rep["recent_mismatches"][0]["body"][0]["pointer"], "/items/1/price", "recent mismatch body")


def test_missing_key_type_change_and_array_length_are_differences():
    base = {"a": 1, "b": "x", "list": [1, 2, 3], "nested": {"k": True}, "s": "é\"quote"}

    def prim(m, path, h):
        return 200, JSON_CT, base

    def shad(m, path, h):
        d = json.loads(json.dumps(base))
        del d["a"]                    # missing on the shadow
        d["b"] = 7                    # type change
        d["list"].append(4)           # longer array
        d["nested"]["extra"] = None   # only on the shadow
        return 200, JSON_CT, d

    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror:
        cfg = config({"primary": primary, "mirror": mirror}, [cmp_route("r", "/", {"body": "json"})])
        with Proxy(cfg) as p:
            get_ok(Client(p.addr()), "/x")
            wait_results(p, "r", 1)
            wait_until(lambda: diff_lines(p), 3)
            body = {d["pointer"]: d for d in diff_lines(p)[0]["body"]}
            eq(sorted(body), ["/a", "/b", "/list/3", "/nested/extra"], "differing pointers")
            eq((body["/a"]["primary"], body["/a"]["shadow"]), (1, None), "missing on the shadow: null")
            eq((body["/b"]["primary"], body["/b"]["shadow"]), ("x", 7), "type change")
            eq(body["/list/3"]["shadow"], 4, "extra element")
            eq(mval(p, FIELDS, route="r", pointer="/list/*"), 1, "array index normalised in the metric")


def test_ignored_pointers_do_not_count():
    def prim(m, path, h):
        d = doc(path)
        d["generated_at"] = "2025-01-01T00:00:00Z"
        d["items"][0]["etag"] = "p0"
        d["items"][1]["etag"] = "p1"
        return 200, JSON_CT, d

    def shad(m, path, h):
        d = doc(path)
        d["generated_at"] = "2030-12-31T23:59:59Z"
        d["items"][0]["etag"] = "s0"
        d["items"][1]["etag"] = "s1"
        if path.startswith("/ign/bad"):
            d["name"] = "changed"
        return 200, JSON_CT, d

    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror:
        cfg = config({"primary": primary, "mirror": mirror},
                     [cmp_route("ign", "/ign", {"body": "json", "ignore": ["/generated_at", "/items/*/etag"]})])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                for i in range(5):
                    get_ok(c, "/ign/ok/%d" % i)
                get_ok(c, "/ign/bad/1")
            got = wait_results(p, "ign", 6)
            eq((got["match"], got["mismatch"]), (5, 1), "ignored pointers left out")
            wait_until(lambda: diff_lines(p), 3)
            eq([d["pointer"] for d in diff_lines(p)[0]["body"]], ["/name"], "only the real difference")
            eq(report(p, "ign")["top_pointers"][0]["pointer"], "/name", "report")


# ---------------------------------------------------------------------------------------------
# noise: auto
# ---------------------------------------------------------------------------------------------

def test_noise_is_learnt_from_two_primary_answers_and_stops_counting():
    def answer(m, path, h):
        d = doc(path)
        d["ts"] = time.time_ns()                 # differs on every answer
        d["request_uuid"] = str(uuid.uuid4())    # likewise
        if path.startswith("/n/bad") and h.get("host", "").endswith("-shadow"):
            d["name"] = "wrong"                  # a real difference stays one
        return 200, JSON_CT, d

    with JsonUpstream("primary", answer) as primary, JsonUpstream("mirror", answer) as mirror:
        cfg = config({"primary": primary, "mirror": mirror},
                     [cmp_route("n", "/n", {"body": "json", "noise": "auto"})])
        with Proxy(cfg) as p:
            c = Client(p.addr())
            # learning: the first GETs are sent to the primary's upstream a second time
            deadline, warm = time.monotonic() + 10, 0
            while time.monotonic() < deadline:
                get_ok(c, "/n/warm")
                warm += 1
                noise = {x["pointer"] for x in report(p, "n")["noise"]}
                if {"/ts", "/request_uuid"} <= noise:
                    break
                time.sleep(0.3)
            rep = report(p, "n")
            eq({x["pointer"] for x in rep["noise"]}, {"/ts", "/request_uuid"}, "learnt noise")
            check(rep["noise_probes"] >= 1, "probes counted: %r" % rep)
            check(mval(p, PROBES, route="n", upstream="mirror", result="learnt") >= 1, "probe metric")
            wait_until(lambda: primary.count("GET") > warm, 3)
            check(primary.count("GET") > warm,
                  "probes: the primary's upstream saw %d GETs for %d client requests"
                  % (primary.count("GET"), warm))
            eq(primary.count(shadow=True), 0, "no probe carries the shadow host")
            before = wait_results(p, "n", warm)
            eq(mirror.count("GET"), warm, "probes never go to the mirror")
            total_before = warm
            reset(p)
            for i in range(10):
                get_ok(c, "/n/%d" % i)
            got = wait_results(p, "n", total_before + 10)
            eq(got["mismatch"], before["mismatch"], "noise no longer counts as a mismatch")
            eq(got["match"], before["match"] + 10, "matches")
            rep = report(p, "n")
            eq((rep["compared"], rep["matched"], rep["matched_with_noise"]), (10, 10, 10), "report after reset")
            eq(rep["top_pointers"], [], "noise is not among the differing pointers")
            ignored = {x["pointer"]: x["ignored"] for x in rep["noise"]}
            eq(ignored, {"/ts": 10, "/request_uuid": 10}, "noise reported apart, with its count")
            # a real difference still counts, and only it is named
            n_lines = len(diff_lines(p, "n"))
            get_ok(c, "/n/bad/1")
            wait_results(p, "n", total_before + 11)
            wait_until(lambda: len(diff_lines(p, "n")) > n_lines, 3)
            last = diff_lines(p, "n")[-1]
            eq([d["pointer"] for d in last["body"]], ["/name"], "the real difference only")
            eq(sorted(last.get("noise", [])), ["/request_uuid", "/ts"], "noise listed apart in the line")
            c.close()


def test_noise_probes_are_never_sent_for_unsafe_methods():
    def answer(m, path, h):
        return 200, JSON_CT, {"ts": time.time_ns()}

    with JsonUpstream("primary", answer) as primary, JsonUpstream("mirror", answer) as mirror:
        cfg = config({"primary": primary, "mirror": mirror},
                     [cmp_route("w", "/w", {"body": "json", "noise": "auto"})])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                for method in ("POST", "PUT", "DELETE", "POST", "PUT"):
                    for i in range(3):
                        get_ok(c, "/w/%d" % i, method=method, body=b"{}")
                        time.sleep(0.1)
            wait_results(p, "w", 15)
            for method, n in (("POST", 6), ("PUT", 6), ("DELETE", 3)):
                eq(primary.count(method), n, "%s requests reaching the primary's upstream" % method)
                eq(mirror.count(method), n, "%s shadows" % method)
            eq(report(p, "w")["noise_probes"], 0, "no probe")
            eq(mval(p, PROBES, route="w"), 0, "no probe in the metrics")


# ---------------------------------------------------------------------------------------------
# status, headers, bytes, skipped
# ---------------------------------------------------------------------------------------------

def test_status_difference():
    def prim(m, path, h):
        return 200, JSON_CT, doc(path)

    def shad(m, path, h):
        return (500 if "fail" in path else 200), JSON_CT, doc(path)

    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror:
        cfg = config({"primary": primary, "mirror": mirror},
                     [cmp_route("st", "/st", {"body": "json"}),
                      cmp_route("nost", "/nost", {"body": "json", "status": False})])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                get_ok(c, "/st/fail/1")
                get_ok(c, "/st/ok/1")
                get_ok(c, "/nost/fail/1")
            got = wait_results(p, "st", 2)
            eq((got["match"], got["mismatch"]), (1, 1), "status compared")
            eq(wait_results(p, "nost", 1)["match"], 1, "status: false leaves it out")
            wait_until(lambda: diff_lines(p, "st"), 3)
            line = diff_lines(p, "st")[0]
            eq((line["status"], line["body"], line["path"]), ([200, 500], [], "/st/fail/1"), "status pair")
            eq(report(p, "st")["status_mismatches"], 1, "report")


def test_header_difference():
    def prim(m, path, h):
        return 200, [("Content-Type", "application/json"), ("X-Version", "1"), ("Cache-Control", "no-store")], \
            doc(path)

    def shad(m, path, h):
        ct = "text/plain" if "ct" in path else "application/json"
        return 200, [("Content-Type", ct), ("Cache-Control", "no-store")], doc(path)

    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror:
        cfg = config({"primary": primary, "mirror": mirror},
                     [cmp_route("h", "/h", {"body": "json", "headers": ["content-type", "cache-control"]}),
                      cmp_route("v", "/v", {"body": "json", "headers": ["x-version"]})])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                get_ok(c, "/h/ct")
                get_ok(c, "/h/same")
                get_ok(c, "/v/1")
            got = wait_results(p, "h", 2)
            eq((got["match"], got["mismatch"]), (1, 1), "content-type compared, cache-control equal")
            eq(wait_results(p, "v", 1)["mismatch"], 1, "a header only the primary sends")
            wait_until(lambda: diff_lines(p, "h") and diff_lines(p, "v"), 3)
            eq(diff_lines(p, "h")[0]["headers"], {"content-type": ["application/json", "text/plain"]},
               "header pair")
            eq(diff_lines(p, "v")[0]["headers"], {"x-version": ["1", None]}, "absent on the shadow: null")
            eq(report(p, "h")["header_mismatches"], {"content-type": 1}, "report")


def test_bytes_mode_compares_digests():
    body_a = b"plain text body\n" * 10

    def prim(m, path, h):
        return 200, [("Content-Type", "text/plain")], body_a

    def shad(m, path, h):
        return 200, [("Content-Type", "text/plain")], body_a if "same" in path else body_a + b"!"

    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror:
        cfg = config({"primary": primary, "mirror": mirror},
                     [cmp_route("b", "/b", {"body": "bytes"}),
                      cmp_route("none", "/none", {"body": "none"})])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                get_ok(c, "/b/same")
                get_ok(c, "/b/diff")
                get_ok(c, "/none/diff")
            got = wait_results(p, "b", 2)
            eq((got["match"], got["mismatch"]), (1, 1), "bytes")
            eq(wait_results(p, "none", 1)["match"], 1, "body: none")
            wait_until(lambda: diff_lines(p, "b"), 3)
            eq(diff_lines(p, "b")[0]["body"],
               [{"pointer": "", "primary": "sha256:" + hashlib.sha256(body_a).hexdigest(),
                 "shadow": "sha256:" + hashlib.sha256(body_a + b"!").hexdigest()}], "digests")


def test_oversized_over_budget_and_other_encoding_are_skipped():
    big = {"blob": "x" * 4000}

    def prim(m, path, h):
        if "enc" in path:
            return 200, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")], b"\x1f\x8b..."
        return 200, JSON_CT, big if "big" in path else {"small": True}

    def shad(m, path, h):
        if "enc" in path:
            return 200, JSON_CT, {"small": True}
        return 200, JSON_CT, {"different": True}

    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror:
        cfg = config({"primary": primary, "mirror": mirror},
                     [cmp_route("cap", "/cap", {"body": "json", "max_body_bytes": "1KiB"}),
                      cmp_route("budget", "/budget", {"body": "json"})],
                     limits={"shadow_max_buffered_bytes": "3KiB"})
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                for i in range(3):
                    get_ok(c, "/cap/big/%d" % i)
                get_ok(c, "/cap/small")
                get_ok(c, "/cap/enc")
                get_ok(c, "/budget/big")
            got = wait_results(p, "cap", 5)
            eq(got, {"match": 0, "mismatch": 1, "skipped": 4, "error": 0},
               "over compare.max_body_bytes and a Content-Encoding on one side: skipped")
            eq(wait_results(p, "budget", 1)["skipped"], 1, "over limits.shadow_max_buffered_bytes: skipped")
            rep = report(p, "cap")
            eq((rep["skipped"], rep["compared"], rep["mismatched"]), (4, 1, 1), "report")
            eq(len(diff_lines(p, "cap")), 1, "skipped comparisons log nothing")


def test_shadow_without_an_answer_is_an_error():
    def prim(m, path, h):
        return 200, JSON_CT, doc(path)

    def shad(m, path, h):
        return None  # closes the connection

    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror:
        cfg = config({"primary": primary, "mirror": mirror}, [cmp_route("e", "/e", {"body": "json"})])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                for i in range(3):
                    get_ok(c, "/e/%d" % i)
            eq(wait_results(p, "e", 3)["error"], 3, "no answer from the shadow")
            eq(report(p, "e")["errors"], 3, "report")


# ---------------------------------------------------------------------------------------------
# the primary never waits
# ---------------------------------------------------------------------------------------------

def test_slow_shadow_leaves_the_primary_latency_unchanged():
    def answer(m, path, h):
        return 200, JSON_CT, doc(path)

    with JsonUpstream("primary", answer) as primary, JsonUpstream("mirror", answer, delay=2.0) as mirror:
        cfg = config({"primary": primary, "mirror": mirror},
                     [cmp_route("slow", "/slow", {"body": "json"}),
                      {"name": "plain", "match": {"path_prefix": "/plain"},
                       "destinations": [{"upstream": "primary"}]}])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                def timed(path):
                    t0 = time.perf_counter()
                    get_ok(c, path)
                    return time.perf_counter() - t0
                base = [timed("/plain/%d" % i) for i in range(10)]
                slow = [timed("/slow/%d" % i) for i in range(10)]
            med_base, med_slow = statistics.median(base), statistics.median(slow)
            check(max(slow) < 1.0, "a primary waited for the 2s shadow: %r" % slow)
            check(med_slow < med_base + 0.1, "median %.3fs vs %.3fs without a mirror" % (med_slow, med_base))
            eq(sum(results(p, "slow").values()), 0, "nothing compared before the shadows answer")
            eq(wait_results(p, "slow", 10, timeout=15)["match"], 10, "compared once the shadows answered")


# ---------------------------------------------------------------------------------------------
# results: report, metrics and log lines agree
# ---------------------------------------------------------------------------------------------

def test_report_metrics_and_log_lines_agree():
    def prim(m, path, h):
        if "/big/" in path:
            return 200, JSON_CT, {"blob": "y" * 3000}
        return 200, JSON_CT, doc(path)

    def shad(m, path, h):
        if "/err/" in path:
            return None
        d = doc(path)
        if "/bad/" in path:
            d["price"] = 11
        if "/wide/" in path:
            d.update({"k%02d" % i: i for i in range(30)})  # 30 pointers: the metric stays bounded
        return 200, JSON_CT, d

    plan = [("ok", 12), ("bad", 7), ("big", 3), ("err", 2), ("wide", 2)]
    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror:
        cfg = config({"primary": primary, "mirror": mirror},
                     [cmp_route("agree", "/agree", {"body": "json", "max_body_bytes": "2KiB", "log_rate": 1000}),
                      cmp_route("rl", "/rl", {"body": "json", "log_rate": 2})])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                for kind, n in plan:
                    for i in range(n):
                        get_ok(c, "/agree/%s/%d" % (kind, i))
                t0 = time.monotonic()
                for i in range(60):
                    get_ok(c, "/rl/bad/%d" % i)
                rl_seconds = time.monotonic() - t0
            got = wait_results(p, "agree", 26)
            eq(got, {"match": 12, "mismatch": 9, "skipped": 3, "error": 2}, "metric by result")
            rep = report(p, "agree")
            eq((rep["compared"], rep["matched"], rep["mismatched"], rep["skipped"], rep["errors"]),
               (21, 12, 9, 3, 2), "report counts = metric counts")
            eq(rep["match_rate"], round(12 / 21, 4), "match rate")
            eq(mval(p, "strangler_mirror_requests_total", route="agree", outcome="sent"), 26,
               "one comparison per sent shadow")
            top = {t["pointer"]: t for t in rep["top_pointers"]}
            eq(top["/price"]["count"], 7, "report count of /price")
            eq(top["/price"]["share"], round(7 / 21, 4), "share of compared responses")
            eq(mval(p, FIELDS, route="agree", pointer="/price"), 7, "metric count of /price")
            # the pointer label set is bounded: 20 pointers, the rest under "other"
            text = p.metrics()
            labels = [ln for ln in text.splitlines() if ln.startswith(FIELDS + "{") and 'route="agree"' in ln]
            check(len(labels) <= 21, "at most 20 pointers + other: %d series" % len(labels))
            eq(metric_value(text, FIELDS, route="agree"), 7 + 2 * 30, "every differing pointer counted once")
            check((metric_value(text, FIELDS, route="agree", pointer="other") or 0) >= 2 * (30 - 19),
                  "overflow counted as other")
            wait_until(lambda: len(diff_lines(p, "agree")) >= 9, 3)
            lines = diff_lines(p, "agree")
            eq(len(lines), 9, "one line per mismatch")
            eq(len(rep["recent_mismatches"]), 9, "recent mismatches")
            eq({x["request_id"] for x in lines}, {x["request_id"] for x in rep["recent_mismatches"]},
               "the report's mismatches are the logged ones")
            # log_rate: 2 lines per second per process; the report still keeps the last 50
            eq(wait_results(p, "rl", 60)["mismatch"], 60, "all compared")
            n_rl = len(diff_lines(p, "rl"))
            check(1 <= n_rl <= 2 * (int(rl_seconds) + 2), "%d lines in %.1fs at log_rate 2" % (n_rl, rl_seconds))
            rep = report(p, "rl")
            eq(rep["log_suppressed"], 60 - n_rl, "suppressed lines counted")
            eq(len(rep["recent_mismatches"]), 50, "the last 50 mismatches")
            newest = int(rep["recent_mismatches"][0]["path"].rsplit("/", 1)[1])
            eq(newest, 59, "newest first")


def test_statistics_survive_a_reload():
    def prim(m, path, h):
        return 200, JSON_CT, doc(path)

    def shad(m, path, h):
        d = doc(path)
        d["price"] = 0
        return 200, JSON_CT, d

    with JsonUpstream("primary", prim) as primary, JsonUpstream("mirror", shad) as mirror:
        cfg = config({"primary": primary, "mirror": mirror}, [cmp_route("rel", "/rel", {"body": "json"})])
        with Proxy(cfg) as p:
            with Client(p.addr()) as c:
                for i in range(4):
                    get_ok(c, "/rel/%d" % i)
            wait_results(p, "rel", 4)
            r = request(p.admin, "POST", "/reload")
            eq(r.status, 200, "reload")
            with Client(p.addr()) as c:
                for i in range(2):
                    get_ok(c, "/rel/%d" % i)
            eq(wait_results(p, "rel", 6)["mismatch"], 6, "metrics")
            rep = report(p, "rel")
            eq((rep["mismatched"], rep["top_pointers"][0]["count"]), (6, 6), "report kept across the reload")


def test_http2_client_and_h2c_upstreams():
    from test_h2_upstream import H2Upstream, h2_client_request
    primary, mirror = H2Upstream(), H2Upstream()
    try:
        ups = {"primary": {"endpoints": [primary.addr], "protocol": "h2c"},
               "mirror": {"endpoints": [mirror.addr], "protocol": "h2c"}}
        cfg = config(ups, [cmp_route("h2", "/", {"body": "json", "ignore": ["/authority", "/headers"],
                                                 "headers": ["content-type"]})])
        with Proxy(cfg) as p:
            for i in range(5):
                status, _, body, _ = h2_client_request(p.addr(), "/h2/%d" % i)
                eq(status, 200, "HTTP/2 client")
            eq(wait_results(p, "h2", 5)["match"], 5, "echoes equal but for :authority (ignored)")
        cfg = config(ups, [cmp_route("h2", "/", {"body": "json"})])
        with Proxy(cfg) as p:
            h2_client_request(p.addr(), "/h2/x")
            eq(wait_results(p, "h2", 1)["mismatch"], 1, "the shadow's :authority differs")
            wait_until(lambda: diff_lines(p), 3)
            body = {d["pointer"]: d for d in diff_lines(p)[0]["body"]}
            eq(body["/authority"]["shadow"], "test.local-shadow", "the pointer and the shadow's value")
    finally:
        primary.stop()
        mirror.stop()


if __name__ == "__main__":
    main(globals())
