"""HTTP/2 with prior knowledge (h2c) on the plaintext listener, next to HTTP/1.1 on the same port.

Real clients: curl --http2-prior-knowledge, nghttp and h2load (nghttp2-client), and Python's `h2`
(python3-h2) for malformed requests, flow control, RST_STREAM and GOAWAY.

test_goaway_on_drain needs src/net/worker.c to call sg_h2s_drain_all()/sg_h2s_close_all()."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame

from harness import (KiB, MiB, Proxy, TestFailure, Upstream, check, config, eq, main, pattern_sha,
                     request, spawn, stop_pid, tmpdir, wait_until)

CURL = shutil.which("curl") or "/usr/bin/curl"
NGHTTP = shutil.which("nghttp") or "/usr/bin/nghttp"
H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"
PROTOCOL_ERROR = h2.errors.ErrorCodes.PROTOCOL_ERROR
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_config(up, limits=None, timeout="30s", big=None):
    """/api -> up; with `big`, /big -> big (so one stream's upstream connection can be watched)."""
    ups, routes = {"up": up}, []
    if big is not None:
        ups["big"] = big
        routes.append({"name": "big", "match": {"path_prefix": "/big"},
                       "destinations": [{"upstream": "big"}], "timeout": timeout})
    routes.append({"name": "api", "match": {"path_prefix": "/api"},
                   "destinations": [{"upstream": "up"}], "timeout": timeout})
    return config(ups, routes, limits=limits)


def url(p, path):
    return "http://%s:%d%s" % (p.addr()[0], p.addr()[1], path)


def run(cmd, timeout=60, input=None):
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_pid(proc, signal.SIGKILL)
        raise TestFailure("%s did not finish within %ss" % (cmd[0], timeout))
    return proc.returncode, out, err.decode(errors="replace")


def curl(p, path, *args, timeout=60, input=None):
    """curl --http2-prior-knowledge; returns (http_version, status, body)."""
    rc, out, err = run([CURL, "-s", "-S", "--http2-prior-knowledge", "-o", "-", "-w",
                        "\n%{http_version} %{http_code}"] + list(args) + [url(p, path)],
                       timeout=timeout, input=input)
    eq(rc, 0, "curl exit status (stderr %r)" % err)
    body, _, tail = out.rpartition(b"\n")
    version, code = tail.decode().split()
    return version, int(code), body


# ---------------------------------------------------------------------------------------------
# A Python h2 client that can send what a well-behaved one would not
# ---------------------------------------------------------------------------------------------

class Stream:
    def __init__(self):
        self.headers = None
        self.interim = []
        self.data = bytearray()
        self.trailers = None
        self.ended = False
        self.reset = None

    @property
    def status(self):
        return int(dict(self.headers)[b":status"]) if self.headers else None

    def header(self, name):
        return dict(self.headers or ()).get(name)

    @property
    def done(self):
        return self.ended or self.reset is not None


class H2Client:
    """One HTTP/2 connection. Streams in `stalled` never get a stream-level WINDOW_UPDATE (their
    bytes are still given back at the connection level, so the others keep flowing)."""

    def __init__(self, addr, settings=None, timeout=10.0):
        self.sock = socket.create_connection(addr, timeout=timeout)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.streams = {}
        self.stalled = set()
        self.goaway = None
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_headers(self, headers, end_stream=True):
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Stream()
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.flush()
        return sid

    def request(self, method="GET", path="/api/", headers=(), body=None, authority=None):
        hs = [(":method", method), (":scheme", "http"), (":path", path),
              (":authority", authority or "test.local")] + list(headers)
        if body is not None:
            hs.append(("content-length", str(len(body))))
        sid = self.send_headers(hs, end_stream=body is None)
        if body is not None:
            self.send_body(sid, body)
        return sid

    def send_body(self, sid, body, end=True):
        """Sends as much as flow control allows, waiting for WINDOW_UPDATE (10s at most)."""
        view = memoryview(body)
        deadline = time.monotonic() + 10
        while view:
            if self.streams[sid].reset is not None:
                raise h2.exceptions.StreamClosedError(sid)
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                if time.monotonic() > deadline:
                    raise TestFailure("request body blocked by flow control for 10s")
                self.pump(0.2)
                continue
            self.conn.send_data(sid, view[:room].tobytes())
            view = view[room:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout):
        """Reads once (up to `timeout`) and handles the events. False when the peer closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(256 * KiB)
        except socket.timeout:
            return True
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            self._event(ev)
        self.flush()
        return True

    def _event(self, ev):
        st = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived):
            st.headers = ev.headers
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            st.interim.append(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            st.data += ev.data
            if ev.stream_id in self.stalled:
                self.conn.increment_flow_control_window(ev.flow_controlled_length)
            else:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            st.trailers = ev.headers
        elif isinstance(ev, h2.events.StreamEnded):
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            st.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (ev.error_code, ev.last_stream_id)

    def wait(self, pred, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure("timed out after %ss waiting for %s" % (timeout, what))
            if not self.pump(min(left, 0.5)) and not pred():
                raise TestFailure("connection closed while waiting for %s" % what)

    def wait_done(self, sid, timeout=10.0):
        self.wait(lambda: self.streams[sid].done, timeout, "stream %d to finish" % sid)
        return self.streams[sid]

    def get(self, path="/api/", headers=(), timeout=10.0):
        return self.wait_done(self.request("GET", path, headers), timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def echo_of(st):
    check(st.status == 200, "status %r, body %r" % (st.status, bytes(st.data[:200])))
    return json.loads(bytes(st.data))


def upstream_header(echo, name):
    vals = [v for k, v in echo["headers"] if k.lower() == name.lower()]
    return vals[0] if len(vals) == 1 else (vals or None)


# ---------------------------------------------------------------------------------------------
# Real clients
# ---------------------------------------------------------------------------------------------

def test_curl_get_is_proxied_as_http2():
    up = Upstream("up")
    with Proxy(h2_config(up)) as p:
        version, code, body = curl(p, "/api/hello?x=1", "-H", "x-tenant: acme")
        eq((version, code), ("2", 200), "curl's HTTP version and status")
        e = json.loads(body)
        eq(e["method"], "GET", "upstream method")
        eq(e["path"], "/api/hello?x=1", "upstream target")
        eq(e["version"], "HTTP/1.1", "upstream protocol")
        eq(upstream_header(e, "host"), "%s:%d" % p.addr(), "Host from :authority")
        eq(upstream_header(e, "x-tenant"), "acme", "end-to-end field")
        eq(upstream_header(e, "x-forwarded-proto"), "http", "x-forwarded-proto")
        eq(upstream_header(e, "x-forwarded-for"), "127.0.0.1", "x-forwarded-for")
        check(not any(k.startswith(":") for k, _ in e["headers"]), "pseudo-headers leaked upstream")
        rec = p.access_log(1, lambda r: r["path"] == "/api/hello?x=1")
        eq(len(rec), 1, "access-log lines")
        eq(rec[0]["protocol"], "HTTP/2", "access-log protocol")
        eq(rec[0]["status"], 200, "access-log status")


def test_curl_post_body_with_and_without_length():
    up = Upstream("up")
    body = os.urandom(3 * MiB + 17)
    want = hashlib.sha256(body).hexdigest()
    path = os.path.join(tmpdir(), "body")
    with open(path, "wb") as f:
        f.write(body)
    with Proxy(h2_config(up)) as p:
        _, code, out = curl(p, "/api/post", "--data-binary", "@" + path)
        eq(code, 200, "POST status")
        e = json.loads(out)
        eq((e["body_len"], e["body_sha256"]), (len(body), want), "body the upstream got")
        eq(upstream_header(e, "content-length"), str(len(body)), "Content-Length upstream")
        # From stdin: no content-length on the HTTP/2 side, so chunked upstream.
        _, code, out = curl(p, "/api/post", "-X", "POST", "-T", "-", input=body)
        eq(code, 200, "streamed POST status")
        e = json.loads(out)
        eq((e["body_len"], e["body_sha256"]), (len(body), want), "streamed body the upstream got")
        eq(upstream_header(e, "transfer-encoding"), "chunked", "framing upstream without length")


def test_curl_big_responses():
    up = Upstream("up", chunk=256 * KiB)
    with Proxy(h2_config(up)) as p:
        for n, framing in ((9 * MiB + 5, "length"), (5 * MiB, "chunked")):
            behave = json.dumps({"body_bytes": n, "framing": framing})
            _, code, body = curl(p, "/api/big", "-H", "x-behave: " + behave)
            eq(code, 200, "status of the %s response" % framing)
            eq(len(body), n, "bytes of the %s response" % framing)
            eq(hashlib.sha256(body).hexdigest(), pattern_sha(n), "sha256 of the %s response" % framing)


def test_many_mid_size_responses_on_one_connection():
    """Responses of 1-15 KiB on concurrent streams: the proxy gathers nghttp2's frames in a
    16 KiB buffer before they are queued, so frames that fit, frames that must go after what is
    gathered and frames larger than the buffer all occur; every body must arrive whole."""
    up = Upstream("up")
    with Proxy(h2_config(up)) as p, H2Client(p.addr()) as c:
        sizes = [1000 + 1500 * (i % 10) for i in range(40)]
        sids = [c.request("GET", "/api/m%d" % i, [("x-behave", json.dumps({"body_bytes": n}))])
                for i, n in enumerate(sizes)]
        for sid, n in zip(sids, sizes):
            st = c.wait_done(sid)
            eq(st.status, 200, "status of a %d-byte response" % n)
            eq(len(st.data), n, "bytes of a %d-byte response" % n)
            eq(hashlib.sha256(bytes(st.data)).hexdigest(), pattern_sha(n), "sha256 of a %d-byte response" % n)


def test_curl_head_and_404():
    up = Upstream("up")
    with Proxy(h2_config(up)) as p:
        rc, out, err = run([CURL, "-s", "-S", "--http2-prior-knowledge", "-I", url(p, "/api/h")])
        eq(rc, 0, "curl -I exit status (%s)" % err)
        head = out.decode()
        check(head.startswith("HTTP/2 200"), "HEAD status line: %r" % head[:40])
        check(re.search(r"(?mi)^content-length: \d+\r?$", head), "HEAD keeps content-length: %r" % head)
        eq(up.requests[-1]["method"], "HEAD", "method upstream")
        version, code, body = curl(p, "/elsewhere")
        eq((version, code), ("2", 404), "unrouted request")
        check(b"no route" in body, "404 body: %r" % body)


def test_http1_still_served_on_the_same_port():
    up = Upstream("up")
    with Proxy(h2_config(up)) as p:
        r = request(p.addr(), "GET", "/api/one")
        eq(r.status, 200, "raw HTTP/1.1 status")
        rc, out, _ = run([CURL, "-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                          url(p, "/api/two")])
        eq(out.decode(), "1.1 200", "curl without --http2")
        eq(curl(p, "/api/three")[:2], ("2", 200), "and HTTP/2 right after")
        # A preface that arrives one byte at a time is still recognised.
        with socket.create_connection(p.addr(), timeout=5) as s:
            for b in PREFACE:
                s.sendall(bytes([b]))
                time.sleep(0.002)
            s.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # empty SETTINGS
            hdr = s.recv(9)
            eq(len(hdr), 9, "frame header after a trickled preface")
            eq(hdr[3], 0x4, "first frame type from the server (SETTINGS)")
        logs = p.access_log(3)
        eq(sorted(r["protocol"] for r in logs[:3]), ["HTTP/1.1", "HTTP/1.1", "HTTP/2"],
           "protocols in the access log")


def test_nghttp_concurrent_streams_on_one_connection():
    up = Upstream("up", delay=0.6)
    with Proxy(h2_config(up)) as p:
        paths = ["/api/c%d" % i for i in range(6)]
        t0 = time.monotonic()
        rc, out, err = run([NGHTTP, "-n", "-s"] + [url(p, x) for x in paths])
        dt = time.monotonic() - t0
        eq(rc, 0, "nghttp exit status (%s)" % err)
        text = out.decode()
        for x in paths:
            check(re.search(r"\s200\s+\d+\s+%s\s*$" % re.escape(x), text, re.M),
                  "no 200 line for %s in:\n%s" % (x, text))
        # Six requests of 0.6s each on one connection: they ran side by side.
        check(dt < 2.5, "6 x 0.6s requests took %.1fs: streams were not concurrent" % dt)
        check(up.max_active >= 2, "upstream saw at most %d connections at once" % up.max_active)
        eq(len(p.access_log(6)), 6, "access-log lines")


def test_h2load_many_streams():
    up = Upstream("up")
    with Proxy(h2_config(up)) as p:
        rc, out, err = run([H2LOAD, "-n", "2000", "-c", "2", "-m", "50", url(p, "/api/load")],
                           timeout=120)
        text = out.decode()
        eq(rc, 0, "h2load exit status (%s)" % err)
        check(re.search(r"requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed",
                        text), "h2load summary:\n%s" % text)
        check("status codes: 2000 2xx" in text, "h2load status codes:\n%s" % text)


# ---------------------------------------------------------------------------------------------
# Malformed requests: stream errors, nothing forwarded, the connection lives on
# ---------------------------------------------------------------------------------------------

BASE = [(":method", "GET"), (":scheme", "http"), (":path", "/api/bad"), (":authority", "a.test")]

MALFORMED = {
    "duplicate :path": BASE + [(":path", "/api/again")],
    "unknown pseudo-header": BASE + [(":foo", "bar")],
    "pseudo-header after a regular field": BASE[:3] + [("x-a", "1"), (":authority", "a.test")],
    "missing :path": BASE[:2] + BASE[3:],
    "missing :method": BASE[1:],
    "empty :path": BASE[:2] + [(":path", "")] + BASE[3:],
    "relative :path": BASE[:2] + [(":path", "api/bad")] + BASE[3:],
    ":status in a request": BASE + [(":status", "200")],
    "connection": BASE + [("connection", "keep-alive")],
    "keep-alive": BASE + [("keep-alive", "timeout=5")],
    "proxy-connection": BASE + [("proxy-connection", "close")],
    "transfer-encoding": BASE + [("transfer-encoding", "chunked")],
    "upgrade": BASE + [("upgrade", "websocket")],
    "te: gzip": BASE + [("te", "gzip")],
    "upper-case name": BASE + [("X-Upper", "1")],
    "CR in a value": BASE + [("x-a", "1\r\nx-b: 2")],
    "userinfo in :authority": BASE[:3] + [(":authority", "user@a.test")],
    ":authority and Host differ": BASE + [("host", "b.test")],
}


def test_malformed_requests_get_protocol_error():
    up = Upstream("up")
    with Proxy(h2_config(up)) as p, H2Client(p.addr()) as c:
        for what, headers in MALFORMED.items():
            sid = c.send_headers(headers)
            st = c.wait_done(sid)
            eq(st.reset, PROTOCOL_ERROR, "RST_STREAM code for %s (status %r)" % (what, st.status))
        # Stream errors only: the same connection still serves, with te: trailers allowed.
        st = c.get("/api/good", [("te", "trailers"), ("cookie", "a=1"), ("cookie", "b=2")])
        e = echo_of(st)
        eq(upstream_header(e, "cookie"), "a=1; b=2", "cookie crumbs joined (RFC 9113 8.2.3)")
        eq(upstream_header(e, "te"), "trailers", "te: trailers forwarded")
        eq(up.head_paths, ["/api/good"], "requests that reached the upstream")
        check(c.goaway is None, "GOAWAY %r" % (c.goaway,))


def test_connect_and_options_star_are_answered():
    up = Upstream("up")
    with Proxy(h2_config(up)) as p, H2Client(p.addr()) as c:
        st = c.wait_done(c.send_headers([(":method", "CONNECT"), (":authority", "x.test:443")],
                                        end_stream=False))
        eq(st.status, 405, "CONNECT status")
        st = c.wait_done(c.send_headers([(":method", "OPTIONS"), (":scheme", "http"), (":path", "*"),
                                         (":authority", "a.test")]))
        eq(st.status, 400, "OPTIONS * status")
        eq(up.heads, 0, "requests that reached the upstream")


def test_content_length_mismatch_is_a_stream_error():
    up = Upstream("up")
    with Proxy(h2_config(up)) as p, H2Client(p.addr()) as c:
        for declared, sent in ((10, 5), (3, 5)):
            sid = c.send_headers([(":method", "POST")] + BASE[1:] +
                                 [("content-length", str(declared))], end_stream=False)
            c.conn.send_data(sid, b"x" * sent, end_stream=True)
            c.flush()
            st = c.wait_done(sid)
            eq(st.reset, PROTOCOL_ERROR, "RST_STREAM for content-length %d with %d bytes"
               % (declared, sent))
        # END_STREAM on HEADERS with a non-zero content-length (RFC 9113 8.1.1).
        st = c.wait_done(c.send_headers(BASE + [("content-length", "4")]))
        eq(st.reset, PROTOCOL_ERROR, "RST_STREAM for content-length 4 without DATA")
        time.sleep(0.3)
        eq(up.completed, 0, "upstream requests whose body completed")
        eq(echo_of(c.get("/api/after"))["path"], "/api/after", "connection still usable")


def test_request_limits():
    up = Upstream("up")
    lim = {"max_request_body_bytes": "64KiB", "max_header_bytes": "4KiB"}
    with Proxy(h2_config(up, limits=lim)) as p, H2Client(p.addr()) as c:
        st = c.get("/api/h", [("x-big", "v" * 6000)])
        eq(st.status, 431, "status for a 6 KB header list with max_header_bytes 4KiB")
        st = c.wait_done(c.request("POST", "/api/b", body=b"z" * (100 * KiB)))
        eq(st.status, 413, "status for a declared 100 KiB body")
        # Without content-length the limit applies as the body streams.
        sid = c.send_headers([(":method", "POST")] + BASE[1:], end_stream=False)
        try:
            c.send_body(sid, b"y" * (200 * KiB))
        except h2.exceptions.StreamClosedError:
            pass
        st = c.wait_done(sid)
        eq(st.status, 413, "status for a streamed 200 KiB body")
        eq(echo_of(c.get("/api/ok"))["path"], "/api/ok", "connection still usable")
        eq(up.completed, 1, "requests completed upstream")


def test_response_trailers_and_interim():
    up = Upstream("up")
    with Proxy(h2_config(up)) as p, H2Client(p.addr()) as c:
        # The HTTP/1.1 upstream writes names in mixed case; on HTTP/2 they must be lower case
        # (RFC 9113 8.2.1) in the head, the trailers and interim responses alike.
        behave = {"body_bytes": 1000, "framing": "chunked", "headers": {"X-Mixed-Case": "Value-Kept"},
                  "trailers": {"Grpc-Status": "0", "grpc-message": "ok"}}
        st = c.get("/api/t", [("te", "trailers"), ("x-behave", json.dumps(behave))])
        eq(st.status, 200, "status")
        eq(len(st.data), 1000, "body bytes")
        eq(dict(st.trailers or ()), {b"grpc-status": b"0", b"grpc-message": b"ok"}, "trailers")
        eq(st.header(b"x-mixed-case"), b"Value-Kept", "mixed-case field from the upstream")
        eq(st.header(b"content-type"), b"application/octet-stream", "content-type")
        eq([k for k, _ in st.headers if k != k.lower()], [], "upper-case letters in response field names")
        st = c.get("/api/i", [("x-behave", json.dumps({"interim": [103]}))])
        eq([dict(h)[b":status"] for h in st.interim], [b"103"], "interim responses")
        eq(dict(st.interim[0]).get(b"link"), b"</style.css>; rel=preload", "the 103's Link field")
        eq(st.status, 200, "final status after 103")


# ---------------------------------------------------------------------------------------------
# Flow control and resets
# ---------------------------------------------------------------------------------------------

def test_stalled_stream_does_not_block_others_or_grow_memory():
    big = 256 * MiB
    up, source = Upstream("up", chunk=64 * KiB), Upstream("source", chunk=64 * KiB)
    with Proxy(h2_config(up, timeout="2m", big=source)) as p, H2Client(p.addr()) as c:
        stalled = c.request("GET", "/big/stalled", [("x-behave", json.dumps({"body_bytes": big}))])
        c.stalled.add(stalled)
        c.wait(lambda: len(c.streams[stalled].data) >= 65535, what="the stalled stream's window")
        # Its window is closed; other streams, small and large, still complete.
        for i in range(3):
            eq(echo_of(c.get("/api/other%d" % i))["path"], "/api/other%d" % i, "other stream")
        st = c.get("/api/big", [("x-behave", json.dumps({"body_bytes": 4 * MiB}))])
        eq(len(st.data), 4 * MiB, "a 4 MiB response next to the stalled one")
        eq(len(c.streams[stalled].data), 65535, "bytes past the stalled stream's window")
        time.sleep(1.0)
        sent = source.sent_bytes
        check(sent < 48 * MiB, "upstream could write %d MiB for a stream whose client reads "
              "nothing: the proxy buffers without bound" % (sent // MiB))
        # RST_STREAM from the client: the exchange is abandoned, the upstream connection freed.
        c.conn.reset_stream(stalled, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        check(wait_until(lambda: source.active == 0, 10),
              "upstream connection of the reset stream is still open")
        check(source.sent_bytes < big, "the whole body was produced for a reset stream")
        eq(echo_of(c.get("/api/after"))["path"], "/api/after", "connection usable after the reset")
        rec = p.access_log(1, lambda r: r["path"] == "/big/stalled")
        eq(len(rec), 1, "access-log line of the reset stream")


def test_response_not_held_for_a_slower_stream():
    """While other streams are open, a response waits one loop turn for theirs (to share a
    segment with them); it must never wait for them to finish."""
    up = Upstream("up")
    with Proxy(h2_config(up)) as p, H2Client(p.addr()) as c:
        slow = c.request("GET", "/api/slow", [("x-behave", json.dumps({"delay": 4}))])
        wait_until(lambda: up.heads == 1, 5)
        t0 = time.monotonic()
        for i in range(3):
            eq(echo_of(c.get("/api/fast%d" % i, timeout=3))["path"], "/api/fast%d" % i, "fast stream")
        dt = time.monotonic() - t0
        check(not c.streams[slow].done, "the slow stream finished first (%.1fs)" % dt)
        check(dt < 2.5, "three fast responses next to a 4 s one took %.1fs" % dt)
        eq(echo_of(c.wait_done(slow))["path"], "/api/slow", "slow stream")


def test_slow_upstream_closes_the_request_window():
    up = Upstream("up", body_delay=2.0)
    body = os.urandom(48 * MiB)
    with Proxy(h2_config(up)) as p, H2Client(p.addr(), timeout=30) as c:
        sid = c.send_headers([(":method", "POST")] + BASE[1:] +
                             [("content-length", str(len(body)))], end_stream=False)
        view, sent = memoryview(body), 0
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size,
                       len(view) - sent)
            if room <= 0:
                c.pump(0.05)
                continue
            c.conn.send_data(sid, view[sent:sent + room].tobytes())
            sent += room
            c.flush()
        check(sent < 24 * MiB, "the client could send %d MiB while the upstream read nothing"
              % (sent // MiB))
        eq(c.conn.local_flow_control_window(sid), 0, "stream window while the upstream stalls")
        c.send_body(sid, view[sent:].tobytes())
        st = c.wait_done(sid, timeout=60)
        e = echo_of(st)
        eq((e["body_len"], e["body_sha256"]), (len(body), hashlib.sha256(body).hexdigest()),
           "body the upstream got once it read")


def test_client_reset_mid_response_and_connection_close():
    up = Upstream("up")
    source = Upstream("source", chunk=16 * KiB, chunk_delay=0.01)
    behave = [("x-behave", json.dumps({"body_bytes": 64 * MiB}))]
    with Proxy(h2_config(up, big=source)) as p:
        with H2Client(p.addr()) as c:
            sid = c.request("GET", "/big/r1", behave)
            c.wait(lambda: len(c.streams[sid].data) > 100 * KiB, what="some response bytes")
            c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            c.flush()
            check(wait_until(lambda: source.active == 0, 10),
                  "upstream still sending after RST_STREAM")
            eq(echo_of(c.get("/api/next"))["path"], "/api/next", "same connection afterwards")
        # Closing the whole connection mid-response abandons its exchanges too.
        source.reset_stats()
        c = H2Client(p.addr())
        sid = c.request("GET", "/big/r2", behave)
        c.wait(lambda: len(c.streams[sid].data) > 100 * KiB, what="some response bytes")
        c.close()
        check(wait_until(lambda: source.active == 0, 10),
              "upstream still sending after the client left")
        check(source.sent_bytes < 64 * MiB, "whole body produced for a client that left")
        rec = p.access_log(2, lambda r: r["path"].startswith("/big/"))
        eq(sorted(r["path"] for r in rec), ["/big/r1", "/big/r2"], "access-log lines")


# ---------------------------------------------------------------------------------------------
# Timeouts and GOAWAY
# ---------------------------------------------------------------------------------------------

def read_frames(sock, until, timeout=10.0):
    """Raw frames (hyperframe objects) until `until(frames)` or EOF; returns (frames, eof)."""
    frames, buf, eof = [], b"", False
    deadline = time.monotonic() + timeout
    while not until(frames) and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            data = b""
        if not data:
            eof = True
            break
        buf += data
        while len(buf) >= 9:
            f, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            f.parse_body(memoryview(buf[9:9 + length]))
            frames.append(f)
            buf = buf[9 + length:]
    return frames, eof


def goaways(frames):
    return [(f.last_stream_id, f.error_code) for f in frames if isinstance(f, GoAwayFrame)]


def test_idle_and_header_timeouts():
    up = Upstream("up")
    lim = {"idle_timeout": "1s", "header_timeout": "1s"}
    with Proxy(h2_config(up, limits=lim)) as p:
        with H2Client(p.addr()) as c:
            eq(c.get("/api/x").status, 200, "status")
            t0 = time.monotonic()
            c.wait(lambda: c.goaway is not None, 5, "GOAWAY on an idle connection")
            dt = time.monotonic() - t0
            eq(c.goaway[0], h2.errors.ErrorCodes.NO_ERROR, "GOAWAY code")
            check(0.5 < dt < 4, "idle GOAWAY after %.1fs (idle_timeout 1s)" % dt)
        # A preface and nothing else: closed after header_timeout.
        with socket.create_connection(p.addr(), timeout=5) as s:
            s.sendall(PREFACE)
            t0 = time.monotonic()
            _, eof = read_frames(s, lambda fs: False, timeout=5)
            check(eof, "connection with no request still open after 5s")
            check(time.monotonic() - t0 < 4, "closed only after %.1fs" % (time.monotonic() - t0))


def test_goaway_on_drain():
    up = Upstream("up", delay=1.0)
    with Proxy(h2_config(up)) as p:
        s = socket.create_connection(p.addr(), timeout=10)
        enc = hpack.Encoder()
        s.sendall(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        block = enc.encode([(":method", "GET"), (":scheme", "http"), (":path", "/api/slow"),
                            (":authority", "a.test")])
        hf = HeadersFrame(1, block)
        hf.flags.add("END_HEADERS")
        hf.flags.add("END_STREAM")
        s.sendall(hf.serialize())
        wait_until(lambda: up.heads == 1, 5)
        p.proc.send_signal(signal.SIGTERM)
        frames, eof = read_frames(s, lambda fs: any(f.type == 0x6 for f in fs), timeout=5)
        g = goaways(frames)
        check(len(g) >= 1, "no GOAWAY after SIGTERM; frames: %r" % frames)
        eq(g[0], (2 ** 31 - 1, 0), "first GOAWAY: shutdown notice (RFC 9113 6.8)")
        # The PING that measures the round trip gets its ACK; the final GOAWAY follows.
        for f in frames:
            if f.type == 0x6 and "ACK" not in f.flags:
                s.sendall(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + f.opaque_data)
        more, eof = read_frames(s, lambda fs: False, timeout=8)
        frames += more
        check(eof, "connection not closed after the in-flight response")
        eq(goaways(frames)[-1], (1, 0), "final GOAWAY")
        dec = hpack.Decoder()
        status = [dict(dec.decode(f.data)).get(":status") for f in frames
                  if isinstance(f, HeadersFrame) and f.stream_id == 1]
        eq(status, ["200"], "in-flight request answered during the drain")
        check(any(f.type == 0x0 and f.stream_id == 1 and "END_STREAM" in f.flags for f in frames),
              "response body ended")
        s.close()
        eq(p.proc.wait(10), 0, "exit status after the drain")


if __name__ == "__main__":
    main(globals())
