#!/usr/bin/python3
"""Writes the seed corpora in tests/fuzz/corpus/ (run from anywhere; idempotent).

h1_request: every request of tests/integration/test_strictness.py's table plus a few valid
            streams (pipelining, chunked with trailers, websocket upgrade), each prefixed with
            the split byte the target reads first (0x80: one read; 0x03: 4-byte reads).
h2_server:  client frames (after the preface) made with python3-h2: plain GET, POST with
            DATA and trailers, split cookies, CONTINUATION, malformed heads.
config:     the repository's own configuration files.
"""

import hashlib
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))


def write(target, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def h1():
    import test_strictness as t
    streams = [raw for _, raw, _, _ in t.CASES] + [raw for _, raw, _ in t.NORMALISED]
    streams += [
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x00",
        b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"PUT /p HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
    ]
    for raw in streams:
        if len(raw) > 4096:
            raw = raw[:4096]
        write("h1_request", b"\x80" + raw)
        write("h1_request", b"\x03" + raw)


def h2():
    import h2.config
    import h2.connection

    def conn():
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding=None,
                                                                  validate_outbound_headers=False,
                                                                  normalize_outbound_headers=False))
        c.initiate_connection()
        return c

    def frames(c):
        data = c.data_to_send()
        return data[24:] if data.startswith(b"PRI * HTTP/2.0") else data

    base = [(":method", "GET"), (":scheme", "http"), (":path", "/p?q=1"), (":authority", "a.example")]
    heads = [
        base,
        base + [("cookie", "a=1"), ("cookie", "b=2"), ("te", "trailers"), ("x-a", "1")],
        base + [("x-long", "v" * 3000)],
        [(":method", "GET"), (":path", "/"), (":scheme", "http")] + [("host", "h.example")],
        base + [("connection", "close")],
        base + [("x-bad", "a\r\nb: c")],
        base + [("Upper", "x")],
        base + [(":path", "/dup")],
        [(":method", "CONNECT"), (":authority", "a.example:443")],
        [(":method", "OPTIONS"), (":scheme", "http"), (":path", "*"), (":authority", "a")],
        base + [("content-length", "5")],
        base + [("host", "other.example")],
        base + [("transfer-encoding", "chunked")],
    ]
    for h in heads:
        c = conn()
        c.send_headers(1, h, end_stream=True)
        write("h2_server", frames(c))
    # POST with data and trailers, two streams
    c = conn()
    c.send_headers(1, [(":method", "POST"), (":scheme", "https"), (":path", "/up"), (":authority", "a"),
                       ("content-length", "5"), ("content-type", "application/grpc")])
    c.send_data(1, b"hello")
    c.send_headers(1, [("grpc-status", "0"), ("content-length", "9"), ("x-t", "1")], end_stream=True)
    c.send_headers(3, base, end_stream=True)
    write("h2_server", frames(c))
    # body without content-length, in several DATA frames
    c = conn()
    c.send_headers(1, [(":method", "PUT"), (":scheme", "http"), (":path", "/x"), (":authority", "a")])
    for i in range(3):
        c.send_data(1, b"x" * 100)
    c.end_stream(1)
    write("h2_server", frames(c))
    # content-length shorter than the data
    c = conn()
    c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/x"), (":authority", "a"),
                       ("content-length", "2")])
    c.send_data(1, b"toolong", end_stream=True)
    write("h2_server", frames(c))
    # a reset mid-body
    c = conn()
    c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/x"), (":authority", "a")])
    c.send_data(1, b"partial")
    c.reset_stream(1)
    write("h2_server", frames(c))


def config():
    for d in (os.path.join(REPO, "config"), os.path.join(REPO, "tests", "data", "config")):
        for name in sorted(os.listdir(d)):
            if name.endswith(".yaml"):
                with open(os.path.join(d, name), "rb") as f:
                    write("config", f.read())


if __name__ == "__main__":
    for t in ("h1_request", "h2_server", "config"):
        shutil.rmtree(os.path.join(HERE, "corpus", t), ignore_errors=True)
    h1()
    h2()
    config()
    for t in ("h1_request", "h2_server", "config"):
        print(t, len(os.listdir(os.path.join(HERE, "corpus", t))))
