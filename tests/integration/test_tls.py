"""TLS listeners: certificates made at test time with openssl, real clients
(curl and Python's ssl module), TLS 1.2+ only, mTLS accepted and refused."""
import http.client
import json
import os
import socket
import ssl
import subprocess

from harness import (Proxy, Upstream, check, config, eq, main, run_cli, tmpdir, write_file)


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_pki():
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate
    from the same CA and one from a second, untrusted CA."""
    d = tmpdir()
    p = lambda n: os.path.join(d, n)
    for ca in ("ca", "rogue"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p(ca + ".key"), "-out",
                p(ca + ".crt"), "-days", "2", "-subj", "/CN=strangler-test-" + ca)
    with open(p("san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, ca, ext in (("srv", "ca", True), ("cli", "ca", False), ("evil", "rogue", False)):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p(name + ".key"), "-out", p(name + ".csr"),
                "-subj", "/CN=" + name)
        args = ["x509", "-req", "-in", p(name + ".csr"), "-CA", p(ca + ".crt"), "-CAkey", p(ca + ".key"),
                "-CAcreateserial", "-out", p(name + ".crt"), "-days", "2"]
        if ext:
            args += ["-extfile", p("san.cnf")]
        openssl(*args)
    return p


def tls_config(up, p, extra_listener=None):
    listeners = [
        {"name": "public", "address": "127.0.0.1:0"},
        {"name": "secure", "address": "127.0.0.1:0",
         "tls": {"certificate": p("srv.crt"), "private_key": p("srv.key")}},
        {"name": "mtls", "address": "127.0.0.1:0",
         "tls": {"certificate": p("srv.crt"), "private_key": p("srv.key"), "client_ca": p("ca.crt")}},
    ]
    return config({"up": up}, [{"name": "all", "destinations": [{"upstream": "up"}]}], listeners=listeners)


def client_ctx(p, cert=None, alpn=("http/1.1",), max_version=None):
    ctx = ssl.create_default_context(cafile=p("ca.crt"))
    if cert:
        ctx.load_cert_chain(p(cert + ".crt"), p(cert + ".key"))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def https_get(addr, ctx, paths=("/",), server_hostname="localhost"):
    host, port = addr
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    conn._server_hostname = server_hostname  # verify against the SAN, connect by IP
    out = []
    try:
        for path in paths:
            conn.request("GET", path, headers={"Host": "localhost"})
            r = conn.getresponse()
            out.append((r.status, r.read(), conn.sock.selected_alpn_protocol(), conn.sock.version()))
    finally:
        conn.close()
    return out


def test_https_request_keepalive_and_forwarded_proto():
    p = make_pki()
    up = Upstream("up")
    with Proxy(tls_config(up, p)) as px:
        res = https_get(px.addr("secure"), client_ctx(p), paths=("/a", "/b", "/c"))
        for status, body, alpn, version in res:
            eq(status, 200, "status over TLS")
            echo = json.loads(body)
            check(echo["path"] in ("/a", "/b", "/c"), "path reached the upstream: %r" % echo["path"])
            xfp = [v for k, v in echo["headers"] if k.lower() == "x-forwarded-proto"]
            eq(xfp, ["https"], "x-forwarded-proto on a TLS listener")
            eq(alpn, "http/1.1", "ALPN")
            check(version in ("TLSv1.2", "TLSv1.3"), "TLS version %r" % version)
        eq(up.accepted >= 1, True, "upstream reached")
        log = px.access_log(3)
        eq([e["status"] for e in log[-3:]], [200, 200, 200], "access log statuses")


def test_alpn_h2_over_tls():
    p = make_pki()
    up = Upstream("up")
    with Proxy(tls_config(up, p)) as px:
        host, port = px.addr("secure")
        base = ["curl", "-s", "--cacert", p("ca.crt"), "--resolve", "localhost:%s:%s" % (port, host),
                "-o", "/dev/null", "-w", "%{http_code} %{http_version}"]
        r = subprocess.run(base + ["--http2", "https://localhost:%s/a" % port], stdout=subprocess.PIPE, timeout=20)
        eq(r.stdout, b"200 2", "HTTP/2 chosen by ALPN")
        r = subprocess.run(["curl", "-s", "--http2", "--cacert", p("ca.crt"), "--resolve",
                            "localhost:%s:%s" % (port, host), "https://localhost:%s/b" % port],
                           stdout=subprocess.PIPE, timeout=20)
        xfp = [v for k, v in json.loads(r.stdout)["headers"] if k.lower() == "x-forwarded-proto"]
        eq(xfp, ["https"], "x-forwarded-proto for HTTP/2 over TLS")
        r = subprocess.run(base + ["--http1.1", "https://localhost:%s/c" % port], stdout=subprocess.PIPE, timeout=20)
        eq(r.stdout, b"200 1.1", "a client offering only http/1.1 gets HTTP/1.1")
        r = subprocess.run(["h2load", "-n", "400", "-c", "2", "-m", "10", "https://%s:%s/" % (host, port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = r.stdout.decode(errors="replace")
        check("Application protocol: h2" in out, "h2load negotiated h2: %s" % out[-600:])
        check("400 succeeded, 0 failed" in out, "h2load over TLS: %s" % out[-600:])
        protos = {e["protocol"] for e in px.access_log(402)}
        eq(protos, {"HTTP/2", "HTTP/1.1"}, "protocols in the access log")


def test_certificate_files_reread_on_reload():
    p = make_pki()
    up = Upstream("up")
    with Proxy(tls_config(up, p)) as px:
        def serial():
            host, port = px.addr("secure")
            with socket.create_connection((host, port), timeout=5) as raw:
                ctx = client_ctx(p)
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    return ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))
        before = serial()
        # Rotate: a new certificate for the same names, written over the old files.
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p("srv.key"), "-out", p("srv2.csr"),
                "-subj", "/CN=rotated")
        openssl("x509", "-req", "-in", p("srv2.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
                "-CAcreateserial", "-out", p("srv.crt"), "-days", "2", "-extfile", p("san.cnf"))
        eq(serial(), before, "the running context keeps the old certificate until a reload")
        r = json.loads(_post(px.admin, "/reload"))
        eq(r["result"], "success", "reload")
        after = serial()
        check(after != before, "new connections get the rotated certificate")
        with open(p("srv.crt")) as f:
            eq(after.strip(), f.read().strip(), "the certificate now served is the file's")


def _post(addr, path):
    host, port = addr
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("POST", path)
    return c.getresponse().read()


def test_tls_below_1_2_refused():
    p = make_pki()
    up = Upstream("up")
    with Proxy(tls_config(up, p)) as px:
        host, port = px.addr("secure")
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "--cacert", p("ca.crt"), "--tlsv1.0",
                            "--tls-max", "1.1", "--resolve", "localhost:%s:%s" % (port, host),
                            "https://localhost:%s/" % port], stdout=subprocess.PIPE, timeout=20)
        check(r.returncode != 0, "a TLS 1.1 handshake must fail (curl exit %d)" % r.returncode)
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", p("ca.crt"),
                            "--tlsv1.2", "--tls-max", "1.2", "--resolve", "localhost:%s:%s" % (port, host),
                            "https://localhost:%s/" % port], stdout=subprocess.PIPE, timeout=20)
        eq((r.returncode, r.stdout), (0, b"200"), "TLS 1.2 works")
        eq(up.completed, 1, "only the TLS 1.2 request reached the upstream")


def test_mtls_accepts_trusted_client_and_refuses_others():
    p = make_pki()
    up = Upstream("up")
    with Proxy(tls_config(up, p)) as px:
        res = https_get(px.addr("mtls"), client_ctx(p, cert="cli"))
        eq(res[0][0], 200, "trusted client certificate accepted")
        for who, cert in (("no certificate", None), ("untrusted CA", "evil")):
            try:
                https_get(px.addr("mtls"), client_ctx(p, cert=cert))
                raise AssertionError("%s: request succeeded" % who)
            except (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError) as e:
                check(not isinstance(e, AssertionError), "%s refused (%s)" % (who, e))
        eq(up.completed, 1, "refused clients never reached the upstream")
        # The plain listener of the same process is unaffected.
        res = https_get(px.addr("secure"), client_ctx(p))
        eq(res[0][0], 200, "non-mTLS listener without client certificate")


def test_plaintext_to_tls_port_gets_no_http_response():
    p = make_pki()
    up = Upstream("up")
    with Proxy(tls_config(up, p)) as px:
        host, port = px.addr("secure")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", "/")
            r = conn.getresponse()
            raise AssertionError("plaintext HTTP on a TLS port answered %d" % r.status)
        except (http.client.HTTPException, ConnectionError, OSError):
            pass
        eq(up.completed, 0, "nothing reached the upstream")


def test_bad_certificate_fails_start_with_exit_2():
    p = make_pki()
    up = Upstream("up")
    cfg = tls_config(up, p).replace(p("srv.key"), p("cli.key"), 1)  # key of another certificate
    path = write_file(cfg)
    r = run_cli(["-c", path, "--ready-file", os.path.join(tmpdir(), "ready")])
    eq(r.returncode, 2, "exit code for a key that does not match its certificate")
    check("secure" in r.stderr and "key" in r.stderr, "error names the listener and the key: %r" % r.stderr[-400:])
    r = run_cli(["--check", "-c", path])
    eq(r.returncode, 0, "--check validates the schema, not the files (CI checks configs without secrets)")


if __name__ == "__main__":
    main(globals())
