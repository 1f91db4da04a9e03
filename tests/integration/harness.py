"""Integration-test harness: the real `strangler` binary against real servers on loopback.

Everything here is stdlib (plus Debian's python3-websockets in test_websocket.py):

- Proxy(config_yaml)   starts $STRANGLER_BIN with --ready-file, waits for every listener and
                       the admin port, captures stdout (access log) and stderr, stops it by PID.
- Upstream(name, ...)  a threaded raw-socket HTTP/1.1 server with scriptable behaviours
                       (echo, status, delay, sized/streamed bodies, close, reset, garbage, ...).
- Client(addr)         a raw-socket HTTP/1.1 client with a strict response parser, for
                       pipelined and deliberately malformed requests.
- config(...)          builds a contract-shaped YAML document from Python values.
- main(globals())      the mini test runner each test_*.py file ends with.

Every process is started through spawn(): it is recorded, stopped by PID after each test and at
exit, and additionally runs under `setpriv --pdeathsig KILL`, so even a runner killed with
SIGKILL leaves no proxy behind.
"""

import atexit
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("STRANGLER_BIN") or os.path.join(REPO, "build", "strangler")
BIG = int(os.environ.get("STRANGLER_TEST_BIG_BYTES", str(1 << 30)))
KEEP = bool(os.environ.get("STRANGLER_TEST_KEEP"))
KiB = 1024
MiB = 1024 * 1024
GiB = 1024 * MiB

# SG_TEST_IO_URING=blocked (scripts/test's first pass) runs every Proxy under sg_no_io_uring
# (no_io_uring.c, built with the tests), where io_uring_setup fails with EPERM as under Docker's
# and containerd's default seccomp profiles: the workers then make plain system calls, so the
# suite covers both ways they do socket I/O without touching any configuration.
IO_URING_BLOCKED = os.environ.get("SG_TEST_IO_URING") == "blocked"
NO_IO_URING_BIN = os.environ.get("SG_NO_IO_URING_BIN") or os.path.join(REPO, "build", "tests",
                                                                        "sg_no_io_uring")


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "AddressSanitizer:DEADLYSIGNAL")


class TestFailure(AssertionError):
    pass


def check(cond, msg="check failed"):
    """assert that survives `python3 -O`."""
    if not cond:
        raise TestFailure(msg)


def eq(got, want, what="value"):
    if got != want:
        raise TestFailure("%s: expected %r, got %r" % (what, want, got))


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

_children = []  # every Popen started by the harness
_SETPRIV = shutil.which("setpriv")


def _wrap(cmd):
    # setpriv execs the command in place: same PID, and the kernel sends SIGKILL to it if this
    # (main) thread dies, whatever the way.
    if _SETPRIV and threading.current_thread() is threading.main_thread():
        return [_SETPRIV, "--pdeathsig", "KILL", "--"] + list(cmd)
    return list(cmd)


def spawn(cmd, **kw):
    p = subprocess.Popen(_wrap(cmd), **kw)
    _children.append(p)
    return p


def stop_pid(p, sig=signal.SIGTERM, wait=10.0):
    """Signal one child by PID, wait, escalate to SIGKILL. Returns (returncode, was_killed)."""
    if p.poll() is not None:
        return p.returncode, False
    try:
        os.kill(p.pid, sig)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=wait)
        return p.returncode, False
    except subprocess.TimeoutExpired:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)
        return p.returncode, True


def reap_all():
    for p in list(_children):
        if p.poll() is None:
            stop_pid(p, signal.SIGKILL, 5)
        _children.remove(p)


atexit.register(reap_all)


def run_cli(args, timeout=20, env=None, cwd=None):
    """Run the binary to completion (--check, --version, ...). Returns CompletedProcess."""
    e = dict(os.environ)
    if env:
        e.update(env)
    p = spawn([BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, cwd=cwd)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_pid(p, signal.SIGKILL)
        out, err = p.communicate()
        raise TestFailure("%s did not finish within %ss; stderr:\n%s"
                          % (" ".join(args), timeout, err.decode(errors="replace")))
    return subprocess.CompletedProcess(args, p.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


_tmpdirs = []


def tmpdir():
    """A temporary directory removed after the current test."""
    d = tempfile.mkdtemp(prefix="strangler-it-")
    _tmpdirs.append(d)
    return d


def write_file(text, name="strangler.yaml"):
    path = os.path.join(tmpdir(), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def sanitizer_env(quarantine_mb=16):
    """Environment for a proxy whose RSS is measured: an ASan build keeps up to 256 MiB of
    freed memory in quarantine by default, which reads as growth. A bounded quarantine still
    catches use-after-free of recent frees. No effect on a build without ASan."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" not in opts:
        opts = (opts + ":" if opts else "") + "quarantine_size_mb=%d" % quarantine_mb
    return {"ASAN_OPTIONS": opts}


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TestFailure("no VmRSS for pid %d" % pid)


class RssSampler:
    """Samples a PID's VmRSS every `interval` seconds in a thread; .max after stop()."""

    def __init__(self, pid, interval=0.05):
        self.pid, self.interval = pid, interval
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append(rss_kb(self.pid))
            except (OSError, TestFailure):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(5)
        try:
            self.samples.append(rss_kb(self.pid))
        except (OSError, TestFailure):
            pass

    @property
    def max(self):
        return max(self.samples) if self.samples else 0


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9_/.@+\-][A-Za-z0-9_/.@+:=\-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(v):
    if isinstance(v, Upstream) or hasattr(v, "addr_str"):
        v = v.addr_str
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if (_PLAIN.match(s) and s.lower() not in _RESERVED and not s.endswith(":")
            and not re.match(r"^[-+]?[0-9][0-9._]*$", s)):
        return s
    return json.dumps(s)


def _is_scalar(v):
    return not isinstance(v, (dict, list, tuple))


def to_yaml(obj, level=0):
    """Block-style YAML for dicts/lists of scalars, the way an operator writes it."""
    sp = "  " * level
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = _scalar(k)
            if _is_scalar(v):
                out.append("%s%s: %s" % (sp, key, _scalar(v)))
            elif not v:
                out.append("%s%s: %s" % (sp, key, "{}" if isinstance(v, dict) else "[]"))
            else:
                out.append("%s%s:" % (sp, key))
                out.append(to_yaml(v, level + 1))
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            if _is_scalar(item):
                out.append("%s- %s" % (sp, _scalar(item)))
            else:
                text = to_yaml(item, level + 1)
                inner = "  " * (level + 1)
                check(text.startswith(inner), "yaml emitter")
                out.append(sp + "- " + text[len(inner):])
    else:
        out.append(sp + _scalar(obj))
    return "\n".join(out)


def config(upstreams, routes, limits=None, listeners=None, extra=None, workers=2):
    """A complete config document. `upstreams`: name -> Upstream | [Upstream|addr, ...] | dict."""
    ups = {}
    for name, u in upstreams.items():
        if isinstance(u, dict):
            d = dict(u)
        elif isinstance(u, (list, tuple)):
            d = {"endpoints": list(u)}
        else:
            d = {"endpoints": [u]}
        d["endpoints"] = [_scalar(e) if not isinstance(e, str) else e for e in d["endpoints"]]
        ups[name] = d
    doc = {
        "workers": workers,
        "listeners": listeners or [{"name": "public", "address": "127.0.0.1:0"}],
        "admin": {"address": "127.0.0.1:0"},
        "upstreams": ups,
        "routes": routes,
        "access_log": {"enabled": True},
        "shutdown": {"drain_timeout": "3s"},
    }
    if limits:
        doc["limits"] = limits
    if extra:
        doc.update(extra)
    return to_yaml(doc) + "\n"


def listener_names(yaml_text):
    """Listener names of a config written in block style (what tests write)."""
    names, inside, indent = [], False, None
    for line in yaml_text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^listeners\s*:", line):
            inside = True
            m = re.findall(r"name\s*:\s*([^,}\s]+)", line)
            names += [n.strip("\"'") for n in m]
            continue
        if inside:
            if not line[0].isspace():
                break
            m = re.match(r"^(\s*)(?:-\s+)?name\s*:\s*(\S+)", line)
            if m and (indent is None or len(m.group(1)) <= indent + 2):
                if indent is None:
                    indent = len(m.group(1))
                names.append(m.group(2).strip("\"'"))
    return names


# ---------------------------------------------------------------------------------------------
# The proxy under test
# ---------------------------------------------------------------------------------------------

_live_proxies = []   # started in the current test (for diagnostics and cleanup)


class Proxy:
    """Context manager running the real binary on a config text (port 0 everywhere)."""

    def __init__(self, config_yaml, env=None, listeners=None, ready_timeout=10.0,
                 check_exit=True, io_uring_blocked=None):
        self.config_text = config_yaml
        # None: as SG_TEST_IO_URING says; True/False: under sg_no_io_uring or not, whatever it says
        self.io_uring_blocked = IO_URING_BLOCKED if io_uring_blocked is None else io_uring_blocked
        self.env = env
        self.listeners = listeners if listeners is not None else listener_names(config_yaml)
        self.ready_timeout = ready_timeout
        self.check_exit = check_exit
        self.proc = None
        self.addrs = {}
        self.returncode = None
        self.killed = False

    # lifecycle -----------------------------------------------------------------------------
    def start(self):
        check(os.access(BIN, os.X_OK), "STRANGLER_BIN %r is not an executable" % BIN)
        self.dir = tempfile.mkdtemp(prefix="strangler-it-")
        self.ready_path = os.path.join(self.dir, "ready")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.config_path = self._write_config()
        env = dict(os.environ)
        env.update(self.env or {})
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        try:
            argv = [BIN, "--ready-file", self.ready_path, "-c", self.config_path]
            if self.io_uring_blocked:
                check(os.access(NO_IO_URING_BIN, os.X_OK),
                      "SG_NO_IO_URING_BIN %r is not an executable" % NO_IO_URING_BIN)
                argv = [NO_IO_URING_BIN] + argv
            self.proc = spawn(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        finally:
            out.close()
            err.close()
        _live_proxies.append(self)
        self._wait_ready()
        return self

    def _write_config(self):
        """Writes the configuration and returns the path strangler is given (subclasses
        may lay it out differently, e.g. as a Kubernetes ConfigMap volume)."""
        path = os.path.join(self.dir, "strangler.yaml")
        with open(path, "w") as f:
            f.write(self.config_text)
        return path

    def _wait_ready(self):
        want = set(self.listeners) | {"admin"}
        deadline = time.monotonic() + self.ready_timeout
        while True:
            got = self._read_ready()
            if want <= set(got):
                self.addrs = got
                return
            if self.proc.poll() is not None:
                raise TestFailure("strangler exited with %s before it was ready; stderr:\n%s"
                                  % (self.proc.returncode, self.stderr()[-4000:]))
            if time.monotonic() > deadline:
                raise TestFailure("ready file %s has %r, want %r after %ss; stderr:\n%s"
                                  % (self.ready_path, got, sorted(want), self.ready_timeout,
                                     self.stderr()[-4000:]))
            time.sleep(0.02)

    def _read_ready(self):
        try:
            with open(self.ready_path) as f:
                text = f.read()
        except OSError:
            return {}
        # A last line without its newline may still be being written: use it only once it
        # has stayed the same for one poll interval.
        lines = text.split("\n")
        if lines[-1] and text != getattr(self, "_last_ready_text", None):
            lines = lines[:-1]
        self._last_ready_text = text
        got = {}
        for line in lines:
            m = re.match(r"^([^=\s]+)=(\[[0-9A-Fa-f:.]+\]|[^:\s]+):([0-9]+)$", line.strip())
            if m and int(m.group(3)) > 0:
                got[m.group(1)] = (m.group(2).strip("[]"), int(m.group(3)))
        return got

    def ready_text(self):
        with open(self.ready_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, wait=10.0):
        if self.proc is None:
            return None
        if self.returncode is None:
            self.returncode, self.killed = stop_pid(self.proc, sig, wait)
        return self.returncode

    def exit_problems(self):
        """Why the exit was not clean, or None."""
        problems = []
        if self.killed:
            problems.append("did not exit within 10s of SIGTERM (SIGKILLed)")
        elif self.returncode != 0:
            problems.append("exit status %r after SIGTERM (want 0)" % self.returncode)
        err = self.stderr()
        for marker in SANITIZER_MARKERS:
            if marker in err:
                problems.append("sanitizer report in stderr (%s)" % marker)
                break
        return "; ".join(problems) or None

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        if not KEEP and getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop(signal.SIGKILL, 5)
            raise

    def __exit__(self, et, ev, tb):
        self.stop()
        if et is None and self.check_exit:
            problem = self.exit_problems()
            if problem:
                raise TestFailure("strangler pid %d: %s; stderr tail:\n%s"
                                  % (self.proc.pid, problem, self.stderr()[-6000:]))
        return False

    # accessors -----------------------------------------------------------------------------
    @property
    def pid(self):
        return self.proc.pid

    def addr(self, name="public"):
        check(name in self.addrs, "no listener %r in ready file (%r)" % (name, self.addrs))
        return self.addrs[name]

    @property
    def admin(self):
        return self.addrs["admin"]

    def stdout(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode(errors="replace")
        except (OSError, AttributeError, TypeError):
            return ""

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except (OSError, AttributeError, TypeError):
            return ""

    def stdout_records(self):
        """(json objects, lines that are not JSON objects)."""
        objs, bad = [], []
        for line in self.stdout().splitlines():
            if not line.strip():
                continue
            try:
                o = json.loads(line)
            except ValueError:
                bad.append(line)
                continue
            (objs if isinstance(o, dict) else bad).append(o)
        return objs, bad

    def access_log(self, count=None, pred=None, timeout=3.0):
        """Access-log records (mirror_diff lines left out). With count: polls until at least
        `count` records satisfying `pred` are there (the proxy batches its writes)."""
        deadline = time.monotonic() + timeout
        while True:
            recs = [o for o in self.stdout_records()[0] if o.get("type") != "mirror_diff"]
            if pred:
                recs = [r for r in recs if pred(r)]
            if count is None or len(recs) >= count or time.monotonic() > deadline:
                return recs
            time.sleep(0.05)

    def rss_kb(self):
        return rss_kb(self.pid)

    def admin_get(self, path):
        return request(self.admin, "GET", path)

    def metrics(self):
        r = self.admin_get("/metrics")
        eq(r.status, 200, "GET /metrics status")
        return r.body.decode()


def metric_value(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(lab.get(k) == str(v) for k, v in labels.items()):
            total += float(m.group(4))
            found = True
    return total if found else None


# ---------------------------------------------------------------------------------------------
# Deterministic payloads
# ---------------------------------------------------------------------------------------------

_BLOCK = 1 << 20
_BASE = random.Random(20240611).randbytes(_BLOCK)
_BASE2 = memoryview(_BASE + _BASE)


def pattern(total, chunk=256 * KiB):
    """Yields memoryviews of a deterministic byte stream of `total` bytes. Block b of 1 MiB is
    the base block rotated by b*4099, so duplicated, dropped or reordered blocks change the hash."""
    off = 0
    while off < total:
        b, inner = divmod(off, _BLOCK)
        rot = (b * 4099) % _BLOCK
        n = min(chunk, total - off, _BLOCK - inner)
        yield _BASE2[rot + inner:rot + inner + n]
        off += n


_sha_cache = {}


def pattern_sha(total):
    if total not in _sha_cache:
        h = hashlib.sha256()
        for piece in pattern(total, _BLOCK):
            h.update(piece)
        _sha_cache[total] = h.hexdigest()
    return _sha_cache[total]


def pattern_bytes(total):
    return b"".join(bytes(p) for p in pattern(total, _BLOCK))


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 wire: buffered reader and parsers shared by client and upstream
# ---------------------------------------------------------------------------------------------

class ConnectionClosed(Exception):
    """EOF (or reset) before the first byte of a message."""


class ProtocolError(Exception):
    pass


class Incomplete(Exception):
    """EOF in the middle of a message; .response holds what was parsed so far."""

    def __init__(self, msg, response=None):
        Exception.__init__(self, msg)
        self.response = response


_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class Reader:
    """Buffered reader over a socket. Consumed bytes are skipped with an offset and compacted
    lazily, so many small chunks out of one big recv() cost no quadratic memmove."""

    def __init__(self, sock, bufsize=256 * KiB):
        self.sock = sock
        self._buf = bytearray()
        self._pos = 0
        self.bufsize = bufsize
        self.eof = False
        self.nread = 0

    @property
    def buf(self):
        """Unconsumed bytes (a copy)."""
        return bytes(self._buf[self._pos:])

    def _avail(self):
        return len(self._buf) - self._pos

    def _consume(self, n):
        data = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        if self._pos == len(self._buf):
            self._buf = bytearray()
            self._pos = 0
        elif self._pos > 1 * MiB:
            del self._buf[:self._pos]
            self._pos = 0
        return data

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(self.bufsize)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.nread += len(data)
        if self._pos == len(self._buf):
            self._buf = bytearray(data)
            self._pos = 0
        else:
            self._buf += data
        return True

    def read_head(self, limit=1 * MiB):
        """Bytes up to and including CRLFCRLF; None on EOF before any byte."""
        start = self._pos
        while True:
            i = self._buf.find(b"\r\n\r\n", max(self._pos, start - 3))
            if i >= 0:
                return self._consume(i + 4 - self._pos)
            start = len(self._buf)
            if self._avail() > limit:
                raise ProtocolError("head larger than %d bytes" % limit)
            if not self._fill():
                if not self._avail():
                    return None
                raise Incomplete("EOF inside a head: %r" % self.buf[:200])

    def read_line(self, limit=64 * KiB):
        start = self._pos
        while True:
            i = self._buf.find(b"\r\n", max(self._pos, start - 1))
            if i >= 0:
                line = self._consume(i + 2 - self._pos)
                return line[:-2]
            start = len(self._buf)
            if self._avail() > limit:
                raise ProtocolError("line too long")
            if not self._fill():
                raise Incomplete("EOF inside a line")

    def read_exact(self, n, sink=None):
        """Reads n bytes; hands them to sink(bytes) when given, else returns them."""
        parts = [] if sink is None else None
        while n > 0:
            if not self._avail() and not self._fill():
                raise Incomplete("EOF with %d body bytes missing" % n)
            piece = self._consume(min(n, self._avail()))
            if sink is None:
                parts.append(piece)
            else:
                sink(piece)
            n -= len(piece)
        return b"".join(parts) if parts is not None else None

    def read_chunked(self, sink=None, max_chunk_line=4 * KiB):
        """Decodes a chunked body. Returns (body or None, trailers list)."""
        parts = [] if sink is None else None
        while True:
            line = self.read_line(max_chunk_line)
            size_s = line.split(b";", 1)[0].strip()
            if not re.match(rb"^[0-9A-Fa-f]+$", size_s):
                raise ProtocolError("bad chunk size line %r" % line)
            size = int(size_s, 16)
            if size == 0:
                break
            data = self.read_exact(size, sink)
            if parts is not None:
                parts.append(data)
            if self.read_line() != b"":
                raise ProtocolError("chunk not followed by CRLF")
        trailers = []
        while True:
            line = self.read_line()
            if line == b"":
                break
            trailers.append(_split_header(line))
        return (b"".join(parts) if parts is not None else None), trailers

    def read_until_eof(self, sink=None):
        parts = [] if sink is None else None
        while True:
            if self._avail():
                data = self._consume(self._avail())
                if sink is None:
                    parts.append(data)
                else:
                    sink(data)
            if not self._fill():
                break
        return b"".join(parts) if parts is not None else None


def _split_header(line):
    if b":" not in line:
        raise ProtocolError("header line without colon: %r" % line)
    name, value = line.split(b":", 1)
    if not _TOKEN.match(name):
        raise ProtocolError("bad header name %r" % name)
    return name.decode("latin-1"), value.strip(b" \t").decode("latin-1")


def parse_head(head):
    """(first line, [(name, value)]) of a CRLF head; strict about bare CR/LF."""
    lines = head[:-4].split(b"\r\n")
    for ln in lines:
        if b"\r" in ln or b"\n" in ln:
            raise ProtocolError("bare CR/LF in head: %r" % ln)
    first = lines[0].decode("latin-1")
    headers = []
    for ln in lines[1:]:
        if ln[:1] in (b" ", b"\t"):
            raise ProtocolError("obs-fold in head: %r" % ln)
        headers.append(_split_header(ln))
    return first, headers


class Headers(list):
    """List of (name, value) with case-insensitive lookups."""

    def all(self, name):
        n = name.lower()
        return [v for k, v in self if k.lower() == n]

    def get(self, name, default=None):
        vs = self.all(name)
        return ", ".join(vs) if vs else default

    def __contains__(self, name):
        if isinstance(name, str):
            return bool(self.all(name))
        return list.__contains__(self, name)


def _has_token(value, token):
    return token in [t.strip().lower() for t in (value or "").split(",")]


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = ""
        self.headers = Headers()
        self.body = b""
        self.body_len = 0
        self.interim = []      # 1xx responses before this one (list of Response)
        self.trailers = []
        self.framing = None    # "none" | "length" | "chunked" | "close"
        self.raw_head = b""
        self.sha256 = None

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise TestFailure("response %s is not JSON: %r" % (self.status, self.body[:300]))

    @property
    def keep_alive(self):
        c = self.header("connection", "")
        if self.version == "HTTP/1.0":
            return _has_token(c, "keep-alive")
        return not _has_token(c, "close") and self.framing != "close"

    def __repr__(self):
        return "<Response %s %s %s body=%d>" % (self.version, self.status, self.reason,
                                                self.body_len)


def _response_body_framing(status, headers, method):
    if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
        return "none"
    te = headers.get("transfer-encoding")
    if te is not None:
        if not _has_token(te, "chunked") or te.lower().split(",")[-1].strip() != "chunked":
            raise ProtocolError("response Transfer-Encoding %r is not chunked-final" % te)
        if "content-length" in headers:
            raise ProtocolError("response with both Content-Length and Transfer-Encoding")
        return "chunked"
    cls = headers.all("content-length")
    if cls:
        if len(set(v.strip() for v in cls)) != 1 or not re.match(r"^[0-9]+$", cls[0].strip()):
            raise ProtocolError("bad response Content-Length %r" % cls)
        return "length"
    return "close"


def read_response(reader, method="GET", sink=None, hash_body=False):
    """Parses one response (after any 1xx). sink(mv) receives the body instead of storing it."""
    interim = []
    while True:
        head = reader.read_head()
        if head is None:
            raise ConnectionClosed("connection closed before a response")
        first, hdrs = parse_head(head)
        m = re.match(r"^(HTTP/1\.[01]) ([0-9]{3})(?: (.*))?$", first)
        if not m:
            raise ProtocolError("bad status line %r" % first)
        r = Response()
        r.version, r.status, r.reason = m.group(1), int(m.group(2)), m.group(3) or ""
        r.headers = Headers(hdrs)
        r.raw_head = head
        if 100 <= r.status < 200 and r.status != 101:
            interim.append(r)
            continue
        break
    r.interim = interim
    r.framing = "none" if r.status == 101 else _response_body_framing(r.status, r.headers, method)
    h = hashlib.sha256() if hash_body or sink is not None else None
    count = [0]
    store = []

    def take(mv):
        count[0] += len(mv)
        if h is not None:
            h.update(mv)
        if sink is not None:
            sink(mv)
        else:
            store.append(bytes(mv))

    try:
        if r.framing == "length":
            reader.read_exact(int(r.headers.get("content-length")), take)
        elif r.framing == "chunked":
            _, r.trailers = reader.read_chunked(take)
        elif r.framing == "close":
            reader.read_until_eof(take)
    except Incomplete as e:
        r.body = b"".join(store)
        r.body_len = count[0]
        raise Incomplete("%s (after %d body bytes of a %s response)" % (e, count[0], r.status), r)
    r.body = b"".join(store)
    r.body_len = count[0]
    r.sha256 = h.hexdigest() if h is not None else None
    return r


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------

def _addr(a):
    if isinstance(a, str):
        host, port = a.rsplit(":", 1)
        return host.strip("[]"), int(port)
    return a


def build_request(method="GET", path="/", headers=(), body=None, host="test.local",
                  version="HTTP/1.1", chunked=False, chunk_size=None):
    lines = ["%s %s %s" % (method, path, version)]
    headers = list(headers.items()) if isinstance(headers, dict) else list(headers)
    names = {k.lower() for k, _ in headers}
    if host is not None and "host" not in names:
        lines.append("Host: %s" % host)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    payload = b""
    if body is not None:
        if isinstance(body, str):
            body = body.encode()
        if chunked:
            if "transfer-encoding" not in names:
                lines.append("Transfer-Encoding: chunked")
            payload = encode_chunked(body, chunk_size or max(1, len(body)))
        else:
            if "content-length" not in names:
                lines.append("Content-Length: %d" % len(body))
            payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def encode_chunked(body, chunk_size):
    out = []
    for i in range(0, len(body), chunk_size):
        piece = body[i:i + chunk_size]
        out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


class Client:
    """One raw TCP connection speaking HTTP/1.1 by hand."""

    def __init__(self, addr, timeout=10.0, rcvbuf=None):
        self.addr = _addr(addr)
        self.sock = socket.socket(socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(self.addr)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = Reader(self.sock)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def read_response(self, method="GET", **kw):
        return read_response(self.reader, method, **kw)

    def request(self, method="GET", path="/", headers=(), body=None, **kw):
        read_kw = {k: kw.pop(k) for k in ("sink", "hash_body") if k in kw}
        self.send(build_request(method, path, headers, body, **kw))
        return self.read_response(method, **read_kw)

    def wait_closed(self, timeout=5.0):
        """True if the peer closes (EOF or RST) within timeout; any data before is discarded
        into .trailing."""
        deadline = time.monotonic() + timeout
        self.trailing = self.reader.buf
        if self.reader.eof:
            return True
        old = self.sock.gettimeout()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    return False
                except (ConnectionResetError, BrokenPipeError):
                    return True
                if not data:
                    return True
                self.trailing += data
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def request(addr, method="GET", path="/", headers=(), body=None, timeout=10.0, **kw):
    """One request on a fresh connection."""
    with Client(addr, timeout) as c:
        return c.request(method, path, headers, body, **kw)


def echo_headers(echo, name):
    n = name.lower()
    return [v for k, v in echo["headers"] if k.lower() == n]


def echo_header(echo, name):
    vs = echo_headers(echo, name)
    return ", ".join(vs) if vs else None


# ---------------------------------------------------------------------------------------------
# Upstream servers
# ---------------------------------------------------------------------------------------------

REASONS = {100: "Continue", 101: "Switching Protocols", 103: "Early Hints", 200: "OK",
           201: "Created", 204: "No Content", 301: "Moved Permanently", 304: "Not Modified",
           400: "Bad Request", 404: "Not Found", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

_live_upstreams = []


def _stop_server(server, conns):
    """Stops a test server: no more accepts, every open connection shut down, forgotten."""
    server._stopping.set()
    try:
        server.sock.close()
    except OSError:
        pass
    with server.lock:
        conns = list(conns)
    for c in conns:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    if server in _live_upstreams:
        _live_upstreams.remove(server)


class Upstream:
    """Threaded HTTP/1.1 origin on 127.0.0.1:0.

    Behaviour comes from the constructor's keyword options, overridden per request by a JSON
    object in the `x-behave` request header. Options:
      status=200          response status
      delay=0             seconds to wait after reading the request, before answering
      body_delay=0        seconds to wait after the head, before reading the body
      action="echo"       echo | close (no answer) | reset (RST) | garbage | midclose | hang
      body_bytes=None     answer with this many pattern bytes instead of the JSON echo
      framing="length"    length | chunked | close  (how a body_bytes answer is delimited)
      chunk=65536         write size for body_bytes answers; chunk_delay=0 between writes
      headers={}          extra response headers (dict or [[name, value], ...])
      trailers={}         trailers for chunked answers
      content_length=None explicit Content-Length on an answer without body (HEAD/304 tests)
      conn_close=False    answer with Connection: close and close
      idle_close=None     close a keep-alive connection idle for this many seconds
      send_100=True       answer Expect: 100-continue with 100 Continue before reading the body
      interim=[]          1xx status codes sent before the final answer (e.g. [103])
      raw=None            send exactly this (latin-1) text as the answer; raw_close=True closes
      sndbuf=None         SO_SNDBUF for the accepted socket
    The echo answer is JSON: server name, method, path (request target), version, headers
    (list of [name, value] as received), body_len, body_sha256, conn (connection number) and
    nreq (request number on that connection).
    """

    def __init__(self, name="up", **opts):
        self.name = name
        self.opts = opts
        self.lock = threading.Lock()
        self.accepted = 0
        self.active = 0         # open connections now
        self.max_active = 0     # most connections open at once
        self.heads = 0          # request heads received
        self.head_paths = []    # their request targets
        self.completed = 0      # requests whose body was read completely
        self.requests = []      # records of completed requests
        self.sent_bytes = 0     # body bytes written by body_bytes answers
        self._conns = set()
        self._stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.addr = ("127.0.0.1", self.port)
        self.addr_str = "127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name="upstream-%s" % name)
        self._thread.start()
        _live_upstreams.append(self)

    def __str__(self):
        return self.addr_str

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        _stop_server(self, self._conns)

    def reset_stats(self):
        with self.lock:
            self.accepted = self.heads = self.completed = self.sent_bytes = 0
            self.max_active = self.active
            self.requests = []
            self.head_paths = []

    def _accept_loop(self):
        cid = 0
        while not self._stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            cid += 1
            with self.lock:
                self.accepted += 1
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, cid), daemon=True).start()

    def _serve(self, conn, cid):
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.opts.get("sndbuf"):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.opts["sndbuf"])
            reader = Reader(conn)
            nreq = 0
            while not self._stopping.is_set():
                conn.settimeout(self.opts.get("idle_close") or None)
                try:
                    head = reader.read_head()
                except socket.timeout:
                    return
                if head is None:
                    return
                conn.settimeout(None)
                nreq += 1
                if not self._one(conn, reader, head, cid, nreq):
                    return
        except (OSError, Incomplete, ProtocolError):
            return
        finally:
            with self.lock:
                self.active -= 1
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _one(self, conn, reader, head, cid, nreq):
        """Serves one request; False when the connection must end."""
        first, hdrs = parse_head(head)
        method, target, version = first.split(" ", 2)
        hdrs = Headers(hdrs)
        with self.lock:
            self.heads += 1
            self.head_paths.append(target)
        o = dict(self.opts)
        if hdrs.get("x-behave"):
            o.update(json.loads(hdrs.get("x-behave")))
        action = o.get("action", "echo")
        if action == "close":
            return False
        if action == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if _has_token(hdrs.get("expect"), "100-continue") and o.get("send_100", True):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if o.get("body_delay"):
            if self._stopping.wait(float(o["body_delay"])):
                return False
        h = hashlib.sha256()
        n = [0]

        def take(mv):
            n[0] += len(mv)
            h.update(mv)

        trailers = []
        if _has_token(hdrs.get("transfer-encoding"), "chunked"):
            _, trailers = reader.read_chunked(take)
        elif hdrs.get("content-length") is not None:
            reader.read_exact(int(hdrs.get("content-length")), take)
        rec = {"server": self.name, "method": method, "path": target, "version": version,
               "headers": [list(x) for x in hdrs], "trailers": [list(x) for x in trailers], "body_len": n[0],
               "body_sha256": h.hexdigest(), "conn": cid, "nreq": nreq, "t": time.time()}
        with self.lock:
            self.completed += 1
            self.requests.append(rec)
        if o.get("delay"):
            if self._stopping.wait(float(o["delay"])):
                return False
        if action == "hang":
            self._stopping.wait(600)
            return False
        if action == "garbage":
            conn.sendall(b"this is not HTTP at all\r\n\x00\x01\x02\r\n\r\n")
            return False
        if o.get("raw") is not None:
            conn.sendall(o["raw"].encode("latin-1"))
            return not o.get("raw_close", True)
        for code in o.get("interim") or ():
            conn.sendall(b"HTTP/1.1 %d %s\r\nLink: </style.css>; rel=preload\r\n\r\n"
                         % (code, REASONS.get(code, "Interim").encode()))
        status = int(o.get("status", 200))
        extra = o.get("headers") or {}
        extra = list(extra.items()) if isinstance(extra, dict) else [tuple(x) for x in extra]
        close = bool(o.get("conn_close")) or _has_token(hdrs.get("connection"), "close") or \
            (version == "HTTP/1.0" and not _has_token(hdrs.get("connection"), "keep-alive"))
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Whatever"))]
        lines += ["%s: %s" % kv for kv in extra]
        if close:
            lines.append("Connection: close")
        body_bytes = o.get("body_bytes")
        if action == "midclose":
            total = int(o.get("body_bytes") or 100000)
            lines.append("Content-Length: %d" % total)
            conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            conn.sendall(bytes(next(pattern(total // 2, total // 2))))
            time.sleep(0.05)
            return False
        if body_bytes is None:
            body = json.dumps(rec).encode()
            lines.append("Content-Type: application/json")
            if status not in (204, 304) and not 100 <= status < 200:
                lines.append("Content-Length: %d" % len(body))
            elif o.get("content_length") is not None:
                lines.append("Content-Length: %d" % int(o["content_length"]))
            conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                         + (b"" if no_body else body))
            return not close
        total = int(body_bytes)
        framing = o.get("framing", "length")
        if framing == "length":
            if status not in (204, 304) or o.get("content_length") is not None:
                lines.append("Content-Length: %d" % o.get("content_length", total))
        elif framing == "chunked":
            if status not in (204, 304):
                lines.append("Transfer-Encoding: chunked")
        elif framing == "close":
            close = True
        lines.append("Content-Type: application/octet-stream")
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if no_body:
            return not close
        chunk = int(o.get("chunk", 64 * KiB))
        cdelay = float(o.get("chunk_delay", 0))
        for piece in pattern(total, chunk):
            if self._stopping.is_set():
                return False
            if framing == "chunked":
                conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                conn.sendall(piece)
            with self.lock:
                self.sent_bytes += len(piece)
            if cdelay:
                time.sleep(cdelay)
        if framing == "chunked":
            tr = o.get("trailers") or {}
            conn.sendall(b"0\r\n" + "".join("%s: %s\r\n" % kv for kv in tr.items()).encode()
                         + b"\r\n")
        if framing == "close":
            return False
        return not close


class _RecordingSocket:
    """Wraps a socket for Reader: every byte received is appended to `sink`."""

    def __init__(self, sock, sink):
        self.sock, self.sink = sock, sink

    def recv(self, n):
        data = self.sock.recv(n)
        self.sink += data
        return data


class RawRequest:
    """One request as a RawUpstream received it: `raw` is every byte of it, as on the wire."""

    def __init__(self, raw, first, headers, body, trailers, conn):
        self.raw, self.first, self.headers = raw, first, Headers(headers)
        self.body, self.trailers, self.conn = body, trailers, conn
        self.method, self.target, self.version = first.split(" ", 2)

    def __repr__(self):
        return "<RawRequest %r conn=%d>" % (self.raw[:120], self.conn.id)


class RawConn:
    def __init__(self, cid):
        self.id = cid
        self.data = bytearray()   # every byte received on this connection
        self.requests = []        # RawRequest, complete and well-formed only
        self.errors = []          # why the strict parser gave up (ProtocolError, Incomplete)
        self.eof = False          # the proxy closed (or reset) the connection


class RawUpstream:
    """A raw-socket upstream that records every byte it receives, per connection, and parses
    requests with the harness's strict parser (bare CR/LF, obs-fold and bad chunk lines are
    protocol errors, recorded in conn.errors). `respond(sock, req)` answers one complete
    request and returns True to keep the connection; the default answers 200 "ok". Faults
    can be scripted in `respond` (write anything, close, reset)."""

    def __init__(self, respond=None, name="raw"):
        self.name = name
        self.respond = respond or (lambda sock, req: RawUpstream.ok(sock))
        self.lock = threading.Lock()
        self.conns = []
        self._stopping = threading.Event()
        self._socks = set()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.addr = ("127.0.0.1", self.port)
        self.addr_str = "127.0.0.1:%d" % self.port
        threading.Thread(target=self._accept_loop, daemon=True, name="raw-" + name).start()
        _live_upstreams.append(self)

    @staticmethod
    def ok(sock, body=b"ok"):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return True

    def __str__(self):
        return self.addr_str

    def close(self):
        _stop_server(self, self._socks)

    def total_bytes(self):
        with self.lock:
            return sum(len(c.data) for c in self.conns)

    def requests(self):
        with self.lock:
            return [r for c in self.conns for r in c.requests]

    def errors(self):
        with self.lock:
            return [e for c in self.conns for e in c.errors]

    def _accept_loop(self):
        cid = 0
        while not self._stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            cid += 1
            rec = RawConn(cid)
            with self.lock:
                self.conns.append(rec)
                self._socks.add(conn)
            threading.Thread(target=self._serve, args=(conn, rec), daemon=True).start()

    def _serve(self, conn, rec):
        reader = Reader(_RecordingSocket(conn, rec.data))
        try:
            while not self._stopping.is_set():
                start = reader.nread - len(reader.buf)
                head = reader.read_head()
                if head is None:
                    break
                first, hdrs = parse_head(head)
                hdrs = Headers(hdrs)
                trailers = []
                if hdrs.get("transfer-encoding") is not None:
                    if hdrs.get("transfer-encoding").lower() != "chunked" or "content-length" in hdrs:
                        raise ProtocolError("framing: %r" % head)
                    body, trailers = reader.read_chunked()
                elif hdrs.get("content-length") is not None:
                    body = reader.read_exact(int(hdrs.get("content-length")))
                else:
                    body = b""
                end = reader.nread - len(reader.buf)
                req = RawRequest(bytes(rec.data[start:end]), first, hdrs, body, trailers, rec)
                with self.lock:
                    rec.requests.append(req)
                if not self.respond(conn, req):
                    break
            else:
                return
            # the proxy closed, or respond() ended the connection: wait for EOF from the proxy
            if reader.eof:
                rec.eof = True
        except (ProtocolError, Incomplete, ValueError) as e:
            with self.lock:
                rec.errors.append("%s: %s" % (type(e).__name__, e))
            if isinstance(e, Incomplete):
                rec.eof = True
        except OSError as e:
            with self.lock:
                rec.errors.append("OSError: %s" % e)
            rec.eof = True
        finally:
            if reader.eof:
                rec.eof = True
            with self.lock:
                self._socks.discard(conn)
            try:
                conn.close()
            except OSError:
                pass


def closed_port():
    """A loopback port nobody listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_port_holder():
    """A socket bound+listening on a fixed loopback port, without SO_REUSEPORT/SO_REUSEADDR."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def wait_until(pred, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def run_threads(fn, args_list):
    """Runs fn(*args) concurrently; returns results (exceptions re-raised in order)."""
    results = [None] * len(args_list)

    def wrap(i, a):
        try:
            results[i] = ("ok", fn(*a))
        except BaseException as e:  # noqa
            results[i] = ("err", e)

    ts = [threading.Thread(target=wrap, args=(i, a), daemon=True) for i, a in enumerate(args_list)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    out = []
    for r in results:
        if r is None:
            raise TestFailure("a worker thread did not finish")
        if r[0] == "err":
            raise r[1]
        out.append(r[1])
    return out


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------

def _cleanup_after_test():
    for p in list(_live_proxies):
        if p.proc is not None and p.proc.poll() is None:
            p.stop()
        p.cleanup()
    _live_proxies.clear()
    for u in list(_live_upstreams):
        u.close()
    reap_all()
    if not KEEP:
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
    del _tmpdirs[:]


def _dump_proxies():
    for p in _live_proxies:
        if p.proc is None:
            continue
        lines = p.stderr().splitlines()
        # a sanitizer report matters from its first line (the faulting stack), not its tail
        start = next((i for i, ln in enumerate(lines)
                      if any(m in ln for m in SANITIZER_MARKERS)), None)
        shown = lines[start:start + 60] if start is not None else lines[-40:]
        print("    --- strangler pid %s (exit %s) stderr %s ---"
              % (p.proc.pid, p.returncode, "sanitizer report" if start is not None else "tail"))
        for line in shown:
            print("    | " + line)


def main(namespace, per_test_timeout=120):
    tests = sorted((f.__code__.co_firstlineno, name, f) for name, f in namespace.items()
                   if name.startswith("test_") and callable(f))
    only = set(sys.argv[1:])
    if only:
        unknown = only - {n for _, n, _ in tests}
        if unknown:
            print("unknown tests: %s" % ", ".join(sorted(unknown)))
            sys.exit(2)
        tests = [t for t in tests if t[1] in only]
    passed = failed = 0
    state = {"name": None, "start": None}

    def watchdog():
        while True:
            time.sleep(1)
            if state["start"] and time.monotonic() - state["start"] > per_test_timeout:
                print("FAIL %s: still running after %ss; thread stacks:" %
                      (state["name"], per_test_timeout), flush=True)
                for tid, frame in sys._current_frames().items():
                    print("".join(traceback.format_stack(frame)), flush=True)
                _dump_proxies()
                reap_all()
                print("%d passed, %d failed" % (passed, failed + 1), flush=True)
                os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    print("strangler binary: %s" % BIN, flush=True)
    for _, name, f in tests:
        state["name"], state["start"] = name, time.monotonic()
        t0 = time.monotonic()
        ok = True
        try:
            f()
        except BaseException as e:  # noqa: includes TestFailure, socket errors, KeyboardInterrupt
            ok = False
            dt = time.monotonic() - t0
            print("FAIL %s (%.1fs)" % (name, dt), flush=True)
            for line in traceback.format_exc().rstrip().splitlines():
                print("    " + line)
            _dump_proxies()
            if isinstance(e, KeyboardInterrupt):
                _cleanup_after_test()
                raise
        finally:
            state["start"] = None
            _cleanup_after_test()
        if ok:
            passed += 1
            print("PASS %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
        else:
            failed += 1
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)
