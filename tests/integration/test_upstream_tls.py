"""TLS to upstreams (upstreams.*.tls) for HTTP/1.1 upstreams: verification
against a CA, SNI and name checks, verify: false, client certificates, and
keep-alive reuse of TLS connections. Certificates are made at test time."""
import http.server
import json
import socketserver
import ssl
import threading

from harness import Proxy, check, config, eq, main, request, wait_until
from test_tls import make_pki


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.requests += 1
        body = json.dumps({"path": self.path, "sni": getattr(self.connection, "sni", None),
                           "peer_cert": bool(self.connection.getpeercert())}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class TlsUpstream(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """An HTTPS upstream on 127.0.0.1:0 with the test server certificate."""
    daemon_threads = True

    def __init__(self, p, require_client_cert=False):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.handshakes = 0
        self.snis = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(p("srv.crt"), p("srv.key"))
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(p("ca.crt"))

        def on_sni(sock, name, _ctx):
            with self.lock:
                self.handshakes += 1
                self.snis.append(name)
        ctx.sni_callback = on_sni
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.server_address[1]

    def handle_error(self, request, client_address):
        pass  # failed handshakes are part of the tests

    def stop(self):
        self.shutdown()
        self.server_close()


def run(p, tls, up=None, n=1, path="/x"):
    up = up or TlsUpstream(p)
    try:
        cfg = config({"u": {"endpoints": [up.addr], "tls": tls}}, [{"name": "r", "destinations": [{"upstream": "u"}]}])
        with Proxy(cfg) as px:
            results = [request(px.addr(), "GET", "%s%d" % (path, i)) for i in range(n)]
            return up, results, px.stderr()
    finally:
        up.stop()


def test_verified_against_ca_with_sni_and_reuse():
    p = make_pki()
    up, results, _ = run(p, {"ca": p("ca.crt"), "sni": "localhost"}, n=30)
    for r in results:
        eq(r.status, 200, "status through a verified TLS upstream")
    eq(up.requests, 30, "every request reached the TLS upstream")
    check(up.handshakes <= 4, "keep-alive TLS connections reused (%d handshakes for 30 requests)" % up.handshakes)
    check(set(up.snis) == {"localhost"}, "SNI sent: %r" % up.snis)


def test_ip_endpoint_verified_by_address_without_sni():
    p = make_pki()
    up, results, _ = run(p, {"ca": p("ca.crt")})
    eq(results[0].status, 200, "certificate with IP:127.0.0.1 verified against the endpoint address")
    eq(up.snis, [None], "no SNI for an IP literal (RFC 6066)")


def test_untrusted_or_mismatched_certificate_is_502():
    p = make_pki()
    for what, tls in (("untrusted CA", {"ca": p("rogue.crt")}),
                      ("name mismatch", {"ca": p("ca.crt"), "sni": "wrong.example"})):
        up, results, stderr = run(p, tls)
        eq(results[0].status, 502, "%s: status" % what)
        check(b"upstream" in results[0].body, "%s: body names the upstream: %r" % (what, results[0].body))
        eq(up.requests, 0, "%s: nothing reached the application" % what)
        check("TLS handshake failed" in stderr, "%s: error log says why: %r" % (what, stderr[-500:]))


def test_verify_false_accepts_any_certificate():
    p = make_pki()
    up, results, _ = run(p, {"ca": p("rogue.crt"), "verify": False})
    eq(results[0].status, 200, "verify: false")


def test_client_certificate_for_mtls_upstream():
    p = make_pki()
    up, results, _ = run(p, {"ca": p("ca.crt"), "certificate": p("cli.crt"), "private_key": p("cli.key")},
                         up=TlsUpstream(p, require_client_cert=True))
    eq(results[0].status, 200, "client certificate presented")
    check(json.loads(results[0].body)["peer_cert"], "upstream saw the client certificate")
    up, results, _ = run(p, {"ca": p("ca.crt")}, up=TlsUpstream(p, require_client_cert=True))
    eq(results[0].status, 502, "no client certificate for an upstream that requires one")


if __name__ == "__main__":
    main(globals())
