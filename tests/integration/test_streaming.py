"""Large bodies are streamed, not buffered: 1 GiB each way with bounded proxy memory, and
backpressure from a client that stops reading.

STRANGLER_TEST_BIG_BYTES overrides the 1 GiB (for local iteration only)."""

import hashlib
import json
import threading
import time

from harness import (BIG, KiB, MiB, Client, Proxy, RssSampler, TestFailure, Upstream,
                     build_request, check, config, eq, main, pattern, pattern_sha, request,
                     sanitizer_env, wait_until)

RSS_BUDGET_KB = 32 * 1024


def stream_config(up):
    return config({"up": up}, [{"name": "stream", "destinations": [{"upstream": "up"}],
                                "timeout": "10m"}])


def warm_up(p):
    # touch the request and response paths once so the idle RSS includes the steady state
    for _ in range(3):
        r = request(p.addr(), "POST", "/warm", (), b"w" * (256 * KiB))
        eq(r.status, 200, "warm-up POST")
        r = request(p.addr(), "GET", "/warm",
                    [("x-behave", json.dumps({"body_bytes": 4 * MiB}))])
        eq(r.body_len, 4 * MiB, "warm-up GET")
    time.sleep(0.2)
    return p.rss_kb()


def test_big_request_body_is_streamed():
    up = Upstream("sink")
    with Proxy(stream_config(up), env=sanitizer_env()) as p:
        idle = warm_up(p)
        h = hashlib.sha256()
        t0 = time.monotonic()
        with RssSampler(p.pid) as rss, Client(p.addr(), timeout=120) as c:
            c.send(build_request("POST", "/sink", [("Transfer-Encoding", "chunked")]))
            for piece in pattern(BIG, 1 * MiB):
                h.update(piece)
                c.send(b"%x\r\n" % len(piece))
                c.sock.sendall(piece)
                c.send(b"\r\n")
            c.send(b"0\r\n\r\n")
            r = c.read_response()
        dt = time.monotonic() - t0
        eq(r.status, 200, "status of the big upload")
        e = r.json()
        eq(e["body_len"], BIG, "bytes the upstream received")
        eq(e["body_sha256"], h.hexdigest(), "sha256 of what the upstream received")
        growth = rss.max - idle
        print("    upload %d MiB in %.1fs; RSS idle %d KiB, max %d KiB (+%d KiB)"
              % (BIG // MiB, dt, idle, rss.max, growth))
        check(len(rss.samples) >= 2, "too few RSS samples: %r" % rss.samples)
        check(growth < RSS_BUDGET_KB, "RSS grew by %d KiB while streaming %d MiB up (budget "
              "%d KiB)" % (growth, BIG // MiB, RSS_BUDGET_KB))


def test_big_response_body_is_streamed():
    up = Upstream("source", chunk=256 * KiB)
    want = pattern_sha(BIG)
    with Proxy(stream_config(up), env=sanitizer_env()) as p:
        idle = warm_up(p)
        t0 = time.monotonic()
        with RssSampler(p.pid) as rss, Client(p.addr(), timeout=120) as c:
            r = c.request("GET", "/source", [("x-behave", json.dumps({"body_bytes": BIG}))],
                          sink=lambda mv: None)
        dt = time.monotonic() - t0
        eq(r.status, 200, "status of the big download")
        eq(r.body_len, BIG, "bytes the client received")
        eq(r.sha256, want, "sha256 of what the client received")
        growth = rss.max - idle
        print("    download %d MiB in %.1fs; RSS idle %d KiB, max %d KiB (+%d KiB)"
              % (BIG // MiB, dt, idle, rss.max, growth))
        check(len(rss.samples) >= 2, "too few RSS samples: %r" % rss.samples)
        check(growth < RSS_BUDGET_KB, "RSS grew by %d KiB while streaming %d MiB down (budget "
              "%d KiB)" % (growth, BIG // MiB, RSS_BUDGET_KB))


def test_response_is_forwarded_as_it_arrives():
    up = Upstream("trickle")
    with Proxy(stream_config(up), env=sanitizer_env()) as p, Client(p.addr()) as c:
        for framing in ("length", "chunked"):
            stamps = []
            t0 = time.monotonic()
            r = c.request("GET", "/trickle", [("x-behave", json.dumps(
                {"body_bytes": 10000, "chunk": 1000, "chunk_delay": 0.2, "framing": framing}))],
                sink=lambda mv: stamps.append(time.monotonic() - t0))
            eq(r.body_len, 10000, "%s body length" % framing)
            check(stamps and stamps[0] < 1.0, "%s: first body byte after %.2fs; the upstream "
                  "sent it at once and the rest over 2 s (buffered?)"
                  % (framing, stamps[0] if stamps else -1))
            check(stamps[-1] >= 1.5, "%s: body complete after %.2fs" % (framing, stamps[-1]))


def test_request_body_is_forwarded_as_it_arrives():
    up = Upstream("partial")
    with Proxy(stream_config(up), env=sanitizer_env()) as p, Client(p.addr()) as c:
        c.send(b"POST /partial HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" +
               b"p" * 1000)
        check(wait_until(lambda: up.heads >= 1, 3), "the upstream did not see the request "
              "head within 3 s while 99% of its body was still to come (request buffered?)")
        c.send(b"p" * 99000)
        r = c.read_response()
        eq(r.status, 200, "status")
        eq(r.json()["body_len"], 100000, "body length upstream")


def test_pauses_mid_body_are_not_errors():
    # pauses longer than connect_timeout (1s) but well inside the route timeout
    up = Upstream("pauses")
    with Proxy(stream_config(up)) as p, Client(p.addr(), timeout=20) as c:
        c.send(b"POST /slow-client HTTP/1.1\r\nHost: t\r\nContent-Length: 3000\r\n\r\n" +
               b"a" * 1000)
        time.sleep(1.5)
        c.send(b"b" * 1000)
        time.sleep(1.5)
        c.send(b"c" * 1000)
        r = c.read_response()
        eq(r.status, 200, "upload with pauses")
        eq(r.json()["body_len"], 3000, "upload with pauses: body length")
        r = c.request("GET", "/slow-upstream", [("x-behave", json.dumps(
            {"body_bytes": 3000, "chunk": 1000, "chunk_delay": 1.5}))])
        eq((r.status, r.body_len), (200, 3000), "download with pauses")


def test_slow_reader_gets_backpressure():
    total = 256 * MiB
    up = Upstream("source", chunk=64 * KiB)
    with Proxy(stream_config(up), env=sanitizer_env()) as p:
        idle = warm_up(p)
        up.reset_stats()
        resume = threading.Event()
        stalled = threading.Event()
        h = hashlib.sha256()
        got = [0]

        def sink(mv):
            # reads 1 MiB, then stops reading until told to resume
            h.update(mv)
            got[0] += len(mv)
            if got[0] >= 1 * MiB and not resume.is_set():
                stalled.set()
                resume.wait(60)

        out = []
        c = Client(p.addr(), timeout=60, rcvbuf=64 * KiB)
        reader = threading.Thread(target=lambda: out.append(c.request(
            "GET", "/slow-reader", [("x-behave", json.dumps({"body_bytes": total}))],
            sink=sink)), daemon=True)
        try:
            with RssSampler(p.pid) as rss:
                reader.start()
                check(stalled.wait(20), "the first MiB never arrived")
                time.sleep(3)
                sent1 = up.sent_bytes
                time.sleep(2)
                sent2 = up.sent_bytes
            growth = rss.max - idle
            print("    stalled at %d MiB sent of %d; RSS +%d KiB"
                  % (sent2 // MiB, total // MiB, growth))
            check(sent2 - sent1 < 2 * MiB, "upstream kept sending while the client read "
                  "nothing: %d -> %d bytes" % (sent1, sent2))
            check(sent2 < total // 2, "upstream sent %d MiB of %d to a client that stopped "
                  "reading" % (sent2 // MiB, total // MiB))
            check(growth < RSS_BUDGET_KB, "RSS grew by %d KiB behind a stalled client"
                  % growth)
        finally:
            resume.set()
            reader.join(120)
            c.close()
        check(out, "the response did not complete after resuming")
        eq(out[0].status, 200, "status")
        eq(out[0].body_len, total, "body length after resuming")
        eq(h.hexdigest(), pattern_sha(total), "body after resuming")


def test_slow_upstream_reader_gets_backpressure():
    total = 256 * MiB
    up = Upstream("slowsink")
    with Proxy(stream_config(up), env=sanitizer_env()) as p:
        # no warm-up: the upload must work on a fresh upstream connection too
        idle = p.rss_kb()
        c = Client(p.addr(), timeout=60)
        sent = [0]
        h = hashlib.sha256()

        def upload():
            try:
                return upload_()
            except OSError as e:
                return e

        def upload_():
            c.send(b"POST /slow-upstream HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                   b"x-behave: {\"body_delay\": 6}\r\n\r\n" % total)
            for piece in pattern(total, 256 * KiB):
                h.update(piece)
                c.sock.sendall(piece)
                sent[0] += len(piece)
            return c.read_response()

        out = []
        t = threading.Thread(target=lambda: out.append(upload()), daemon=True)
        try:
            with RssSampler(p.pid) as rss:
                t.start()
                check(wait_until(lambda: "/slow-upstream" in up.head_paths, 10),
                      "upload never reached the upstream")
                time.sleep(2.5)
                sent1 = sent[0]
                time.sleep(1.5)
                sent2 = sent[0]
            growth = rss.max - idle
            print("    client blocked at %d MiB of %d; RSS +%d KiB"
                  % (sent2 // MiB, total // MiB, growth))
            check(sent2 - sent1 < 2 * MiB, "client kept sending while the upstream read nothing:"
                  " %d -> %d bytes" % (sent1, sent2))
            check(sent2 < total // 2, "client sent %d MiB of %d to an upstream that reads "
                  "nothing" % (sent2 // MiB, total // MiB))
            check(growth < RSS_BUDGET_KB, "RSS grew by %d KiB in front of a stalled upstream"
                  % growth)
            t.join(120)
        finally:
            c.close()
        check(out, "the upload did not complete once the upstream read again")
        if isinstance(out[0], BaseException):
            raise TestFailure("upload to an upstream that starts reading after 6 s: %r; "
                              "access log: %r" % (out[0], p.access_log()))
        eq(out[0].status, 200, "status")
        e = out[0].json()
        eq((e["body_len"], e["body_sha256"]), (total, h.hexdigest()), "body at the upstream")


if __name__ == "__main__":
    main(globals())
