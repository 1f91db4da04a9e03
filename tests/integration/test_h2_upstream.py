"""HTTP/2 upstreams (protocol: h2c | h2): any client protocol to an HTTP/2
upstream, multiplexed pooled sessions, bodies both ways, trailers through to
HTTP/2 clients (gRPC), gRPC-shaped errors, upstream stream resets, TLS with
ALPN h2. Upstreams: a scriptable Python h2 server and nghttpd."""
import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading

import h2.config
import h2.connection
import h2.events

from harness import Proxy, check, config, eq, main, request, run_threads, spawn, wait_until
from test_tls import make_pki


class Seen:
    """Remembers the requests an H2Upstream answered (for the mirror test)."""
    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()


class H2Upstream:
    """h2 server on 127.0.0.1:0. Paths: /reset -> RST_STREAM; anything else
    -> 200 JSON echo (method, path, authority, headers, body sha256) with
    trailers grpc-status: 0."""

    def __init__(self, tls_files=None):
        self.seen = Seen()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if tls_files:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*tls_files)
            self.ctx.set_alpn_protocols(["h2"])
        self.connections = 0
        self.lock = threading.Lock()
        self.alive = True
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while self.alive:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            if self.ctx:
                c = self.ctx.wrap_socket(c, server_side=True)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            conn.initiate_connection()
            c.sendall(conn.data_to_send())
            streams = {}
            while True:
                data = c.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = {"headers": [(k.decode(), v.decode()) for k, v in ev.headers],
                                                 "sha": hashlib.sha256(), "len": 0}
                    elif isinstance(ev, h2.events.TrailersReceived):
                        streams[ev.stream_id]["trailers"] = [(k.decode(), v.decode()) for k, v in ev.headers]
                    elif isinstance(ev, h2.events.DataReceived):
                        st = streams[ev.stream_id]
                        st["sha"].update(ev.data)
                        st["len"] += len(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        self._respond(conn, ev.stream_id, streams.pop(ev.stream_id))
                c.sendall(conn.data_to_send())
        except Exception:
            pass
        finally:
            c.close()

    def _respond(self, conn, sid, st):
        hdrs = dict(st["headers"])
        with self.seen.lock:
            self.seen.requests.append((hdrs, st["len"]))
        if hdrs.get(":path") == "/reset":
            conn.reset_stream(sid, error_code=2)
            return
        body = json.dumps({"method": hdrs.get(":method"), "path": hdrs.get(":path"),
                           "authority": hdrs.get(":authority"), "scheme": hdrs.get(":scheme"),
                           "headers": st["headers"], "trailers": st.get("trailers", []), "body_len": st["len"],
                           "body_sha256": st["sha"].hexdigest()}).encode()
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/json"),
                                ("content-length", str(len(body)))])
        # Echo bodies are a few KiB: far below the stream window, in frames
        # of at most the default maximum size.
        for i in range(0, len(body), 16384):
            conn.send_data(sid, body[i:i + 16384])
        conn.send_headers(sid, [("grpc-status", "0"), ("grpc-message", "ok")], end_stream=True)

    def stop(self):
        self.alive = False
        self.sock.close()


def route_cfg(up_addr, protocol="h2c", tls=None, workers=2):
    u = {"endpoints": [up_addr], "protocol": protocol}
    if tls:
        u["tls"] = tls
    return config({"h2": u}, [{"name": "r", "destinations": [{"upstream": "h2"}]}], workers=workers)


def h2_client_request(addr, path, headers=(), body=b"", trailers=None):
    """One request over HTTP/2 prior knowledge; returns (status, headers, body, trailers)."""
    s = socket.create_connection(addr, timeout=10)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST" if body else "GET"), (":scheme", "http"),
                            (":authority", "test.local"), (":path", path)] + list(headers),
                      end_stream=not body)
    if body:
        conn.send_data(sid, body, end_stream=not trailers)
    if body and trailers:
        conn.send_headers(sid, list(trailers), end_stream=True)
    s.sendall(conn.data_to_send())
    status, hdrs, data, trailers, done = None, {}, b"", {}, False
    while not done:
        chunk = s.recv(65536)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                hdrs = {k.decode(): v.decode() for k, v in ev.headers}
                status = int(hdrs[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers = {k.decode(): v.decode() for k, v in ev.headers}
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        s.sendall(conn.data_to_send())
    s.close()
    return status, hdrs, data, trailers


def test_http1_client_to_h2c_upstream():
    up = H2Upstream()
    with Proxy(route_cfg(up.addr)) as px:
        r = request(px.addr(), "GET", "/a?x=1", headers=[("Host", "api.example.com"), ("X-Custom", "v")])
        eq(r.status, 200, "status")
        echo = json.loads(r.body)
        eq((echo["method"], echo["path"], echo["authority"], echo["scheme"]),
           ("GET", "/a?x=1", "api.example.com", "http"), "pseudo-headers from the HTTP/1.1 request")
        names = [k for k, _ in echo["headers"]]
        check("x-custom" in names and "x-forwarded-for" in names, "fields forwarded, lower-cased: %r" % names)
        check("host" not in names and "connection" not in names, "no Host or hop-by-hop fields: %r" % names)
        body = os.urandom(1024 * 1024 + 7)
        r = request(px.addr(), "POST", "/upload", body=body)
        echo = json.loads(r.body)
        eq((echo["body_len"], echo["body_sha256"]), (len(body), hashlib.sha256(body).hexdigest()),
           "1 MiB request body through an HTTP/2 stream")
    up.stop()


def test_h2_client_gets_upstream_trailers():
    up = H2Upstream()
    with Proxy(route_cfg(up.addr)) as px:
        status, hdrs, data, trailers = h2_client_request(
            px.addr(), "/pkg.Svc/Call", headers=[("content-type", "application/grpc"), ("te", "trailers")],
            body=b"\x00\x00\x00\x00\x02hi")
        eq(status, 200, "status")
        eq(trailers.get("grpc-status"), "0", "grpc-status trailer passed through (trailers %r)" % trailers)
        echo = json.loads(data)
        check(("te", "trailers") in [tuple(h) for h in echo["headers"]], "te: trailers forwarded: %r" % echo["headers"])
        eq(echo["body_len"], 7, "request body")
    up.stop()


def test_streams_are_multiplexed_over_few_connections():
    up = H2Upstream()
    with Proxy(route_cfg(up.addr)) as px:
        def worker(i):
            for j in range(20):
                r = request(px.addr(), "GET", "/m/%d/%d" % (i, j))
                eq(r.status, 200, "request %d/%d" % (i, j))
        run_threads(worker, [(i,) for i in range(10)])
        check(up.connections <= 4, "200 requests from 10 clients used %d upstream connections" % up.connections)
    up.stop()


def test_upstream_stream_reset_is_502():
    up = H2Upstream()
    with Proxy(route_cfg(up.addr)) as px:
        r = request(px.addr(), "GET", "/reset")
        eq(r.status, 502, "RST_STREAM from the upstream")
        r = request(px.addr(), "GET", "/after")
        eq(r.status, 200, "the session keeps serving other streams")
    up.stop()


def test_grpc_request_to_dead_upstream_gets_grpc_status():
    from harness import closed_port
    cfg = route_cfg("127.0.0.1:%d" % closed_port())
    with Proxy(cfg) as px:
        status, hdrs, data, trailers = h2_client_request(
            px.addr(), "/pkg.Svc/Call", headers=[("content-type", "application/grpc"), ("te", "trailers")])
        eq(status, 200, "gRPC errors travel as HTTP 200")
        eq(hdrs.get("content-type"), "application/grpc", "content-type")
        eq(trailers.get("grpc-status"), "14", "UNAVAILABLE (trailers %r)" % trailers)
        check("upstream" in trailers.get("grpc-message", ""), "grpc-message names the cause")
        r = request(px.addr(), "GET", "/plain")
        eq(r.status, 502, "a non-gRPC request gets the plain 502")
        log = px.access_log(2)
        eq(sorted(e["status"] for e in log[-2:]), [502, 502], "both logged as 502 (error ratios count them)")


def test_h2_over_tls_upstream_with_alpn():
    p = make_pki()
    up = H2Upstream(tls_files=(p("srv.crt"), p("srv.key")))
    with Proxy(route_cfg(up.addr, protocol="h2", tls={"ca": p("ca.crt"), "sni": "localhost"})) as px:
        r = request(px.addr(), "GET", "/tls")
        eq(r.status, 200, "status over h2 + TLS")
        eq(json.loads(r.body)["scheme"], "https", ":scheme https for protocol h2")
    up.stop()


def test_shadows_to_an_h2c_mirror():
    from harness import Upstream, metric_value
    primary = Upstream("primary")
    mirror = H2Upstream()
    cfg = config({"primary": primary, "m": {"endpoints": [mirror.addr], "protocol": "h2c"}},
                 [{"name": "r", "destinations": [{"upstream": "primary"}],
                   "mirror": [{"upstream": "m", "timeout": "5s"}]}])
    with Proxy(cfg) as px:
        for i in range(20):
            r = request(px.addr(), "POST", "/s/%d" % i, headers=[("Host", "api.example.com")], body=b"x" * 1000)
            eq(r.status, 200, "primary")
        wait_until(lambda: len(mirror.seen.requests) >= 20, timeout=10)
        reqs = mirror.seen.requests
        eq(len(reqs), 20, "every request shadowed to the HTTP/2 mirror")
        eq({h[":authority"] for h, _ in reqs}, {"api.example.com-shadow"}, ":authority with the host suffix")
        eq({n for _, n in reqs}, {1000}, "shadow bodies")
        wait_until(lambda: metric_value(px.metrics(), "strangler_mirror_responses_total", route="r",
                                        upstream="m", code="200") == 20, timeout=10)
        check(mirror.connections <= 4, "shadows multiplexed (%d connections)" % mirror.connections)
    mirror.stop()


def test_h2_client_requests_are_mirrored():
    from harness import Upstream
    primary, shadow = Upstream("primary"), Upstream("shadow")
    cfg = config({"primary": primary, "shadow": shadow},
                 [{"name": "r", "destinations": [{"upstream": "primary"}], "mirror": [{"upstream": "shadow"}]}])
    with Proxy(cfg) as px:
        status, _, _, _ = h2_client_request(px.addr(), "/from-h2", body=b"hello h2")
        eq(status, 200, "primary answer to an HTTP/2 client")
        wait_until(lambda: shadow.completed >= 1, timeout=5)
        eq(shadow.completed, 1, "the HTTP/2 request was mirrored")
        log = [e for e in px.access_log(2) if not e.get("shadow")]
        eq((log[0]["protocol"], log[0]["mirrored"]), ("HTTP/2", ["shadow"]), "primary access-log line")


def test_request_trailers_pass_through():
    """gRPC-style request trailers, from both client protocols, to both upstream protocols."""
    from harness import Upstream, Client, encode_chunked
    h2up, h1up = H2Upstream(), Upstream("h1")
    cfg = config({"h2": {"endpoints": [h2up.addr], "protocol": "h2c"}, "h1": h1up},
                 [{"name": "to-h1", "match": {"path_prefix": "/h1"}, "destinations": [{"upstream": "h1"}]},
                  {"name": "to-h2", "destinations": [{"upstream": "h2"}]}])
    with Proxy(cfg) as px:
        # HTTP/2 client -> HTTP/2 upstream
        status, _, data, _ = h2_client_request(px.addr(), "/t", body=b"abc",
                                               trailers=[("x-checksum", "c1"), ("x-other", "o")])
        eq(status, 200, "status")
        eq(json.loads(data)["trailers"], [["x-checksum", "c1"], ["x-other", "o"]], "h2 -> h2 trailers")
        # HTTP/2 client -> HTTP/1.1 upstream: chunked with trailers
        status, _, data, _ = h2_client_request(px.addr(), "/h1/t", body=b"abc", trailers=[("x-checksum", "c2")])
        echo = json.loads(data)
        eq(echo["trailers"], [["x-checksum", "c2"]], "h2 -> h1 trailers")
        eq(echo["body_len"], 3, "body")
        # HTTP/1.1 chunked client -> both
        for path, want in (("/t", "c3"), ("/h1/t", "c3")):
            with Client(px.addr()) as c:
                c.send(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"3\r\nabc\r\n0\r\nX-Checksum: c3\r\nHost: evil\r\n\r\n")
                r = c.read_response()
            eq(r.status, 200, "%s: status" % path)
            got = [[k.lower(), v] for k, v in json.loads(r.body)["trailers"]]
            eq(got, [["x-checksum", want]], "h1 chunked trailers to %s (Host in trailers dropped)" % path)
    h2up.stop()


def test_nghttpd_upstream_large_body_and_h2load():
    d = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sg-nghttpd-%d" % os.getpid())
    os.makedirs(d, exist_ok=True)
    blob = os.urandom(3 * 1024 * 1024)
    with open(os.path.join(d, "big.bin"), "wb") as f:
        f.write(blob)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ng = spawn(["nghttpd", "--no-tls", "--trailer=grpc-status: 0", "-d", d, str(port)],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def listening():
        # Without nghttpd, connecting in a loop to a free port can end in a TCP self-connect
        # that looks like a listener: ask the process first.
        check(ng.poll() is None, "nghttpd exited with %s (package nghttp2-server)" % ng.returncode)
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        check(wait_until(listening, timeout=5), "nghttpd listening on %d" % port)
        with Proxy(route_cfg("127.0.0.1:%d" % port)) as px:
            r = request(px.addr(), "GET", "/big.bin")
            eq((r.status, hashlib.sha256(r.body).hexdigest()), (200, hashlib.sha256(blob).hexdigest()),
               "3 MiB from nghttpd through the proxy")
            host, pport = px.addr()
            out = subprocess.run(["h2load", "-n", "500", "-c", "2", "-m", "10", "http://%s:%s/big.bin" % (host, pport)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120).stdout.decode()
            check("500 succeeded, 0 failed" in out, "h2load h2c -> h2c: %s" % out[-500:])
            status, _, data, trailers = h2_client_request(px.addr(), "/big.bin")
            eq((status, len(data), trailers.get("grpc-status")), (200, len(blob), "0"),
               "nghttpd's trailers reach an HTTP/2 client")
    finally:
        ng.terminate()
        ng.wait(timeout=5)
        os.remove(os.path.join(d, "big.bin"))
        os.rmdir(d)


if __name__ == "__main__":
    main(globals())
