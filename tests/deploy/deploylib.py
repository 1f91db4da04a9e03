"""Shared helpers of the deploy tests (tests/deploy/test_*.py), standard library plus
Debian's python3-yaml only.

- ROOT, STRANGLER: the repository and the binary under test ($STRANGLER_BIN).
- check(path, env): `strangler --check -c path` with exactly that environment.
- clean_env(**extra): this process's environment without the ${NAME}s the configs use.
- Upstream(name): a threaded HTTP/1.1 server on 127.0.0.1:0 that answers JSON naming
  itself and records every request (method, path, Host, headers).
- Strangler(config, env): a running proxy (--ready-file, port 0), stopped with SIGTERM.
- get(addr, path, headers, tls): one request, returns (status, headers, JSON or text).
- main(globals()): runs every test_* function, prints PASS/FAIL lines and
  "N passed, M failed", exits 1 on any failure.
"""

import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STRANGLER = Path(os.environ.get("STRANGLER_BIN") or ROOT / "build" / "strangler")

# Variables the shipped configurations read; removed from the environment of --check so
# that their defaults are what is checked.
CONFIG_VARS = (
    "LISTEN_ADDR", "ADMIN_ADDR", "TLS_LISTEN_ADDR", "TLS_CERT", "TLS_KEY", "WORKERS",
    "MONOLITH_ADDR", "BAR_ADDR", "DRAIN_TIMEOUT", "STRANGLER_CONFIG",
)

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    env.update(extra)
    return env


def expand(text, env):
    """${NAME} / ${NAME:-default} as strangler expands them (enough for addresses)."""
    def sub(m):
        value = env.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        if value is not None:
            return value
        raise KeyError(m.group(1))
    return ENV_REF.sub(sub, text)


def check(path, env=None):
    """Runs strangler --check; returns (exit code, stdout + stderr)."""
    p = subprocess.run([str(STRANGLER), "--check", "-c", str(path)], env=env or clean_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    return p.returncode, p.stdout


def _die_with_parent():
    # PR_SET_PDEATHSIG: a proxy never outlives a runner killed by ctest's timeout.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Upstream:
    """HTTP/1.1 server on 127.0.0.1:0; answers {"service", "method", "path", "host", "xfp"}."""

    def __init__(self, name):
        self.name = name
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                record = {
                    "service": outer.name,
                    "method": self.command,
                    "path": self.path,
                    "host": self.headers.get("Host"),
                    "xfp": self.headers.get("X-Forwarded-Proto"),
                    "xff": self.headers.get("X-Forwarded-For"),
                    "x-user-id": self.headers.get("x-user-id"),
                    "x-request-id": self.headers.get("x-request-id"),
                }
                with outer.lock:
                    outer.requests.append(record)
                data = json.dumps(record).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.addr = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def taken(self):
        with self.lock:
            out, self.requests = self.requests, []
        return out

    def wait_for(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return True
            time.sleep(0.02)
        return False


class Strangler:
    """`strangler --ready-file DIR/ready -c CONFIG` with ENV; addresses from the ready file."""

    def __init__(self, config, env, workdir=None):
        self.config = str(config)
        self.env = env
        self.own_dir = workdir is None  # a temp dir of ours: removed after a clean stop
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="strangler-deploy-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.addrs = {}

    def __enter__(self):
        ready = self.dir / "ready"
        if ready.exists():
            ready.unlink()
        self.stdout = open(self.dir / "stdout", "wb")
        self.stderr = open(self.dir / "stderr", "wb")
        self.proc = subprocess.Popen(
            [str(STRANGLER), "--ready-file", str(ready), "-c", self.config],
            env=self.env, stdout=self.stdout, stderr=self.stderr, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("strangler exited with %d at start:\n%s"
                                     % (self.proc.returncode, self.stderr_text()))
            if ready.exists():
                lines = ready.read_text().splitlines()
                addrs = dict(l.split("=", 1) for l in lines if "=" in l)
                if "admin" in addrs:
                    self.addrs = addrs
                    return self
            time.sleep(0.02)
        self.stop()
        raise AssertionError("strangler not ready after 10 s:\n" + self.stderr_text())

    def __exit__(self, exc_type, *rest):
        code = self.stop()
        if exc_type is None:
            assert code == 0, "strangler exited with %s:\n%s" % (code, self.stderr_text())
            assert "Sanitizer" not in self.stderr_text(), self.stderr_text()
            if self.own_dir:  # kept after a failure, for its stdout/stderr
                shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stdout.close()
        self.stderr.close()
        return self.proc.returncode

    def addr(self, name):
        a = self.addrs[name]
        return a.replace("0.0.0.0:", "127.0.0.1:")

    @property
    def admin(self):
        return self.addr("admin")

    def stderr_text(self):
        try:
            return (self.dir / "stderr").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def metric(self, name):
        """The value of an unlabelled metric, or a dict {labels: value} for labelled ones."""
        _, _, text = get(self.admin, "/metrics")
        values = {}
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
            if line.startswith(name + "{"):
                labels, value = line[len(name):].rsplit(" ", 1)
                values[labels] = float(value)
        return values

    def generation(self):
        return int(self.metric("strangler_config_generation"))

    def wait_generation(self, want, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.generation() >= want:
                return
            time.sleep(0.05)
        raise AssertionError("configuration generation %d not reached (still %d):\n%s"
                             % (want, self.generation(), self.stderr_text()))

    def config_json(self):
        status, _, body = get(self.admin, "/config")
        assert status == 200, status
        return body


def get(addr, path, headers=None, method="GET", tls=None, timeout=5.0):
    """One request on a new connection: (status, headers, body as JSON when it is JSON)."""
    host, port = addr.rsplit(":", 1)
    if tls is not None:
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if "json" in hdrs.get("content-type", ""):
            return resp.status, hdrs, json.loads(data)
        return resp.status, hdrs, data.decode(errors="replace")
    finally:
        conn.close()


def insecure_tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def main(namespace):
    if not STRANGLER.exists():
        print("FAIL setup: %s not found (set STRANGLER_BIN)" % STRANGLER)
        print("0 passed, 1 failed")
        sys.exit(1)
    only = set(sys.argv[1:])
    tests = [(n, f) for n, f in namespace.items()
             if n.startswith("test_") and callable(f) and (not only or n in only)]
    passed = failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every failure, run every test
            failed += 1
            print("FAIL %s (%.1fs)" % (name, time.monotonic() - t0))
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print("PASS %s (%.1fs)" % (name, time.monotonic() - t0))
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not passed else 0)
