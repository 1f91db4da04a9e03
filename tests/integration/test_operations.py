"""Operating strangler: graceful drain on SIGTERM (in-flight requests finish with their full body
and `Connection: close`, /ready turns 503 at once, listeners stop accepting, idle keep-alive
connections close, exit 0, `shutdown.drain_timeout` bounds it), the admin endpoints, and every
contract metric present in /metrics and moving with traffic and reloads."""

import json
import os
import re
import signal
import socket
import struct
import threading
import time

from harness import (Client, ConnectionClosed, Incomplete, Proxy, ProtocolError, Upstream,
                     check, closed_port, config, eq, main, metric_value, pattern_sha, request,
                     run_cli, wait_until, write_file)


def simple_cfg(up, drain="10s", extra=None):
    ex = {"shutdown": {"drain_timeout": drain}}
    ex.update(extra or {})
    return config({"mono": up}, [{"name": "default", "destinations": [{"upstream": "mono"}]}],
                  extra=ex)


def refused(addr):
    try:
        socket.create_connection(addr, timeout=1).close()
        return False
    except OSError:
        return True


def admin_status(p, path):
    try:
        return request(p.admin, "GET", path, timeout=2).status
    except (OSError, ConnectionClosed, Incomplete) as e:
        return "error: %r" % e


class Bg:
    """Runs fn() in a thread; .result / .error / .done_at (monotonic) afterwards."""

    def __init__(self, fn):
        self.fn = fn
        self.result = self.error = self.done_at = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa
            self.error = e
        self.done_at = time.monotonic()

    def join(self, timeout):
        self.t.join(timeout)
        return not self.t.is_alive()


# ---------------------------------------------------------------------------------------------
# SIGTERM
# ---------------------------------------------------------------------------------------------

def test_sigterm_slow_request_completes_then_exit_0():
    up = Upstream("mono")
    total = 300000
    with Proxy(simple_cfg(up, "10s")) as p:
        eq(admin_status(p, "/ready"), 200, "/ready while serving")
        eq(admin_status(p, "/live"), 200, "/live while serving")
        c = Client(p.addr(), timeout=15)
        eq(c.request("GET", "/warm").status, 200, "warm-up on the keep-alive connection")
        # head after 1 s, then 300 kB in 10 pieces 100 ms apart: ~2 s in all
        behave = {"delay": 1.0, "body_bytes": total, "chunk": 30000, "chunk_delay": 0.1}

        def slow():
            return c.request("GET", "/slow", [("x-behave", json.dumps(behave))], hash_body=True)

        bg = Bg(slow)
        check(wait_until(lambda: up.heads >= 2, 5), "slow request never reached the upstream")
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        check(wait_until(lambda: admin_status(p, "/ready") == 503, 0.5, 0.01),
              "/ready is %r 0.5 s after SIGTERM (want 503 at once)" % admin_status(p, "/ready"))
        eq(admin_status(p, "/live"), 200, "/live while draining")
        check(wait_until(lambda: refused(p.addr()), 2), "listener still accepts after SIGTERM")
        check(bg.join(15), "slow request did not finish")
        check(bg.error is None, "slow request failed during drain: %r" % (bg.error,))
        r = bg.result
        eq(r.status, 200, "slow request status")
        eq(r.body_len, total, "slow request body length")
        eq(r.sha256, pattern_sha(total), "slow request body")
        check("close" in (r.header("connection") or "").lower(),
              "last response on a busy keep-alive connection during drain has no "
              "Connection: close (headers %r)" % r.headers)
        check(c.wait_closed(3), "connection left open after its Connection: close response")
        c.close()
        p.proc.wait(10)
        dt = time.monotonic() - t0
        check(bg.done_at - t0 >= 1.0, "slow request finished %.2fs after SIGTERM"
              % (bg.done_at - t0))
        check(dt < bg.done_at - t0 + 2.5, "exited %.2fs after SIGTERM, %.2fs after the last "
              "request finished" % (dt, dt - (bg.done_at - t0)))
    eq(p.returncode, 0, "exit status after the drain")


def test_sigterm_idle_keepalive_connections_closed_at_once():
    up = Upstream("mono")
    with Proxy(simple_cfg(up, "10s")) as p:
        idle = [Client(p.addr()) for _ in range(4)]
        for c in idle:
            eq(c.request("GET", "/idle").status, 200, "request on an idle-to-be connection")
        busy = Client(p.addr(), timeout=15)
        bg = Bg(lambda: busy.request("GET", "/busy", [("x-behave", json.dumps({"delay": 3.0}))]))
        check(wait_until(lambda: up.heads >= 5, 5), "busy request never reached the upstream")
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        for i, c in enumerate(idle):
            check(c.wait_closed(max(0.1, t0 + 1.5 - time.monotonic())),
                  "idle keep-alive connection %d still open %.1fs after SIGTERM (a request is "
                  "in flight on another connection)" % (i, time.monotonic() - t0))
            c.close()
        check(bg.done_at is None, "the busy request finished before the idle connections closed")
        check(bg.join(10), "busy request did not finish")
        check(bg.error is None, "busy request failed: %r" % (bg.error,))
        eq(bg.result.status, 200, "busy request status")
        check("close" in (bg.result.header("connection") or "").lower(),
              "busy request's response without Connection: close")
        busy.close()
        p.proc.wait(10)
    eq(p.returncode, 0, "exit status")


def test_sigterm_with_nothing_in_flight_exits_promptly():
    up = Upstream("mono")
    with Proxy(simple_cfg(up, "30s")) as p:
        c = Client(p.addr())
        eq(c.request("GET", "/x").status, 200, "request")
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        p.proc.wait(10)
        dt = time.monotonic() - t0
        check(dt < 2.0, "exited %.2fs after SIGTERM with only an idle connection open "
              "(drain_timeout 30s)" % dt)
        c.close()
    eq(p.returncode, 0, "exit status")


def test_drain_timeout_bounds_the_exit():
    up = Upstream("mono")
    with Proxy(simple_cfg(up, "1s")) as p:
        c = Client(p.addr(), timeout=20)
        bg = Bg(lambda: c.request("GET", "/forever", [("x-behave", json.dumps({"delay": 30}))]))
        check(wait_until(lambda: up.heads >= 1, 5), "request never reached the upstream")
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        check(wait_until(lambda: admin_status(p, "/ready") == 503, 0.5, 0.01),
              "/ready not 503 during drain")
        p.proc.wait(10)
        dt = time.monotonic() - t0
        check(0.8 <= dt <= 3.5, "exited %.2fs after SIGTERM with drain_timeout 1s and a 30 s "
              "request in flight" % dt)
        check(bg.join(5), "the client of the cut request was left hanging after the exit")
        if bg.error is None:
            check(bg.result.status != 200, "request slower than drain_timeout answered 200")
        else:
            check(isinstance(bg.error, (OSError, ConnectionClosed, Incomplete, ProtocolError)),
                  "cut request: %r" % (bg.error,))
        c.close()
    eq(p.returncode, 0, "exit status after drain_timeout")


def test_drain_timeout_0_exits_without_waiting():
    up = Upstream("mono")
    with Proxy(simple_cfg(up, "0s")) as p:
        c = Client(p.addr(), timeout=20)
        bg = Bg(lambda: c.request("GET", "/forever", [("x-behave", json.dumps({"delay": 30}))]))
        check(wait_until(lambda: up.heads >= 1, 5), "request never reached the upstream")
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        p.proc.wait(10)
        dt = time.monotonic() - t0
        check(dt < 1.5, "exited %.2fs after SIGTERM with drain_timeout 0" % dt)
        bg.join(5)
        c.close()
    eq(p.returncode, 0, "exit status")


def test_sigterm_many_connections_mixed():
    """8 clients hammering keep-alive requests when SIGTERM arrives: every response they got is
    a complete 200; each connection ends after a response carrying Connection: close or is
    closed while idle; nothing is cut mid-response; exit 0."""
    up = Upstream("mono")
    with Proxy(simple_cfg(up, "10s")) as p:
        stop = threading.Event()
        results = []
        lock = threading.Lock()

        def run(i):
            c = Client(p.addr(), timeout=10)
            n = 0
            outcome = None
            while not stop.is_set():
                try:
                    r = c.request("GET", "/m/%d/%d" % (i, n),
                                  [("x-behave", json.dumps({"delay": 0.02}))])
                except (ConnectionClosed, ConnectionResetError, BrokenPipeError) as e:
                    # closed between responses (idle at SIGTERM): fine, nothing was lost
                    # ... unless the request had been sent and reached the upstream
                    outcome = ("closed-between", repr(e), "/m/%d/%d" % (i, n))
                    break
                except Exception as e:  # noqa
                    outcome = ("error", repr(e), "/m/%d/%d" % (i, n))
                    break
                if r.status != 200 or r.json()["path"] != "/m/%d/%d" % (i, n):
                    outcome = ("bad", r.status, r.body[:100])
                    break
                n += 1
                if not r.keep_alive:
                    outcome = ("connection-close", n)
                    break
            c.close()
            with lock:
                results.append((i, n, outcome))

        ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(8)]
        for t in ts:
            t.start()
        time.sleep(0.5)
        os.kill(p.pid, signal.SIGTERM)
        for t in ts:
            t.join(15)
        stop.set()
        p.proc.wait(10)
        eq(len(results), 8, "client threads finished")
        paths_seen = set(up.head_paths)
        for i, n, outcome in results:
            check(n > 0, "client %d got no response at all" % i)
            check(outcome is not None and outcome[0] in ("connection-close", "closed-between"),
                  "client %d: %r" % (i, outcome))
            if outcome[0] == "closed-between":
                # a request that reached the upstream must have been answered
                check(outcome[2] not in paths_seen,
                      "client %d: %s reached the upstream but the client got no response (%s)"
                      % (i, outcome[2], outcome[1]))
    eq(p.returncode, 0, "exit status")


def test_sigterm_upload_in_progress_completes():
    up = Upstream("mono")
    total = 500000
    with Proxy(simple_cfg(up, "10s")) as p:
        c = Client(p.addr(), timeout=15)
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
        c.send(b"u" * (total // 5))
        check(wait_until(lambda: up.heads >= 1, 5), "upload head never reached the upstream")
        os.kill(p.pid, signal.SIGTERM)
        for _ in range(4):
            time.sleep(0.2)
            c.send(b"u" * (total // 5))
        r = c.read_response()
        eq(r.status, 200, "upload finishing during drain")
        eq(r.json()["body_len"], total, "upload body length at the upstream")
        check("close" in (r.header("connection") or "").lower(), "no Connection: close")
        c.close()
        p.proc.wait(10)
    eq(p.returncode, 0, "exit status")


def test_reload_requests_during_drain_do_not_undo_it():
    up = Upstream("mono")
    with Proxy(simple_cfg(up, "10s")) as p:
        c = Client(p.addr(), timeout=15)
        bg = Bg(lambda: c.request("GET", "/slow", [("x-behave", json.dumps({"delay": 1.5}))]))
        check(wait_until(lambda: up.heads >= 1, 5), "slow request never reached the upstream")
        os.kill(p.pid, signal.SIGTERM)
        check(wait_until(lambda: admin_status(p, "/ready") == 503, 0.5, 0.01), "/ready not 503")
        os.kill(p.pid, signal.SIGHUP)
        try:
            request(p.admin, "POST", "/reload", timeout=3)
        except (OSError, ConnectionClosed, Incomplete):
            pass
        time.sleep(0.3)
        eq(admin_status(p, "/ready"), 503, "/ready after SIGHUP and POST /reload during drain")
        check(refused(p.addr()), "listener accepts again after a reload during drain")
        check(bg.join(10) and bg.error is None, "slow request: %r" % (bg.error,))
        eq(bg.result.status, 200, "slow request status")
        p.proc.wait(10)
        c.close()
    eq(p.returncode, 0, "exit status")


def test_sigint_drains_and_exits_0():
    up = Upstream("mono")
    with Proxy(simple_cfg(up, "5s")) as p:
        c = Client(p.addr(), timeout=15)
        bg = Bg(lambda: c.request("GET", "/slow", [("x-behave", json.dumps({"delay": 0.5}))]))
        check(wait_until(lambda: up.heads >= 1, 5), "slow request never reached the upstream")
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        p.proc.wait(10)
        dt = time.monotonic() - t0
        check(dt < 5.5, "exited %.2fs after SIGINT (drain_timeout 5s)" % dt)
        bg.join(5)
        c.close()
        p.returncode = p.proc.returncode
    eq(p.returncode, 0, "exit status after SIGINT")


# --- HTTP/2 (prior knowledge) by hand: enough framing to see GOAWAY and a stream complete ---

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    def s(x):
        x = x.encode()
        check(len(x) < 127, "hpack string too long for this encoder")
        return bytes([len(x)]) + x
    return b"\x00" + s(name) + s(value)


class H2Conn:
    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=10)
        self.buf = b""
        self.frames = []     # (time, type, flags, stream, payload)
        self.eof_at = None
        self.sock.sendall(H2_PREFACE + h2_frame(4, 0, 0))

    def get(self, stream, path, headers=()):
        block = b"".join(hpack_literal(k, v) for k, v in
                         [(":method", "GET"), (":scheme", "http"), (":path", path),
                          (":authority", "t")] + list(headers))
        self.sock.sendall(h2_frame(1, 0x5, stream, block))

    def pump(self, until, timeout):
        """Reads frames until until(self) or EOF or timeout; ACKs SETTINGS."""
        deadline = time.monotonic() + timeout
        while not until(self) and self.eof_at is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self.eof_at = time.monotonic()
                break
            self.buf += data
            while len(self.buf) >= 9:
                n = struct.unpack(">I", b"\x00" + self.buf[:3])[0]
                if len(self.buf) < 9 + n:
                    break
                ft, fl = self.buf[3], self.buf[4]
                sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7fffffff
                payload = self.buf[9:9 + n]
                self.buf = self.buf[9 + n:]
                self.frames.append((time.monotonic(), ft, fl, sid, payload))
                if ft == 4 and not fl & 1:
                    try:
                        self.sock.sendall(h2_frame(4, 1, 0))
                    except OSError:
                        pass
        return until(self)

    def goaways(self):
        return [(t, struct.unpack(">I", pl[:4])[0] & 0x7fffffff, struct.unpack(">I", pl[4:8])[0])
                for t, ft, fl, sid, pl in self.frames if ft == 7]

    def stream_done(self, sid):
        return [t for t, ft, fl, s, pl in self.frames if s == sid and ft in (0, 1) and fl & 1]

    def stream_reset(self, sid):
        return [t for t, ft, fl, s, pl in self.frames if s == sid and ft == 3]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def test_sigterm_h2_goaway_and_stream_completes():
    up = Upstream("mono")
    with Proxy(simple_cfg(up, "10s")) as p:
        idle = H2Conn(p.addr())
        busy = H2Conn(p.addr())
        for c in (idle, busy):
            check(c.pump(lambda c: any(f[1] == 4 for f in c.frames), 3),
                  "no SETTINGS from the server on a prior-knowledge HTTP/2 connection")
        busy.get(1, "/h2slow", [("x-behave", json.dumps({"delay": 1.5}))])
        check(wait_until(lambda: up.heads >= 1, 5), "h2 request never reached the upstream")
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        check(idle.pump(lambda c: c.goaways(), 1.5),
              "idle HTTP/2 connection got no GOAWAY within 1.5s of SIGTERM (frames %r)"
              % [(f[1], f[2], f[3]) for f in idle.frames])
        idle.pump(lambda c: False, 2)
        check(idle.eof_at is not None, "idle HTTP/2 connection not closed after its GOAWAY")
        check(busy.pump(lambda c: c.goaways(), 1.0),
              "busy HTTP/2 connection got no GOAWAY within 1s of SIGTERM")
        check(busy.goaways()[0][0] - t0 < 1.2 and not busy.stream_done(1),
              "GOAWAY only came with the end of the in-flight stream")
        check(busy.pump(lambda c: c.stream_done(1) or c.stream_reset(1), 10),
              "in-flight HTTP/2 stream did not finish during the drain")
        eq(busy.stream_reset(1), [], "in-flight HTTP/2 stream reset during drain")
        heads = [pl for t, ft, fl, s, pl in busy.frames if s == 1 and ft == 1]
        check(heads and heads[0][:1] == b"\x88", "response to the h2 stream is not :status 200 "
              "(first header byte %r)" % (heads[0][:1] if heads else None))
        last_ids = [g[1] for g in busy.goaways()]
        check(last_ids[-1] >= 1, "final GOAWAY last-stream-id %r refuses the in-flight stream"
              % last_ids)
        eq([g[2] for g in busy.goaways()], [0] * len(last_ids), "GOAWAY error codes (NO_ERROR)")
        busy.pump(lambda c: False, 3)
        check(busy.eof_at is not None, "busy HTTP/2 connection not closed after its last stream")
        idle.close()
        busy.close()
        p.proc.wait(10)
    eq(p.returncode, 0, "exit status")


def test_sigterm_idle_h2_connection_does_not_hold_the_drain():
    """An idle HTTP/2 client (gRPC channels stay connected) gets GOAWAY and is closed: with
    nothing in flight the process exits promptly, not at drain_timeout."""
    up = Upstream("mono")
    with Proxy(simple_cfg(up, "10s")) as p:
        c = H2Conn(p.addr())
        check(c.pump(lambda c: any(f[1] == 4 for f in c.frames), 3), "no SETTINGS")
        c.get(1, "/h2")
        check(c.pump(lambda c: c.stream_done(1), 5), "h2 request did not complete")
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        p.proc.wait(15)
        dt = time.monotonic() - t0
        c.pump(lambda c: False, 0.5)
        c.close()
        check(dt < 3.0, "exited %.2fs after SIGTERM with one idle HTTP/2 connection "
              "(drain_timeout 10s; GOAWAY %r)" % (dt, c.goaways()))
    eq(p.returncode, 0, "exit status")


# ---------------------------------------------------------------------------------------------
# Admin endpoints
# ---------------------------------------------------------------------------------------------

def test_admin_endpoints():
    up = Upstream("mono")
    with Proxy(simple_cfg(up)) as p:
        for path, want in (("/ready", 200), ("/live", 200), ("/metrics", 200), ("/config", 200),
                           ("/nope", 404)):
            eq(admin_status(p, path), want, "GET %s" % path)
        r = request(p.admin, "GET", "/metrics")
        ct = r.header("content-type") or ""
        check(ct.startswith("text/plain") and "0.0.4" in ct,
              "/metrics content-type %r (want text/plain; version=0.0.4)" % ct)
        r = request(p.admin, "GET", "/config")
        check(isinstance(r.json(), dict), "/config is not a JSON object")
        r = request(p.admin, "POST", "/reload")
        eq(r.status, 200, "POST /reload of the unchanged file")
        eq(r.json().get("result"), "success", "POST /reload result")


def kernel_allows_io_uring():
    """This test's own answer to 'may a process set up an io_uring here?': io_uring_setup(2)
    with the flags strangler asks for first (SUBMIT_ALL, COOP_TASKRUN, SINGLE_ISSUER), then
    with none, as strangler does when the kernel refuses the hints."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    for flags in ((1 << 7) | (1 << 8) | (1 << 12), 0):
        ctypes.memset(params, 0, 120)
        struct.pack_into("<I", params, 8, flags)
        fd = libc.syscall(425, 64, params)  # __NR_io_uring_setup on x86_64 and arm64
        if fd >= 0:
            os.close(fd)
            return True
        if ctypes.get_errno() != 22:  # EINVAL: try without the hints
            return False
    return False


def test_socket_io_mode_in_the_startup_line():
    """`io_uring: auto` (the default) batches socket I/O through io_uring exactly where the
    kernel allows it, says which in the start-up line and shows the setting in /config; where
    a seccomp filter refuses io_uring_setup (sg_no_io_uring, as Docker's and containerd's
    default profiles do) it says so and makes plain system calls, as with `io_uring: off`.
    Requests go through every way, and a reload that changes the setting says it waits for a
    restart."""
    up = Upstream("mono")
    allowed = kernel_allows_io_uring()
    for setting, blocked, want in (
            ("auto", False, "socket I/O: io_uring" if allowed else
             "socket I/O: plain system calls (io_uring unavailable: "),
            ("auto", True, "socket I/O: plain system calls (io_uring unavailable: "
             "Operation not permitted)"),
            ("off", False, "socket I/O: plain system calls (io_uring: off)")):
        with Proxy(simple_cfg(up, extra={"io_uring": setting}), io_uring_blocked=blocked) as p:
            check(wait_until(lambda: "running with" in p.stderr(), 5), "no start-up line")
            line = [ln for ln in p.stderr().splitlines() if "running with" in ln][0]
            check(want in line, "io_uring: %s%s: start-up line %r (want %r; this kernel %s io_uring)"
                  % (setting, " under seccomp" if blocked else "", line, want,
                     "allows" if allowed else "refuses"))
            eq(request(p.admin, "GET", "/config").json().get("io_uring"), setting, "/config io_uring")
            for i in range(20):  # both workers, fresh and kept-alive connections
                eq(request(p.addr(), "GET", "/r%d" % i, body=b"x" * (i * 1000)).status, 200,
                   "io_uring: %s: request %d" % (setting, i))
            other = "off" if setting == "auto" else "auto"
            with open(p.config_path, "w") as f:
                f.write(simple_cfg(up, extra={"io_uring": other}))
            eq(request(p.admin, "POST", "/reload").json().get("result"), "success", "reload")
            check(wait_until(lambda: "io_uring changed (%s -> %s); takes effect at the next restart"
                             % (setting, other) in p.stderr(), 5),
                  "reload %s -> %s: no restart warning in %r" % (setting, other, p.stderr()[-600:]))
    text = simple_cfg(up, extra={"io_uring": "on"})
    path = write_file(text)
    r = run_cli(["--check", "-c", path])
    eq(r.returncode, 1, "--check with io_uring: on")
    line = [i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("io_uring:")][0]
    check('%s:%d:11: invalid io_uring "on" (expected auto' % (path, line) in r.stderr,
          "error at the value: %r" % r.stderr)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

FAMILIES = {
    "strangler_requests_total": "counter",
    "strangler_request_duration_seconds": "histogram",
    "strangler_upstream_connect_failures_total": "counter",
    "strangler_upstream_connections": "gauge",
    "strangler_mirror_requests_total": "counter",
    "strangler_mirror_responses_total": "counter",
    "strangler_downstream_connections": "gauge",
    "strangler_config_reloads_total": "counter",
    "strangler_config_generation": "gauge",
}


def samples(text, name):
    """[(labels dict, value)] of the samples named exactly `name`."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.append((lab, float(m.group(4))))
    return out


def mv(text, name, **labels):
    v = metric_value(text, name, **labels)
    return 0 if v is None else v


def wait_metric(p, name, want, timeout=5, **labels):
    got = [None]

    def ok():
        got[0] = mv(p.metrics(), name, **labels)
        return got[0] >= want
    wait_until(ok, timeout)
    return got[0]


def metrics_cfg(a, b, shadow, dead_port):
    routes = [
        {"name": "bar", "match": {"path_prefix": "/bar"},
         "destinations": [{"upstream": "A", "weight": 50}, {"upstream": "B", "weight": 50}],
         "mirror": [{"upstream": "shadow", "percent": 100, "max_body_bytes": "1KiB"}]},
        {"name": "dead", "match": {"path_prefix": "/dead"},
         "destinations": [{"upstream": "dead"}]},
        {"name": "default", "destinations": [{"upstream": "A"}]},
    ]
    return config({"A": a, "B": b, "shadow": shadow, "dead": ["127.0.0.1:%d" % dead_port]},
                  routes)


def test_every_contract_metric_present_and_moving():
    a, b, shadow = Upstream("A"), Upstream("B"), Upstream("shadow")
    dead = closed_port()
    with Proxy(metrics_cfg(a, b, shadow, dead)) as p:
        m0 = p.metrics()
        eq(mv(m0, "strangler_config_generation"), 1, "generation at start")
        # traffic: 40 GETs on 4 keep-alive connections (both workers), 2 POSTs with bodies
        # too big to mirror, 2 requests to a refused upstream
        conns = [Client(p.addr()) for _ in range(4)]
        for i in range(40):
            r = conns[i % 4].request("GET", "/bar/%d" % i)
            eq(r.status, 200, "GET /bar/%d" % i)
        for i in range(2):
            r = conns[i].request("POST", "/bar/post", body=b"x" * 4096)
            eq(r.status, 200, "POST with a 4 KiB body")
        for i in range(2):
            eq(request(p.addr(), "GET", "/dead/%d" % i).status, 502, "GET /dead")
        wait_metric(p, "strangler_mirror_responses_total", 40, route="bar", upstream="shadow")
        time.sleep(0.2)
        m = p.metrics()
        for fam, typ in FAMILIES.items():
            check(re.search(r"^# TYPE %s %s$" % (fam, typ), m, re.M),
                  "no '# TYPE %s %s' line in /metrics" % (fam, typ))
            want = fam + "_bucket" if typ == "histogram" else fam
            check(samples(m, want), "no %s sample in /metrics after traffic" % want)
        # requests_total {route, upstream, code}
        nA = mv(m, "strangler_requests_total", route="bar", upstream="A", code="200")
        nB = mv(m, "strangler_requests_total", route="bar", upstream="B", code="200")
        eq(nA + nB, 42, "requests_total{route=bar,code=200} over A and B")
        check(nA > 0 and nB > 0, "50/50 split: A %d, B %d" % (nA, nB))
        eq(mv(m, "strangler_requests_total", route="dead", upstream="dead", code="502"), 2,
           "requests_total{route=dead,upstream=dead,code=502}")
        # histogram
        for upn, n in (("A", nA), ("B", nB)):
            bs = [(lab["le"], v) for lab, v in samples(m, "strangler_request_duration_seconds_bucket")
                  if lab.get("route") == "bar" and lab.get("upstream") == upn]
            check(len(bs) >= 8, "only %d buckets for upstream %s" % (len(bs), upn))
            eq(bs[-1][0], "+Inf", "last bucket")
            finite = [float(le) for le, _ in bs[:-1]]
            eq(finite, sorted(finite), "bucket bounds in increasing order")
            check(finite[0] <= 0.005 and finite[-1] >= 5,
                  "buckets %r do not span proxy latencies (<=5 ms .. >=5 s)" % finite)
            vals = [v for _, v in bs]
            eq(vals, sorted(vals), "cumulative bucket counts for %s" % upn)
            eq(vals[-1], n, "+Inf bucket for %s" % upn)
            eq(mv(m, "strangler_request_duration_seconds_count", route="bar", upstream=upn), n,
               "_count for %s" % upn)
            s = metric_value(m, "strangler_request_duration_seconds_sum", route="bar",
                             upstream=upn)
            check(s is not None and 0 < s < n * 1.0, "_sum for %s: %r" % (upn, s))
        # upstream connect failures
        eq(mv(m, "strangler_upstream_connect_failures_total", upstream="dead"), 2,
           "connect failures to the refused upstream")
        eq(mv(m, "strangler_upstream_connect_failures_total", upstream="A"), 0,
           "connect failures to A")
        # mirror
        eq(mv(m, "strangler_mirror_requests_total", route="bar", upstream="shadow",
              outcome="sent"), 40, "mirror sent")
        drops = [lab for lab, v in samples(m, "strangler_mirror_requests_total")
                 if lab.get("outcome") == "dropped" and v > 0]
        check(drops and all(lab.get("reason") for lab in drops),
              "mirror drops without a reason label: %r" % drops)
        eq(sum(v for lab, v in samples(m, "strangler_mirror_requests_total")
               if lab.get("outcome") == "dropped"), 2, "mirror dropped (bodies over 1KiB)")
        eq(mv(m, "strangler_mirror_responses_total", route="bar", upstream="shadow", code="200"),
           40, "mirror responses 200")
        # pooled connections are idle now
        check(mv(m, "strangler_upstream_connections", upstream="A", state="idle") >= 1,
              "no idle pooled connection to A")
        eq(mv(m, "strangler_upstream_connections", upstream="A", state="active"), 0,
           "active connections to A with nothing in flight")
        # downstream connections: 4 open
        d0 = mv(m, "strangler_downstream_connections", listener="public")
        eq(d0, 4, "downstream_connections{listener=public} with 4 keep-alive clients")
        more = [Client(p.addr()) for _ in range(3)]
        for c in more:
            eq(c.request("GET", "/x").status, 200, "request")
        eq(wait_metric(p, "strangler_downstream_connections", 7, listener="public"), 7,
           "downstream connections after 3 more")
        # active gauge during a slow request
        slow = Client(p.addr(), timeout=10)
        slow.send(b"GET /slow HTTP/1.1\r\nHost: t\r\nx-behave: {\"delay\": 1.0}\r\n\r\n")
        check(wait_until(lambda: mv(p.metrics(), "strangler_upstream_connections",
                                    upstream="A", state="active") >= 1, 1),
              "upstream_connections{A,active} never >= 1 during a slow request")
        eq(slow.read_response().status, 200, "slow request")
        check(wait_until(lambda: mv(p.metrics(), "strangler_upstream_connections",
                                    upstream="A", state="active") == 0, 2),
              "upstream_connections{A,active} not back to 0")
        for c in conns + more + [slow]:
            c.close()
        check(wait_until(lambda: mv(p.metrics(), "strangler_downstream_connections",
                                    listener="public") == 0, 3),
              "downstream_connections not back to 0 after the clients closed: %r"
              % mv(p.metrics(), "strangler_downstream_connections", listener="public"))
        # reloads: success moves generation, failure only the failure counter
        m1 = p.metrics()
        ok1 = mv(m1, "strangler_config_reloads_total", result="success")
        bad1 = mv(m1, "strangler_config_reloads_total", result="failure")
        r = request(p.admin, "POST", "/reload")
        eq(r.status, 200, "POST /reload")
        m2 = p.metrics()
        eq(mv(m2, "strangler_config_reloads_total", result="success"), ok1 + 1, "reloads ok")
        eq(mv(m2, "strangler_config_generation"), r.json()["generation"], "generation gauge")
        check(r.json()["generation"] >= 2, "generation after a reload")
        with open(p.config_path, "a") as f:
            f.write("bogus_key: 1\n")
        r = request(p.admin, "POST", "/reload")
        eq(r.status, 400, "POST /reload of an invalid file")
        m3 = p.metrics()
        check(mv(m3, "strangler_config_reloads_total", result="failure") >= bad1 + 1,
              "reloads failure counter did not move")
        eq(mv(m3, "strangler_config_generation"), mv(m2, "strangler_config_generation"),
           "generation moved on a failed reload")
        # counters survive the reload (not reset)
        check(mv(m3, "strangler_requests_total", route="bar", upstream="A", code="200") >= nA,
              "requests_total went down across a reload")


if __name__ == "__main__":
    main(globals())
