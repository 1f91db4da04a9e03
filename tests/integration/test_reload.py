"""Hot reload through the real binary: every trigger (file rename, in-place write, Kubernetes
ConfigMap `..data` symlink swap, SIGHUP, POST /reload), invalid configurations rejected while the
old one keeps serving, byte-identical rewrites ignored, requests in flight finishing on their
snapshot, upstream pools surviving a reload, GET /config with `${ENV}` values redacted, and 100
reloads under continuous keep-alive load without a single failed request.

Every test changes the split of route `bar` between two upstreams, A and B, and observes which one
answers. The configuration lives in a directory of its own (`DIR/conf/`, as a mounted ConfigMap
would), apart from the proxy's stdout/stderr files, unless a test says otherwise.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import harness
from harness import (Client, ConnectionClosed, Incomplete, Proxy, ProtocolError, Upstream,
                     build_request, check, config, eq, main, metric_value, request,
                     tmpdir, wait_until)

SECRET = "s3cr3t-t0ken-Zq9xW"


# ---------------------------------------------------------------------------------------------
# Configuration texts
# ---------------------------------------------------------------------------------------------

def split_cfg(a, b, wa, wb, tag=None, extra=None, more_upstreams=None, route_extra=None,
              listeners=None):
    """Route `bar` (/bar...) split A:wa / B:wb; `default` -> A. `tag` sets the response header
    x-config on route bar, so a response tells which snapshot served it."""
    bar = {"name": "bar", "match": {"path_prefix": "/bar"},
           "destinations": [{"upstream": "A", "weight": wa}, {"upstream": "B", "weight": wb}]}
    if tag is not None:
        bar["response_headers"] = {"set": {"x-config": tag}}
    if route_extra:
        bar.update(route_extra)
    ups = {"A": a, "B": b}
    ups.update(more_upstreams or {})
    return config(ups, [bar, {"name": "default", "destinations": [{"upstream": "A"}]}],
                  extra=extra, listeners=listeners)


def invalid_cfg(valid_text):
    """The valid text with two validation errors: a misspelt key and an unknown upstream.
    Returns (text, [(line, column, fragment of the message)])."""
    lines = valid_text.splitlines()
    out, errs = [], []
    done_key = done_up = False
    for line in lines:
        m = re.match(r"^(\s*)weight: (\d+)$", line)
        if m and not done_key:
            line = "%swieght: %s" % (m.group(1), m.group(2))
            errs.append((len(out) + 1, len(m.group(1)) + 1, "wieght"))
            done_key = True
        m = re.match(r"^(\s*- upstream: )B$", line)
        if m and not done_up:
            line = m.group(1) + "bar-svc"
            errs.append((len(out) + 1, len(m.group(1)) + 1, "bar-svc"))
            done_up = True
        out.append(line)
    check(done_key and done_up, "could not make the invalid config")
    return "\n".join(out) + "\n", errs


SYNTAX_ERROR = "workers: 2\nlisteners:\n  - name: public\n   address: [127.0.0.1:0\n"


# ---------------------------------------------------------------------------------------------
# Writing the file the ways operators and tools do
# ---------------------------------------------------------------------------------------------

def write_atomic(path, text):
    """Editor / config-management style: write a temporary file next to it, rename over it."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".strangler.yaml.", dir=d)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def write_in_place(path, text, pieces=3, gap=0.02):
    """`cat new > file` / `echo >` style: open with O_TRUNC, write in a few pieces (a burst that
    the proxy must debounce, never reading the half-written file)."""
    data = text.encode()
    step = max(1, len(data) // pieces + 1)
    with open(path, "r+b") as f:
        f.truncate(0)
        f.flush()
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            os.fsync(f.fileno())
            if i + step < len(data):
                time.sleep(gap)


def _cm_stamp():
    return "..%s.%09d" % (time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime()),
                          random.randrange(10 ** 9))


def configmap_write(conf_dir, text, name="strangler.yaml"):
    """What the kubelet's AtomicWriter does for a ConfigMap volume:
         DIR/strangler.yaml -> ..data/strangler.yaml
         DIR/..data -> ..2026_11_24_10_00_00.123456789
    An update writes a new timestamped directory, points `..data_tmp` at it, renames `..data_tmp`
    over `..data` (atomic symlink swap) and deletes the old directory."""
    data = os.path.join(conf_dir, "..data")
    old = os.readlink(data) if os.path.islink(data) else None
    stamp = _cm_stamp()
    while old == stamp or os.path.exists(os.path.join(conf_dir, stamp)):
        stamp = _cm_stamp()
    new_dir = os.path.join(conf_dir, stamp)
    os.mkdir(new_dir, 0o755)
    with open(os.path.join(new_dir, name), "w") as f:
        f.write(text)
    os.chmod(os.path.join(new_dir, name), 0o644)
    tmp = os.path.join(conf_dir, "..data_tmp")
    os.symlink(stamp, tmp)
    os.rename(tmp, data)
    user = os.path.join(conf_dir, name)
    if not os.path.islink(user):
        os.symlink(os.path.join("..data", name), user)
    if old:
        shutil.rmtree(os.path.join(conf_dir, old))


# ---------------------------------------------------------------------------------------------
# A proxy whose configuration file lives in its own directory
# ---------------------------------------------------------------------------------------------

class WatchedProxy(Proxy):
    """Like harness.Proxy, but the configuration is DIR/conf/strangler.yaml, alone in its
    directory, either a regular file (layout="file") or the ConfigMap symlink layout
    (layout="configmap"); logs and the ready file stay in DIR. layout="shared" keeps the harness
    layout (config next to the busy stdout/stderr files)."""

    def __init__(self, text, layout="file", **kw):
        Proxy.__init__(self, text, **kw)
        self.layout = layout

    def _write_config(self):
        if self.layout == "shared":
            self.conf_dir = self.dir
        else:
            self.conf_dir = os.path.join(self.dir, "conf")
            os.mkdir(self.conf_dir)
        path = os.path.join(self.conf_dir, "strangler.yaml")
        if self.layout == "configmap":
            configmap_write(self.conf_dir, self.config_text)
        else:
            with open(path, "w") as f:
                f.write(self.config_text)
        return path

    def write(self, text, how="rename"):
        if how == "rename":
            write_atomic(self.config_path, text)
        elif how == "inplace":
            write_in_place(self.config_path, text)
        elif how == "configmap":
            configmap_write(self.conf_dir, text)
        else:
            raise ValueError(how)


# ---------------------------------------------------------------------------------------------
# Observing the proxy
# ---------------------------------------------------------------------------------------------

def counter(text, name, **labels):
    v = metric_value(text, name, **labels)
    return 0 if v is None else v


def state(p):
    """(generation, successful reloads, failed reloads) from /metrics."""
    m = p.metrics()
    g = metric_value(m, "strangler_config_generation")
    check(g is not None, "no strangler_config_generation in /metrics:\n%s" % m[-2000:])
    return (int(g), int(counter(m, "strangler_config_reloads_total", result="success")),
            int(counter(m, "strangler_config_reloads_total", result="failure")))


def ask(p, path="/bar/x", headers=()):
    """One request on a fresh connection (each may land on either worker)."""
    r = request(p.addr(), "GET", path, headers)
    eq(r.status, 200, "GET %s status (body %r)" % (path, r.body[:200]))
    return r.json()["server"], r


def wait_for(p, server, timeout=5.0, run=12, path="/bar/x"):
    """Seconds until `run` consecutive fresh-connection requests are answered by `server`;
    fails after `timeout`."""
    t0 = time.monotonic()
    streak = 0
    last = None
    while time.monotonic() - t0 < timeout:
        last, _ = ask(p, path)
        streak = streak + 1 if last == server else 0
        if streak >= run:
            return time.monotonic() - t0
        time.sleep(0.01)
    raise TestFailureWithState(p, "route still not served by %s after %.1fs (last answer from %s)"
                               % (server, timeout, last))


def all_from(p, server, n=30, path="/bar/x", what=""):
    got = [ask(p, path)[0] for _ in range(n)]
    bad = [s for s in got if s != server]
    eq(bad, [], "answers not from %s %s" % (server, what))


def TestFailureWithState(p, msg):
    try:
        st = state(p)
    except Exception as e:  # noqa
        st = "metrics unavailable: %s" % e
    return harness.TestFailure("%s; (generation, reloads ok, reloads failed) = %s" % (msg, st))


def post_reload(p, headers=()):
    r = request(p.admin, "POST", "/reload", headers)
    try:
        body = json.loads(r.body)
    except ValueError:
        raise harness.TestFailure("POST /reload answered %s with a non-JSON body %r"
                                  % (r.status, r.body[:300]))
    return r, body


class Burst:
    """Keeps renaming fresh copies of `text` over the config path every `gap` seconds, so a
    debounced watcher (picks a change up only ~100-300 ms after the last write) cannot fire while
    it runs: whatever reloads meanwhile was triggered by something else (SIGHUP, POST)."""

    def __init__(self, path, text, gap=0.03):
        self.path, self.text, self.gap = path, text, gap
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.errors = []

    def _run(self):
        while not self.stop.is_set():
            try:
                write_atomic(self.path, self.text)
            except OSError as e:
                self.errors.append(e)
            self.stop.wait(self.gap)

    def __enter__(self):
        write_atomic(self.path, self.text)
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.t.join(5)


def stderr_has_error(p, line, col, fragment):
    """An error line naming FILE:LINE:COLUMN (any log prefix before it) with `fragment`."""
    pat = re.escape("%s:%d:%d: " % (p.config_path, line, col))
    for ln in p.stderr().splitlines():
        if re.search(pat, ln) and fragment in ln:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Triggers
# ---------------------------------------------------------------------------------------------

def _file_trigger(how, layout):
    a, b = Upstream("A"), Upstream("B")
    with WatchedProxy(split_cfg(a, b, 100, 0, tag="v1"), layout=layout) as p:
        all_from(p, "A", 20, what="before any reload")
        eq(state(p), (1, 0, 0), "(generation, reloads ok, reloads failed) at start")
        p.write(split_cfg(a, b, 0, 100, tag="v2"), how)
        dt = wait_for(p, "B", timeout=5)
        all_from(p, "B", 30, what="after the reload")
        _, r = ask(p)
        eq(r.header("x-config"), "v2", "x-config header of the new snapshot")
        wait_until(lambda: state(p)[0] >= 2, 2)
        eq(state(p), (2, 1, 0), "(generation, reloads ok, reloads failed) after one %s" % how)
        # and back: the watch survives the change it reported (new inode, new ..data target)
        p.write(split_cfg(a, b, 100, 0, tag="v3"), how)
        wait_for(p, "A", timeout=5)
        check(wait_until(lambda: state(p)[0] == 3, 2), "generation after the second change")
        eq(state(p), (3, 2, 0), "(generation, reloads ok, reloads failed) after two %ss" % how)
        check(dt < 5, "first change seen after %.2fs" % dt)


def test_reload_on_atomic_rename():
    _file_trigger("rename", "file")


def test_reload_on_in_place_write():
    # open(O_TRUNC) + 3 writes 20 ms apart: one debounced reload, never the half-written file
    _file_trigger("inplace", "file")


def test_reload_on_configmap_symlink_swap():
    _file_trigger("configmap", "configmap")


def test_reload_on_sighup():
    a, b = Upstream("A"), Upstream("B")
    with WatchedProxy(split_cfg(a, b, 100, 0)) as p:
        eq(ask(p)[0], "A", "before SIGHUP")
        # SIGHUP's default action would end the process
        os.kill(p.pid, signal.SIGHUP)
        time.sleep(0.5)
        check(p.proc.poll() is None, "strangler exited (%r) on SIGHUP" % p.proc.poll())
        all_from(p, "A", 10, what="after a SIGHUP with nothing changed")
        g0, ok0, bad0 = state(p)
        eq(bad0, 0, "failed reloads after SIGHUP with a valid file")
        # The new file is renamed in again and again, so the watcher (debounced) stays quiet:
        # only the SIGHUP can make B answer while the burst goes on.
        with Burst(p.config_path, split_cfg(a, b, 0, 100)):
            time.sleep(0.1)
            t0 = time.monotonic()
            os.kill(p.pid, signal.SIGHUP)
            wait_for(p, "B", timeout=5)
            took = time.monotonic() - t0
        check(took < 1.5, "SIGHUP took effect only after %.2fs (while the file watcher was "
              "held off by a burst of writes: the change may have come from the watcher's "
              "fallback, not from SIGHUP)" % took)
        g1, ok1, bad1 = state(p)
        check(g1 >= g0 + 1, "generation %d -> %d after SIGHUP" % (g0, g1))
        check(ok1 >= ok0 + 1, "successful reloads %d -> %d after SIGHUP" % (ok0, ok1))
        eq(bad1, 0, "failed reloads")
        time.sleep(0.6)   # the watcher sees the end of the burst: nothing must break
        all_from(p, "B", 20, what="after the burst ended")


def test_reload_on_post():
    a, b = Upstream("A"), Upstream("B")
    with WatchedProxy(split_cfg(a, b, 100, 0)) as p:
        g0, ok0, _ = state(p)
        with Burst(p.config_path, split_cfg(a, b, 0, 100)):
            time.sleep(0.1)
            t0 = time.monotonic()
            r, body = post_reload(p)
            eq(r.status, 200, "POST /reload status (body %r)" % r.body[:300])
            check("json" in (r.header("content-type") or ""),
                  "POST /reload content-type %r" % r.header("content-type"))
            eq(body.get("result"), "success", "POST /reload result (%r)" % body)
            check(isinstance(body.get("generation"), int) and body["generation"] >= g0 + 1,
                  "POST /reload generation %r (was %d)" % (body.get("generation"), g0))
            wait_for(p, "B", timeout=5)
            took = time.monotonic() - t0
        check(took < 1.5, "POST /reload took effect only after %.2fs" % took)
        g1, ok1, bad1 = state(p)
        check(g1 >= body["generation"], "generation gauge %d < POST's %d" % (g1, body["generation"]))
        check(ok1 >= ok0 + 1, "successful reloads %d -> %d" % (ok0, ok1))
        eq(bad1, 0, "failed reloads")
        # a POST with Content-Length: 0 (what most HTTP clients send) works the same
        write_atomic(p.config_path, split_cfg(a, b, 100, 0))
        r, body2 = post_reload(p, [("Content-Length", "0")])
        eq(r.status, 200, "POST /reload with Content-Length: 0")
        check(body2.get("generation", 0) > body["generation"],
              "generation after a second POST: %r then %r" % (body, body2))
        wait_for(p, "A", timeout=3)
        # GET /reload does not reload
        r = request(p.admin, "GET", "/reload")
        check(r.status in (404, 405), "GET /reload answered %s" % r.status)


# ---------------------------------------------------------------------------------------------
# Invalid configurations
# ---------------------------------------------------------------------------------------------

def test_invalid_edit_rejected_old_config_keeps_serving():
    a, b = Upstream("A"), Upstream("B")
    good = split_cfg(a, b, 100, 0, tag="v1")
    bad, errs = invalid_cfg(split_cfg(a, b, 0, 100, tag="v2"))
    with WatchedProxy(good) as p:
        eq(state(p), (1, 0, 0), "state at start")
        # 1. file watcher, validation errors
        p.write(bad, "rename")
        check(wait_until(lambda: state(p)[2] >= 1, 5),
              "invalid file not rejected by the watcher within 5s: state %r" % (state(p),))
        time.sleep(0.4)
        eq(state(p), (1, 0, 1), "(generation, ok, failed) after an invalid edit")
        check(p.proc.poll() is None, "strangler exited after an invalid edit")
        for line, col, frag in errs:
            check(wait_until(lambda: stderr_has_error(p, line, col, frag), 2),
                  "stderr lacks %s:%d:%d: ...%s...; stderr:\n%s"
                  % (p.config_path, line, col, frag, p.stderr()[-3000:]))
        for _ in range(20):
            s, r = ask(p)
            eq((s, r.header("x-config")), ("A", "v1"), "answer while an invalid file is on disk")
        # 2. POST /reload of the same invalid file: 400 with every error
        r, body = post_reload(p)
        eq(r.status, 400, "POST /reload of an invalid file: status")
        eq(body.get("result"), "failure", "POST /reload result (%r)" % body)
        got = body.get("errors")
        check(isinstance(got, list) and all(isinstance(e, str) for e in got),
              "errors is not a list of strings: %r" % body)
        for line, col, frag in errs:
            prefix = "%s:%d:%d: " % (p.config_path, line, col)
            check(any(e.startswith(prefix) and frag in e and len(e) > len(prefix) + 5
                      for e in got), "POST /reload errors lack %s...%s: %r" % (prefix, frag, got))
        eq(len(got), len(errs), "number of errors in the POST answer (%r)" % got)
        eq(state(p)[1:], (0, 2), "(ok, failed) after the POST")
        # 3. SIGHUP of the same invalid file: rejected again, logged again
        os.kill(p.pid, signal.SIGHUP)
        check(wait_until(lambda: state(p)[2] >= 3, 3), "SIGHUP with an invalid file: failures %r"
              % (state(p),))
        # 4. a YAML syntax error written in place
        p.write(SYNTAX_ERROR, "inplace")
        check(wait_until(lambda: state(p)[2] >= 4, 5), "syntax error not rejected: %r"
              % (state(p),))
        pat = re.compile(re.escape(p.config_path) + r":\d+:\d+: \S")
        syn = [ln for ln in p.stderr().splitlines() if pat.search(ln) and "YAML" in ln]
        check(syn, "syntax error not logged as FILE:LINE:COLUMN: message; stderr:\n%s"
              % p.stderr()[-3000:])
        eq(state(p)[0], 1, "generation after rejected edits")
        all_from(p, "A", 20, what="after a syntax error on disk")
        check(p.proc.poll() is None, "strangler exited")
        # 5. the next valid edit is picked up
        p.write(split_cfg(a, b, 0, 100, tag="v2"), "inplace")
        wait_for(p, "B", timeout=5)
        _, r = ask(p)
        eq(r.header("x-config"), "v2", "x-config after the fix")
        check(wait_until(lambda: state(p) == (2, 1, 4), 2),
              "(generation, ok, failed) after the fix: %r" % (state(p),))


def test_identical_rewrite_does_not_reload():
    a, b = Upstream("A"), Upstream("B")
    text = split_cfg(a, b, 100, 0)
    with WatchedProxy(text) as p:
        eq(state(p), (1, 0, 0), "state at start")
        write_in_place(p.config_path, text)
        time.sleep(0.2)
        write_atomic(p.config_path, text)
        time.sleep(0.2)
        os.utime(p.config_path)                      # touch
        time.sleep(0.2)
        shutil.copy(p.config_path, p.config_path + ".bak")   # a neighbour appears
        time.sleep(1.2)
        eq(state(p), (1, 0, 0), "(generation, ok, failed) after byte-identical rewrites")
        # the watcher is alive: a real change is picked up
        p.write(split_cfg(a, b, 0, 100), "rename")
        wait_for(p, "B", timeout=5)
        check(wait_until(lambda: state(p) == (2, 1, 0), 2), "state after a real change: %r"
              % (state(p),))


def test_configmap_swap_with_identical_content_does_not_reload():
    """The kubelet swaps `..data` whenever any key of the ConfigMap changes; when strangler.yaml
    itself is byte-identical nothing reloads. A changed one after that still does."""
    a, b = Upstream("A"), Upstream("B")
    text = split_cfg(a, b, 100, 0)
    with WatchedProxy(text, layout="configmap") as p:
        configmap_write(p.conf_dir, text)
        time.sleep(0.3)
        configmap_write(p.conf_dir, text)
        time.sleep(1.2)
        eq(state(p), (1, 0, 0), "(generation, ok, failed) after identical ..data swaps")
        configmap_write(p.conf_dir, split_cfg(a, b, 0, 100))
        wait_for(p, "B", timeout=5)
        check(wait_until(lambda: state(p) == (2, 1, 0), 2), "state after a real change: %r"
              % (state(p),))


def test_vim_style_and_delete_recreate():
    """vim (backupcopy=no) renames the file away, writes a new one, deletes the backup; other
    tools delete and recreate. Meanwhile the old configuration keeps serving, and the new file
    is picked up."""
    a, b = Upstream("A"), Upstream("B")
    with WatchedProxy(split_cfg(a, b, 100, 0)) as p:
        path = p.config_path
        os.rename(path, path + "~")
        with open(path, "w") as f:
            f.write(split_cfg(a, b, 0, 100))
        os.unlink(path + "~")
        wait_for(p, "B", timeout=5)
        os.unlink(path)
        time.sleep(0.8)
        check(p.proc.poll() is None, "strangler exited when its config file was deleted")
        all_from(p, "B", 20, what="while the config file is missing")
        eq(state(p)[0], 2, "generation while the file is missing")
        with open(path, "w") as f:
            f.write(split_cfg(a, b, 100, 0))
        wait_for(p, "A", timeout=5)
        check(wait_until(lambda: state(p)[0] == 3, 2), "generation after the file came back: %r"
              % (state(p),))


def test_watcher_not_starved_by_other_files_in_the_directory():
    """`strangler -c ./strangler.yaml > ./strangler.log` in one directory: the access log is
    written continuously next to the config. Changes to other files must not hold off the
    debounce: a config change is still picked up within about a second."""
    a, b = Upstream("A"), Upstream("B")
    with WatchedProxy(split_cfg(a, b, 100, 0), layout="shared") as p:
        stop = threading.Event()
        noise = os.path.join(p.conf_dir, "other.log")

        def scribble():
            with open(noise, "ab") as f:
                while not stop.is_set():
                    f.write(b"x" * 100 + b"\n")
                    f.flush()
                    stop.wait(0.02)

        t = threading.Thread(target=scribble, daemon=True)
        t.start()
        try:
            times = []
            for i, (wa, wb, want) in enumerate([(0, 100, "B"), (100, 0, "A"), (0, 100, "B"),
                                                (100, 0, "A")]):
                time.sleep(0.3)
                t0 = time.monotonic()
                p.write(split_cfg(a, b, wa, wb), "rename")
                wait_for(p, want, timeout=5, run=6)
                times.append(time.monotonic() - t0)
        finally:
            stop.set()
            t.join(5)
        check(max(times) < 1.2, "config changes picked up after %s s while another file in the "
              "same directory was being written (debounce restarted by unrelated events?)"
              % ["%.2f" % x for x in times])


# ---------------------------------------------------------------------------------------------
# Snapshots, pools, /config
# ---------------------------------------------------------------------------------------------

def test_in_flight_requests_finish_on_their_snapshot():
    a, b = Upstream("A"), Upstream("B")
    with WatchedProxy(split_cfg(a, b, 100, 0, tag="v1")) as p:
        # a slow response (head delayed 2 s) and an upload still in progress, both started
        # under v1
        slow = Client(p.addr(), timeout=15)
        slow.send(build_request("GET", "/bar/slow", [("x-behave", json.dumps({"delay": 2.0}))]))
        up = Client(p.addr(), timeout=15)
        total = 200000
        body = bytes(random.Random(1).randbytes(total))
        head = build_request("POST", "/bar/upload", [("Content-Length", str(total))])
        up.send(head + body[:total // 2])
        check(wait_until(lambda: a.heads >= 2, 5), "requests did not reach A (heads %d)" % a.heads)
        # v2 routes everything to B
        write_atomic(p.config_path, split_cfg(a, b, 0, 100, tag="v2"))
        r, res = post_reload(p)
        eq(r.status, 200, "POST /reload")
        wait_for(p, "B", timeout=3)
        up.send(body[total // 2:])
        ru = up.read_response()
        rs = slow.read_response()
        for what, resp in (("slow response", rs), ("upload", ru)):
            eq(resp.status, 200, "%s status" % what)
            eq(resp.json()["server"], "A", "%s served by" % what)
            eq(resp.header("x-config"), "v1", "%s: response edits of its own snapshot" % what)
        eq(ru.json()["body_len"], total, "upload body length at A")
        # the next request on those same connections is a new request: new snapshot
        for c in (slow, up):
            r = c.request("GET", "/bar/next")
            eq((r.status, r.json()["server"], r.header("x-config")), (200, "B", "v2"),
               "next request on a connection that was busy during the reload")
            c.close()
        recs = p.access_log(pred=lambda x: x.get("path") in ("/bar/slow", "/bar/upload"), count=2)
        for rec in recs:
            eq(rec.get("upstream"), "A", "access log upstream of %s" % rec.get("path"))


def test_upstream_pools_survive_reload():
    a, b = Upstream("A"), Upstream("B")
    with WatchedProxy(split_cfg(a, b, 100, 0, tag="v1")) as p:
        c = Client(p.addr())
        for i in range(10):
            r = c.request("GET", "/bar/warm%d" % i)
            eq(r.json()["server"], "A", "warm-up")
        n0 = a.accepted
        check(1 <= n0 <= 2, "connections to A for 10 sequential requests: %d" % n0)
        # reloads that keep A's definition (only response edits / weights change)
        for i, (wa, wb) in enumerate([(100, 0), (100, 1), (100, 0)]):
            write_atomic(p.config_path, split_cfg(a, b, wa, wb, tag="v%d" % (i + 2)))
            r, body = post_reload(p)
            eq(r.status, 200, "POST /reload %d" % i)
            deadline = time.monotonic() + 3
            while True:
                r = c.request("GET", "/bar/after%d" % i, [("x-i", str(i))])
                eq(r.status, 200, "request on the client connection after reload %d" % i)
                if r.header("x-config") == "v%d" % (i + 2) or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            eq(r.header("x-config"), "v%d" % (i + 2), "snapshot used after reload %d" % i)
        # (100, 1) sends about one request in a hundred to B: count what either served
        n_after = sum(1 for u in (a, b) for x in u.requests if x["path"].startswith("/bar/after"))
        check(n_after >= 3, "requests served after the 3 reloads: %d" % n_after)
        eq(a.accepted, n0, "new TCP connections to A (endpoint unchanged) across 3 reloads")
        # a second client connection and B at 100% for a while, then back: A's idle pooled
        # connection is still the one used
        write_atomic(p.config_path, split_cfg(a, b, 0, 100, tag="b"))
        eq(post_reload(p)[0].status, 200, "POST /reload to B")
        check(wait_until(lambda: c.request("GET", "/bar/b").json()["server"] == "B", 3),
              "B never answered after the split moved")
        write_atomic(p.config_path, split_cfg(a, b, 100, 0, tag="a"))
        eq(post_reload(p)[0].status, 200, "POST /reload back to A")
        check(wait_until(lambda: c.request("GET", "/bar/a").json()["server"] == "A", 3),
              "A never answered after the split moved back")
        eq(a.accepted, n0, "new TCP connections to A after A->B->A reloads")
        c.close()


def test_reload_removing_the_upstream_of_an_in_flight_request():
    """The new configuration no longer has upstream B at all while a slow response from B is
    streaming and B has idle pooled connections: the response completes from B under its old
    snapshot, new requests go to A, and B can come back in a later reload."""
    a, b = Upstream("A"), Upstream("B")
    total = 400000
    with WatchedProxy(split_cfg(a, b, 0, 100)) as p:
        warm = [Client(p.addr()) for _ in range(4)]
        for c in warm:
            eq(c.request("GET", "/bar/warm").json()["server"], "B", "warm-up")
        slow = Client(p.addr(), timeout=15)
        slow.send(build_request("GET", "/bar/stream", [("x-behave", json.dumps(
            {"delay": 0.5, "body_bytes": total, "chunk": 40000, "chunk_delay": 0.1}))]))
        check(wait_until(lambda: b.heads >= 5, 5), "slow request did not reach B")
        only_a = config({"A": a}, [{"name": "bar", "match": {"path_prefix": "/bar"},
                                    "destinations": [{"upstream": "A"}]},
                                   {"name": "default", "destinations": [{"upstream": "A"}]}])
        write_atomic(p.config_path, only_a)
        r, body = post_reload(p)
        eq(r.status, 200, "POST /reload without upstream B (%r)" % body)
        wait_for(p, "A", timeout=3)
        for c in warm:
            eq(c.request("GET", "/bar/after").json()["server"], "A",
               "keep-alive client after B was removed")
        rs = slow.read_response(hash_body=True)
        eq((rs.status, rs.body_len, rs.sha256), (200, total, harness.pattern_sha(total)),
           "response streaming from the removed upstream")
        m = p.metrics()
        check(counter(m, "strangler_requests_total", route="bar", upstream="B", code="200") >= 5,
              "requests_total of the removed upstream lost")
        # B comes back
        write_atomic(p.config_path, split_cfg(a, b, 0, 100))
        eq(post_reload(p)[0].status, 200, "POST /reload with B again")
        wait_for(p, "B", timeout=3)
        for c in warm + [slow]:
            eq(c.request("GET", "/bar/back").json()["server"], "B", "after B came back")
            c.close()


def test_reload_changing_an_upstream_endpoint():
    """Same upstream name, new endpoint: new requests go to the new endpoint only, never over a
    connection pooled to the old one."""
    old, new = Upstream("old"), Upstream("new")
    cfg = lambda ep: config({"svc": ep}, [{"name": "bar", "destinations": [{"upstream": "svc"}]}])
    with WatchedProxy(cfg(old)) as p:
        clients = [Client(p.addr()) for _ in range(4)]
        for c in clients:
            for _ in range(3):
                eq(c.request("GET", "/x").json()["server"], "old", "before")
        write_atomic(p.config_path, cfg(new))
        eq(post_reload(p)[0].status, 200, "POST /reload")
        wait_for(p, "new", timeout=3, path="/y")
        n_old = old.completed
        for c in clients:
            for i in range(5):
                eq(c.request("GET", "/z%d" % i).json()["server"], "new",
                   "keep-alive client after the endpoint changed")
        eq(old.completed, n_old, "requests that still reached the old endpoint")
        for c in clients:
            c.close()


def test_reload_applies_limits_and_mirrors_to_new_requests():
    a, b, sh = Upstream("A"), Upstream("B"), Upstream("shadow")
    base = split_cfg(a, b, 100, 0, more_upstreams={"shadow": sh})
    changed = split_cfg(a, b, 100, 0, more_upstreams={"shadow": sh},
                        extra={"limits": {"max_request_body_bytes": "1KiB"}},
                        route_extra={"mirror": [{"upstream": "shadow", "percent": 100}]})
    with WatchedProxy(base) as p:
        c = Client(p.addr())
        eq(c.request("POST", "/bar/big", body=b"x" * 4096).status, 200, "4 KiB body before")
        eq(c.request("GET", "/bar/m1").status, 200, "GET before")
        time.sleep(0.3)
        eq(sh.heads, 0, "shadows before the mirror was configured")
        write_atomic(p.config_path, changed)
        eq(post_reload(p)[0].status, 200, "POST /reload")
        # (a 413 may close its connection: each probe on a new one)
        ok = wait_until(lambda: request(p.addr(), "POST", "/bar/big",
                                        body=b"x" * 4096).status == 413, 3)
        check(ok, "max_request_body_bytes from the reload not applied to new requests")
        eq(c.request("GET", "/bar/m2").status, 200, "GET after, on the connection opened before")
        check(wait_until(lambda: "/bar/m2" in sh.head_paths, 3),
              "mirror added by the reload does not shadow new requests (%r)" % sh.head_paths)
        c.close()


def test_watcher_reloads_under_keepalive_load():
    """20 edits picked up by the file watcher (renames 400 ms apart) while 6 clients keep
    sending: every edit is loaded, no request fails."""
    a, b = Upstream("A"), Upstream("B")
    texts = [split_cfg(a, b, 100, 0, tag="x"), split_cfg(a, b, 0, 100, tag="y")]
    with WatchedProxy(texts[0]) as p:
        with Load(p.addr(), n=6) as load:
            check(wait_until(lambda: load.total() >= 50, 10), "load never got going")
            for i in range(1, 21):
                write_atomic(p.config_path, texts[i % 2])
                time.sleep(0.4)
        g, ok, bad = state(p)
        print("    %d requests (A %d, B %d), generation %d"
              % (load.total(), load.ok["A"], load.ok["B"], g))
        eq(load.failures[:10], [], "failed requests during watched reloads (%d in all)"
           % len(load.failures))
        eq((g, ok, bad), (21, 20, 0), "(generation, ok, failed) after 20 watched edits")


def test_reload_that_cannot_apply_is_rejected_with_positions():
    """A valid file that cannot be applied by a reload (listeners changed, a TLS key file that
    does not exist): either it is applied, or it is rejected like an invalid file: 400, every
    error as FILE:LINE:COLUMN: message, failure counted, the old configuration serving."""
    a, b = Upstream("A"), Upstream("B")
    crt, key = _self_signed(tmpdir())
    lst = [{"name": "public", "address": "127.0.0.1:0"},
           {"name": "secure", "address": "127.0.0.1:0",
            "tls": {"certificate": crt, "private_key": key}}]
    with WatchedProxy(split_cfg(a, b, 100, 0, listeners=lst)) as p:
        cases = [("listener added", lst + [{"name": "extra", "address": "127.0.0.1:0"}]),
                 ("missing TLS key", [lst[0], {"name": "secure", "address": "127.0.0.1:0",
                                              "tls": {"certificate": crt,
                                                      "private_key": key + ".missing"}}])]
        problems = []
        for what, listeners in cases:
            write_atomic(p.config_path, split_cfg(a, b, 0, 100, listeners=listeners))
            r, body = post_reload(p)
            if r.status == 200:
                wait_for(p, "B", timeout=3)
                write_atomic(p.config_path, split_cfg(a, b, 100, 0, listeners=lst))
                eq(post_reload(p)[0].status, 200, "POST /reload back")
                wait_for(p, "A", timeout=3)
                continue
            eq(r.status, 400, "%s: POST /reload status" % what)
            eq(body.get("result"), "failure", "%s: result" % what)
            pat = re.compile("^" + re.escape(p.config_path) + r":\d+:\d+: \S")
            bad = [e for e in body.get("errors", []) if not pat.match(e)]
            if not body.get("errors") or bad:
                problems.append("%s: errors not as FILE:LINE:COLUMN: message: %r"
                                % (what, body.get("errors")))
            all_from(p, "A", 10, what="after a rejected reload (%s)" % what)
        write_atomic(p.config_path, split_cfg(a, b, 100, 0, listeners=lst))
        eq(problems, [], "rejected reloads")


def _self_signed(d):
    key, crt = os.path.join(d, "tls.key"), os.path.join(d, "tls.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=localhost"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


def _walk(o):
    yield o
    if isinstance(o, dict):
        for v in o.values():
            yield from _walk(v)
    elif isinstance(o, list):
        for v in o:
            yield from _walk(v)


def _weights(cfg_json, route="bar"):
    """(upstream, weight) of the destinations of the route named `route`, wherever the JSON
    keeps routes."""
    routes = [d for d in _walk(cfg_json) if isinstance(d, dict) and d.get("name") == route
              and any(isinstance(v, list) for v in d.values())]
    check(len(routes) == 1, "route %r in /config: %r" % (route, routes))
    return sorted((str(d["upstream"]), str(d["weight"])) for d in _walk(routes[0])
                  if isinstance(d, dict) and "upstream" in d and "weight" in d)


def test_config_endpoint_effective_config_with_secrets_redacted():
    a, b = Upstream("A"), Upstream("B")
    crt, key = _self_signed(tmpdir())
    listeners = [{"name": "public", "address": "127.0.0.1:0"},
                 {"name": "secure", "address": "127.0.0.1:0",
                  "tls": {"certificate": crt, "private_key": key}}]
    extra = {"limits": {"max_header_bytes": "32KiB"}}
    route = {"request_headers": {"set": {"x-token": "${SECRET_TOKEN}",
                                         "x-env": "${STRANGLER_IT_UNSET_ENV:-staging}"}}}
    text = split_cfg(a, b, 100, 0, extra=extra, route_extra=route, listeners=listeners)
    with WatchedProxy(text, env={"SECRET_TOKEN": SECRET}) as p:
        s, r = ask(p)
        eq(harness.echo_header(r.json(), "x-token"), SECRET, "the secret reaches the upstream")
        r = request(p.admin, "GET", "/config")
        eq(r.status, 200, "GET /config status")
        check("json" in (r.header("content-type") or ""), "GET /config content-type %r"
              % r.header("content-type"))
        raw = r.body.decode()
        check(SECRET not in raw, "the ${SECRET_TOKEN} value appears in /config: %s" % raw[:3000])
        cfg = r.json()
        strings = [str(x) for x in _walk(cfg) if isinstance(x, (str, int))]
        check("<redacted>" in strings, "no \"<redacted>\" value in /config: %s" % raw[:3000])
        for needle, what in (("bar", "route"), ("default", "route"), (a.addr_str, "endpoint"),
                             (b.addr_str, "endpoint"), ("public", "listener"),
                             ("secure", "listener"), (key, "TLS private_key path"),
                             (crt, "TLS certificate path"),
                             ("staging", "${VAR:-default} value written in the file")):
            check(any(needle in x for x in strings),
                  "/config lacks %s %r: %s" % (what, needle, raw[:3000]))
        eq(_weights(cfg), [("A", "100"), ("B", "0")], "destinations in /config")
        check(any(isinstance(x, dict) and "max_header_bytes" in x for x in _walk(cfg)),
              "limits missing from /config")
        # after a reload /config shows the new configuration (still redacted)
        write_atomic(p.config_path, split_cfg(a, b, 0, 100, extra=extra, route_extra=route,
                                              listeners=listeners))
        eq(post_reload(p)[0].status, 200, "POST /reload")
        wait_for(p, "B", timeout=3)
        r = request(p.admin, "GET", "/config")
        eq(_weights(r.json()), [("A", "0"), ("B", "100")], "destinations in /config after reload")
        check(SECRET not in r.body.decode(), "secret in /config after reload")
        # nor in the logs
        time.sleep(0.3)
        check(SECRET not in p.stderr() and SECRET not in p.stdout(), "secret in the logs")


# ---------------------------------------------------------------------------------------------
# Many reloads under load
# ---------------------------------------------------------------------------------------------

class Load:
    """`n` threads, each sending GET /bar/... on one keep-alive connection as fast as it can.
    Every request must be answered 200 by A or B; anything else is recorded as a failure."""

    def __init__(self, addr, n=6):
        self.addr, self.n = addr, n
        # odd threads' requests wait 5 ms at the upstream, so reloads land while requests are
        # in flight
        self.slow = [("x-behave", json.dumps({"delay": 0.005}))]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = {"A": 0, "B": 0}
        self.failures = []
        self.reconnects = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]

    def _run(self, i):
        c = None
        k = 0
        while not self.stop.is_set():
            k += 1
            path = "/bar/t%d/%d" % (i, k)
            try:
                if c is None:
                    c = Client(self.addr, timeout=10)
                r = c.request("GET", path, self.slow if i % 2 else ())
                server = r.json()["server"] if r.status == 200 else None
                if r.status != 200 or server not in ("A", "B"):
                    raise harness.TestFailure("status %s server %r body %r"
                                              % (r.status, server, r.body[:200]))
                with self.lock:
                    self.ok[server] += 1
                if not r.keep_alive:
                    c.close()
                    c = None
                    with self.lock:
                        self.reconnects += 1
            except (harness.TestFailure, OSError, ConnectionClosed, Incomplete,
                    ProtocolError) as e:
                with self.lock:
                    self.failures.append((time.monotonic(), path, repr(e)))
                if c is not None:
                    c.close()
                c = None
        if c is not None:
            c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def total(self):
        with self.lock:
            return self.ok["A"] + self.ok["B"]


def test_100_reloads_under_keepalive_load():
    a, b = Upstream("A"), Upstream("B")
    weights = [(100, 0), (0, 100), (50, 50), (1, 3), (3, 1)]
    texts = [split_cfg(a, b, wa, wb, tag="w%d-%d" % (wa, wb)) for wa, wb in weights]
    with WatchedProxy(texts[0]) as p:
        g, ok, bad = state(p)
        eq((g, bad), (1, 0), "state at start")
        times = []
        with Load(p.addr(), n=6) as load:
            check(wait_until(lambda: load.total() >= 50, 10), "load never got going")
            for i in range(1, 101):
                text = texts[i % len(texts)]
                write_atomic(p.config_path, text)
                t0 = time.monotonic()
                if i % 2:
                    r, body = post_reload(p)
                    eq(r.status, 200, "POST /reload #%d (body %r)" % (i, r.body[:300]))
                    eq(body.get("result"), "success", "POST /reload #%d" % i)
                    check(body.get("generation", 0) > g, "POST /reload #%d generation %r after %d"
                          % (i, body.get("generation"), g))
                    g = body["generation"]
                else:
                    os.kill(p.pid, signal.SIGHUP)
                    check(wait_until(lambda: state(p)[0] > g, 5, 0.005),
                          "SIGHUP #%d: generation still %d after 5s" % (i, g))
                    g = state(p)[0]
                times.append(time.monotonic() - t0)
                check(p.proc.poll() is None, "strangler exited during reload #%d" % i)
            before_end = load.total()
            time.sleep(0.5)
            check(load.total() > before_end, "load stalled after the reloads")
        g, ok, bad = state(p)
        print("    100 reloads in %.1fs (slowest %.3fs); %d requests (A %d, B %d), "
              "%d reconnects after Connection: close"
              % (sum(times), max(times), load.total(), load.ok["A"], load.ok["B"],
                 load.reconnects))
        eq(load.failures[:10], [], "failed requests during 100 reloads (%d in all)"
           % len(load.failures))
        check(load.total() >= 600, "only %d requests during the reloads" % load.total())
        check(load.ok["A"] > 0 and load.ok["B"] > 0, "split never moved: %r" % load.ok)
        eq(bad, 0, "failed reloads")
        check(g >= 101 and ok >= 100, "generation %d, successful reloads %d after 100" % (g, ok))
        # pools survived: 6 clients need at most ~6 connections per upstream at a time; a pool
        # rebuilt on every reload would have opened hundreds
        check(a.accepted + b.accepted <= 30, "upstream connections opened during 100 reloads: "
              "A %d, B %d (pools dropped on reload?)" % (a.accepted, b.accepted))
        # the last configuration is the one serving: (i=100) -> texts[0] = A only
        wait_for(p, "A", timeout=3)


if __name__ == "__main__":
    main(globals(), per_test_timeout=150)
