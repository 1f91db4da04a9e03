#!/usr/bin/python3
"""strangler side-by-side benchmark driver (run it through bench/run).

Starts the upstreams once, then for every round, scenario and proxy (order rotated per
round) starts the proxy fresh on its own CPU, warms it up, measures, and stops it.
Prints a table of medians and ratios, writes it to bench/results/ with CSV/JSON and a
gnuplot chart. Every process it starts is stopped by PID at the end, on error and on
Ctrl-C/SIGTERM. Python standard library only.
"""
import argparse
import csv
import datetime
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
CONF = os.path.join(BENCH, "conf")
TOOLS = os.path.join(BENCH, "tools")
PY = "/usr/bin/python3"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

PROXY_PORT = 18080          # every proxy's HTTP/1.1 port (and h2c, except nginx)
NGINX_H2C_PORT = 18090      # nginx 1.22: `listen ... http2` is HTTP/2-only
STRANGLER_ADMIN = "127.0.0.1:18901"
UPSTREAM_PORTS = [18081, 18082, 18083, 18084, 18085, 18089]
MIRROR_STATUS = "http://127.0.0.1:18089/"
SINK_PORT = 18085

PROXIES = ["strangler", "nginx", "haproxy", "nghttpx"]

# name -> (load kind, config base name, proxies that can run it, description)
SCENARIOS = {
    "h1": ("wrk", "plain", PROXIES,
           "HTTP/1.1, wrk -t1 -c64, GET / proxied to nginx `return 200`"),
    "h2c": ("h2load", "plain", PROXIES,
            "h2c prior knowledge, h2load -t1 -c16 -m10 (160 streams), upstream HTTP/1.1"),
    "split": ("wrk", "split", ["strangler", "nginx", "haproxy"],
              "80/20 weighted split over two upstreams, wrk -c64 (nghttpx: no weighted split)"),
    "mirror-fast": ("wrk", "mirror-fast", ["strangler", "nginx"],
                    "100 % mirrored to a fast target, wrk -c64 (HAProxy, nghttpx: no mirror)"),
    "mirror-slow": ("wrk", "mirror-slow", ["strangler", "nginx"],
                    "100 % mirrored to a target answering after 500 ms, wrk -c64; "
                    "the figure is the primary's p50"),
    "body": ("upload", "body", PROXIES,
             "one 1 GiB request body (Content-Length) streamed to a sink; "
             "throughput and proxy RSS growth (peak - before)"),
    "idle": ("idle", "plain", PROXIES,
             "5,000 idle keep-alive HTTP/1.1 connections (one request each); "
             "proxy RSS delta / connections"),
}
REFERENCE = {"h1": "nginx", "h2c": "nghttpx", "split": "nginx", "mirror-fast": "nginx",
             "mirror-slow": "nginx", "body": "nginx", "idle": "nginx"}

# ----------------------------------------------------------------------------------------
# processes


class Procs:
    """Every process the harness starts; stopped by PID (and its descendants by PID)."""

    def __init__(self):
        self.live = []

    def start(self, argv, cpu=None, log=None, **kw):
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        out = open(log, "ab") if log else subprocess.DEVNULL
        kw.setdefault("stdout", out)
        kw.setdefault("stderr", out)
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        if log:
            out.close()
        self.live.append(p)
        return p

    def stop(self, p, timeout=5.0):
        if p not in self.live:
            return
        pids = [p.pid] + descendants(p.pid)
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        # Children (nginx/nghttpx workers) may outlive their master for a moment, still
        # holding the listening socket: wait for them, then SIGKILL any left, by PID.
        end = time.monotonic() + timeout
        while any(pid_alive(pid) for pid in pids[1:]) and time.monotonic() < end:
            time.sleep(0.02)
        for pid in pids[1:]:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.live.remove(p)

    def stop_all(self):
        for p in list(reversed(self.live)):
            self.stop(p)


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        cur = todo.pop()
        try:
            tasks = os.listdir("/proc/%d/task" % cur)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (cur, t)) as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            out += kids
            todo += kids
    return out


def tree(pid):
    return [pid] + descendants(pid)


def cpu_ticks(pids, kernel_only=False):
    """utime + stime of the processes, in clock ticks (stime alone with kernel_only)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[12]) + (0 if kernel_only else int(fields[11]))  # stime, utime
        except OSError:
            pass
    return total


def status_kib(pids, key):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def reset_peak_rss(pids):
    for pid in pids:
        try:
            with open("/proc/%d/clear_refs" % pid, "w") as f:
                f.write("5")
        except OSError:
            pass


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(port, proc, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if port_open(port):
            return True
        time.sleep(0.05)
    return False


# ----------------------------------------------------------------------------------------
# proxies


class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = Procs()
        self.strangler_io = set()  # what strangler's start-up lines said of its socket I/O
        self.tmp = tempfile.mkdtemp(prefix="strangler-bench.")
        n = os.cpu_count() or 1
        if n >= 3:
            self.cpu_proxy, self.cpu_load, self.cpu_up = 0, 1, 2
        elif n == 2:
            self.cpu_proxy, self.cpu_load, self.cpu_up = 0, 1, 1
        else:
            self.cpu_proxy = self.cpu_load = self.cpu_up = None
        self.layout = ("no pinning (1 CPU)" if self.cpu_proxy is None else
                       "proxy on CPU %d; load generator on CPU %d; upstreams and sink on CPU %d"
                       % (self.cpu_proxy, self.cpu_load, self.cpu_up))

    def log(self, msg):
        print(msg, file=sys.stderr, flush=True)

    # upstreams ------------------------------------------------------------------------
    def start_upstreams(self):
        busy = [p for p in UPSTREAM_PORTS + [PROXY_PORT, NGINX_H2C_PORT, 18901] if port_open(p)]
        if busy:
            raise SystemExit("error: ports already in use on 127.0.0.1: %s" % busy)
        for name in ("app", "mirror"):
            prefix = os.path.join(self.tmp, "up-" + name)
            os.makedirs(os.path.join(prefix, "tmp"))
            p = self.procs.start(["nginx", "-p", prefix + "/", "-e", "stderr", "-c",
                                  os.path.join(CONF, "upstream", name + ".conf")],
                                 cpu=self.cpu_up, log=os.path.join(self.tmp, "up-%s.log" % name))
            port = 18081 if name == "app" else 18089
            if not wait_port(port, p):
                raise SystemExit("error: upstream nginx (%s) did not start, see %s"
                                 % (name, os.path.join(self.tmp, "up-%s.log" % name)))
        p = self.procs.start([PY, os.path.join(TOOLS, "sink.py"), str(SINK_PORT)],
                             cpu=self.cpu_up, log=os.path.join(self.tmp, "sink.log"))
        if not wait_port(SINK_PORT, p):
            raise SystemExit("error: sink did not start")

    # proxy under test -------------------------------------------------------------------
    def start_proxy(self, proxy, conf):
        log = os.path.join(self.tmp, "%s.log" % proxy)
        ports = [PROXY_PORT]
        if proxy == "strangler":
            ready = os.path.join(self.tmp, "ready")
            if os.path.exists(ready):
                os.unlink(ready)
            # info: the start-up line says how the workers do socket I/O (io_uring or not).
            argv = [self.args.strangler, "-c", os.path.join(CONF, "strangler", conf + ".yaml"),
                    "--ready-file", ready, "--log-level", "info"]
        elif proxy == "nginx":
            prefix = os.path.join(self.tmp, "nginx")
            os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
            argv = ["nginx", "-p", prefix + "/", "-e", "stderr", "-c",
                    os.path.join(CONF, "nginx", conf + ".conf")]
            if conf == "plain":
                ports.append(NGINX_H2C_PORT)
        elif proxy == "haproxy":
            argv = ["haproxy", "-db", "-f", os.path.join(CONF, "haproxy", "common.cfg"),
                    "-f", os.path.join(CONF, "haproxy", conf + ".cfg")]
        else:
            argv = ["nghttpx", "--conf=" + os.path.join(CONF, "nghttpx", conf + ".conf")]
        end = time.monotonic() + 5
        while any(port_open(port) for port in ports) and time.monotonic() < end:
            time.sleep(0.05)  # the previous proxy's sockets must be gone
        if any(port_open(port) for port in ports):
            raise RuntimeError("port %s still taken before starting %s" % (ports, proxy))
        p = self.procs.start(argv, cpu=self.cpu_proxy, log=log, stdout=subprocess.DEVNULL)
        if proxy == "strangler":  # listeners and workers are bound once the ready file exists
            end = time.monotonic() + 10
            while not os.path.exists(ready) and p.poll() is None and time.monotonic() < end:
                time.sleep(0.02)
        for port in ports:
            if not wait_port(port, p):
                self.procs.stop(p)
                raise RuntimeError("%s did not start (config %s), see %s" % (proxy, conf, log))
        time.sleep(0.2)  # let nginx/nghttpx workers settle after the master bound the port
        if proxy == "strangler":
            self.note_strangler_io(log)
        return p

    def note_strangler_io(self, log):
        """Remembers what strangler's start-up line says of its socket I/O, for the report."""
        end = time.monotonic() + 2
        while time.monotonic() < end:
            with open(log, errors="replace") as f:  # appended to by every start: all of them
                modes = re.findall(r"socket I/O: (.*)$", f.read(), re.M)
            if modes:
                self.strangler_io.update(m.strip() for m in modes)
                return
            time.sleep(0.05)
        self.strangler_io.add("? (no start-up line)")

    # load -------------------------------------------------------------------------------
    def run_wrk(self, seconds, conns=64):
        cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--timeout", "5s",
               "-s", os.path.join(TOOLS, "report.lua"), "http://127.0.0.1:%d/" % PROXY_PORT]
        out = self.run_tool(cmd, seconds + 30)
        m = re.search(r"^BENCH (\{.*\})$", out, re.M)
        if not m:
            raise RuntimeError("wrk produced no result:\n" + out[-2000:])
        r = json.loads(m.group(1))
        secs = r["duration_us"] / 1e6
        errors = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["status"]
        return {"requests": r["requests"], "seconds": secs, "rps": r["requests"] / secs,
                "p50_ms": r["p50_us"] / 1000.0, "p99_ms": r["p99_us"] / 1000.0, "errors": errors}

    def run_h2load(self, seconds, port, log=True):
        logf = os.path.join(self.tmp, "h2load.log")
        if os.path.exists(logf):
            os.unlink(logf)
        cmd = ["h2load", "-t1", "-c16", "-m10", "-D", str(seconds),
               "http://127.0.0.1:%d/" % port]
        if log:
            cmd[1:1] = ["--log-file", logf]
        out = self.run_tool(cmd, seconds + 30)
        m = re.search(r"finished in ([\d.]+)(m?s)", out)
        r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
        s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        if not (m and r and s):
            raise RuntimeError("h2load produced no result:\n" + out[-2000:])
        secs = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
        done = int(r.group(3))
        errors = int(r.group(5)) + int(r.group(6)) + int(r.group(7)) + \
            int(s.group(2)) + int(s.group(3)) + int(s.group(4))
        res = {"requests": done, "seconds": secs, "rps": done / secs if secs else 0.0,
               "errors": errors, "p50_ms": float("nan"), "p99_ms": float("nan")}
        if log and os.path.exists(logf):
            lat = []
            with open(logf) as f:
                for line in f:
                    parts = line.split("\t")
                    if len(parts) >= 3:
                        lat.append(int(parts[2]))
            if lat:
                lat.sort()
                res["p50_ms"] = lat[int(0.50 * (len(lat) - 1))] / 1000.0
                res["p99_ms"] = lat[int(0.99 * (len(lat) - 1))] / 1000.0
            os.unlink(logf)
        return res

    def run_tool(self, cmd, timeout):
        p = self.procs.start(cmd, cpu=self.cpu_load, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=timeout)
        finally:
            self.procs.stop(p)
        return out.decode("utf-8", "replace")

    # measurements -----------------------------------------------------------------------
    def measure(self, scenario, proxy):
        kind, conf, _, _ = SCENARIOS[scenario]
        p = self.start_proxy(proxy, conf)
        try:
            pids = tree(p.pid)
            if kind in ("wrk", "h2load"):
                return self.measure_load(scenario, proxy, kind, p, pids)
            if kind == "upload":
                return self.measure_body(p, pids)
            return self.measure_idle(p, pids)
        finally:
            self.procs.stop(p)

    def measure_load(self, scenario, proxy, kind, p, pids):
        port = NGINX_H2C_PORT if (kind == "h2load" and proxy == "nginx") else PROXY_PORT
        warm, secs = self.args.warmup, self.args.duration
        if kind == "wrk":
            self.run_wrk(warm)
        else:
            self.run_h2load(warm, port, log=False)
        mirror0 = self.mirror_count() if scenario.startswith("mirror") else 0
        shadow0 = self.shadow_metrics() if (scenario.startswith("mirror") and
                                            proxy == "strangler") else {}
        t0, c0, k0 = time.monotonic(), cpu_ticks(pids), cpu_ticks(pids, kernel_only=True)
        r = self.run_wrk(secs) if kind == "wrk" else self.run_h2load(secs, port)
        c1, k1, t1 = cpu_ticks(pids), cpu_ticks(pids, kernel_only=True), time.monotonic()
        if p.poll() is not None:
            raise RuntimeError("%s exited during the run" % proxy)
        cpu_s = (c1 - c0) / CLK_TCK
        r["cpu_us"] = cpu_s * 1e6 / r["requests"] if r["requests"] else float("nan")
        # the kernel's part (system time): the loopback TCP path every proxy pays
        r["sys_us"] = (k1 - k0) / CLK_TCK * 1e6 / r["requests"] if r["requests"] else float("nan")
        r["cpu_pct"] = 100.0 * cpu_s / (t1 - t0)
        if scenario.startswith("mirror"):
            time.sleep(0.6 if scenario == "mirror-slow" else 0.1)  # let shadows in flight land
            r["shadows_delivered"] = self.mirror_count() - mirror0
            r["shadows_pct"] = 100.0 * r["shadows_delivered"] / r["requests"] if r["requests"] else 0
            if proxy == "strangler":
                s1 = self.shadow_metrics()
                r["shadow_outcomes"] = {k: v - shadow0.get(k, 0) for k, v in s1.items()
                                        if v - shadow0.get(k, 0)}
        return r

    def mirror_count(self):
        """Requests the mirror-target nginx has served so far (its stub_status), not
        counting the stub_status requests themselves (this one included)."""
        with urllib.request.urlopen(MIRROR_STATUS, timeout=5) as f:
            text = f.read().decode()
        self.status_reads = getattr(self, "status_reads", 0) + 1
        return int(text.splitlines()[2].split()[2]) - self.status_reads

    def shadow_metrics(self):
        out = {}
        try:
            with urllib.request.urlopen("http://%s/metrics" % STRANGLER_ADMIN, timeout=5) as f:
                for line in f.read().decode().splitlines():
                    if line.startswith("strangler_mirror_requests_total{"):
                        labels, value = line.rsplit(" ", 1)
                        outcome = re.search(r'outcome="([^"]*)"', labels).group(1)
                        reason = re.search(r'reason="([^"]*)"', labels)
                        key = outcome + ("/" + reason.group(1) if reason else "")
                        out[key] = out.get(key, 0) + int(float(value))
        except OSError:
            pass
        return out

    def measure_body(self, p, pids):
        size = self.args.body_bytes
        up = [PY, os.path.join(TOOLS, "upload.py"), "127.0.0.1", str(PROXY_PORT)]
        json.loads(self.run_tool(up + [str(1 << 20)], 60))  # warm-up: 1 MiB
        time.sleep(0.2)
        rss0 = status_kib(pids, "VmRSS")
        reset_peak_rss(pids)
        c0 = cpu_ticks(pids)
        out = self.run_tool(up + [str(size)], 600)
        c1 = cpu_ticks(pids)
        hwm = status_kib(pids, "VmHWM")
        try:
            r = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError("upload failed: " + out[-2000:])
        ok = r["status"] == 200 and r["echoed"] == size
        return {"requests": 1, "seconds": r["seconds"], "errors": 0 if ok else 1,
                "mib_s": size / (1 << 20) / r["seconds"],
                "rss_growth_mib": max(0, hwm - rss0) / 1024.0,
                "cpu_s": (c1 - c0) / CLK_TCK}

    def measure_idle(self, p, pids):
        n = self.args.idle_conns
        self.run_wrk(1, conns=8)  # warm-up: code paths, upstream pool
        time.sleep(0.3)
        rss0 = status_kib(pids, "VmRSS")
        c = self.procs.start([PY, os.path.join(TOOLS, "idle.py"), "127.0.0.1",
                              str(PROXY_PORT), str(n)], cpu=self.cpu_load,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        try:
            line = c.stdout.readline().decode()
            m = re.match(r"READY ok=(\d+) failed=(\d+)", line)
            if not m:
                raise RuntimeError("idle client failed: %r" % line)
            ok, failed = int(m.group(1)), int(m.group(2))
            time.sleep(1.0)
            rss1 = status_kib(pids, "VmRSS")
        finally:
            self.procs.stop(c)
        return {"requests": ok, "errors": failed, "conns": ok,
                "bytes_per_conn": (rss1 - rss0) * 1024.0 / ok if ok else float("nan"),
                "rss_before_mib": rss0 / 1024.0, "rss_after_mib": rss1 / 1024.0}


# ----------------------------------------------------------------------------------------
# reporting

def med(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(vals) if vals else float("nan")


def fmt(v, spec):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, spec)


def round_ratios(runs, scen_a, proxy_a, key_a, scen_b, proxy_b, key_b):
    """(a / b) of every round that measured both, each ratio taken within its round."""
    out = []
    rounds = sorted({r["round"] for r in runs})
    for rd in rounds:
        a = [r for r in runs if r["round"] == rd and r["scenario"] == scen_a and r["proxy"] == proxy_a]
        b = [r for r in runs if r["round"] == rd and r["scenario"] == scen_b and r["proxy"] == proxy_b]
        if a and b and a[0].get(key_a) and b[0].get(key_b):
            va, vb = a[0][key_a], b[0][key_b]
            if not (math.isnan(va) or math.isnan(vb)) and vb:
                out.append(va / vb)
    return out


def paired_ratio(runs, scen_a, proxy_a, key_a, scen_b, proxy_b, key_b):
    """Median over rounds of (a / b), each ratio taken within one round."""
    return med(round_ratios(runs, scen_a, proxy_a, key_a, scen_b, proxy_b, key_b))


def build_report(args, meta, runs, scenarios):
    lines = []
    w = lines.append
    w("strangler benchmark, %s" % meta["date"])
    w("machine: %s CPUs, %s; shared machine (other work may run during the measurement)"
      % (meta["nproc"], meta["cpu"]))
    w("layout: %s" % meta["layout"])
    w("command: %s" % meta["command"])
    w("rounds: %d (proxy order rotated each round), %d s per load run after a %d s warm-up;"
      " figures are medians over rounds, ratios are medians of per-round ratios"
      % (args.rounds, args.duration, args.warmup))
    w("versions: %s" % "; ".join("%s %s" % kv for kv in meta["versions"].items()))
    w("strangler built from: %s" % meta.get("source", "?"))
    if meta.get("build"):
        w("strangler build: %s" % meta["build"])
    w("strangler socket I/O: %s" % (" / ".join(sorted(meta.get("strangler_io") or ["?"]))))
    medians = {}
    for scen in scenarios:
        kind, _, proxies, desc = SCENARIOS[scen]
        ref = REFERENCE[scen]
        w("")
        w("== %s: %s" % (scen, desc))
        rows = {}
        for proxy in PROXIES:
            rs = [r for r in runs if r["scenario"] == scen and r["proxy"] == proxy]
            if proxy not in proxies:
                rows[proxy] = None
                continue
            ok = [r for r in rs if not r.get("failed")]
            m = {"failed_runs": len(rs) - len(ok)}
            for key in ("rps", "p50_ms", "p99_ms", "cpu_us", "sys_us", "cpu_pct", "errors", "mib_s",
                        "rss_growth_mib", "cpu_s", "bytes_per_conn", "shadows_pct", "seconds"):
                if any(key in r for r in ok):
                    m[key] = med([r.get(key) for r in ok])
            rows[proxy] = m
        medians[scen] = rows
        if kind in ("wrk", "h2load"):
            hdr = "%-10s %9s %8s %8s %11s %9s %9s %7s %14s %12s" % (
                "proxy", "req/s", "p50 ms", "p99 ms", "CPU us/req", "of it sys", "proxy CPU",
                "errors", "req/s ÷" + ref, "CPU ÷" + ref)
            if scen.startswith("mirror"):
                hdr += " %9s %12s %12s" % ("shadows", "CPU ÷own h1", "p50 ÷own h1")
            w(hdr)
            for proxy in PROXIES:
                m = rows[proxy]
                if m is None:
                    w("%-10s n/a" % proxy)
                    continue
                line = "%-10s %9s %8s %8s %11s %9s %8s%% %7s %14s %12s" % (
                    proxy, fmt(m.get("rps"), ".0f"), fmt(m.get("p50_ms"), ".2f"),
                    fmt(m.get("p99_ms"), ".2f"), fmt(m.get("cpu_us"), ".1f"),
                    fmt(m.get("sys_us"), ".1f"), fmt(m.get("cpu_pct"), ".0f"),
                    fmt(m.get("errors"), ".0f"),
                    fmt(paired_ratio(runs, scen, proxy, "rps", scen, ref, "rps"), ".2f") + "x",
                    fmt(paired_ratio(runs, scen, proxy, "cpu_us", scen, ref, "cpu_us"), ".2f") + "x")
                if scen.startswith("mirror"):
                    line += " %8s%% %11sx %11sx" % (
                        fmt(m.get("shadows_pct"), ".0f"),
                        fmt(paired_ratio(runs, scen, proxy, "cpu_us", "h1", proxy, "cpu_us"), ".2f"),
                        fmt(paired_ratio(runs, scen, proxy, "p50_ms", "h1", proxy, "p50_ms"), ".2f"))
                if m["failed_runs"]:
                    line += "  (%d failed runs)" % m["failed_runs"]
                w(line)
            if scen.startswith("mirror"):
                outs = [r.get("shadow_outcomes") for r in runs
                        if r["scenario"] == scen and r["proxy"] == "strangler" and r.get("shadow_outcomes")]
                if outs:
                    w("  strangler shadow outcomes per round (strangler_mirror_requests_total): " +
                      "; ".join(", ".join("%s=%d" % kv for kv in sorted(o.items())) for o in outs))
                w("  shadows = requests the mirror target received / primary requests")
        elif kind == "upload":
            w("%-10s %10s %9s %16s %13s %7s %12s" % ("proxy", "MiB/s", "seconds", "RSS growth MiB",
                                                     "CPU s / GiB", "errors", "MiB/s ÷nginx"))
            for proxy in PROXIES:
                m = rows[proxy]
                w("%-10s %10s %9s %16s %13s %7s %12s" % (
                    proxy, fmt(m.get("mib_s"), ".0f"), fmt(m.get("seconds"), ".2f"),
                    fmt(m.get("rss_growth_mib"), ".2f"),
                    fmt(m.get("cpu_s", float("nan")) * (1 << 30) / args.body_bytes, ".2f"),
                    fmt(m.get("errors"), ".0f"),
                    fmt(paired_ratio(runs, scen, proxy, "mib_s", scen, ref, "mib_s"), ".2f") + "x"))
        else:
            w("%-10s %16s %7s %14s" % ("proxy", "RSS bytes/conn", "errors", "÷nginx"))
            for proxy in PROXIES:
                m = rows[proxy]
                w("%-10s %16s %7s %14s" % (
                    proxy, fmt(m.get("bytes_per_conn"), ".0f"), fmt(m.get("errors"), ".0f"),
                    fmt(paired_ratio(runs, scen, proxy, "bytes_per_conn", scen, ref,
                                     "bytes_per_conn"), ".2f") + "x"))

    targets = []

    def meets(v, limit, cmp):
        return v <= limit if cmp == "<=" else (v >= limit if cmp == ">=" else v < limit)

    def target(name, value, limit, cmp, detail, rounds=None):
        if value is None or math.isnan(value):
            targets.append({"target": name, "value": None, "limit": limit, "met": None,
                            "detail": "not measured"})
            return
        t = {"target": name, "value": value, "limit": limit, "met": meets(value, limit, cmp),
             "detail": detail}
        if rounds:  # a ratio: the rounds it is the median of, to show how near the edge it is
            t["rounds"] = rounds
            t["rounds_met"] = sum(1 for r in rounds if meets(r, limit, cmp))
        targets.append(t)

    def s(scen, proxy, key):
        return medians.get(scen, {}).get(proxy, {}) and medians[scen][proxy].get(key)

    units = {"cpu_us": (".1f", "us"), "rps": (".0f", "req/s"), "p50_ms": (".2f", "ms")}

    def ratio_target(name, a, b, key, limit, cmp):
        """Figure `key` of (scenario, proxy) a over b's, each ratio taken within a round."""
        rounds = round_ratios(runs, a[0], a[1], key, b[0], b[1], key)
        spec, unit = units[key]
        detail = "%s vs %s %s" % (fmt(s(a[0], a[1], key), spec), fmt(s(b[0], b[1], key), spec), unit)
        target(name, med(rounds), limit, cmp, detail, rounds)

    own = ("h1", "strangler")
    if "h1" in scenarios:
        ratio_target("h1 CPU/request <= 0.8x nginx", own, ("h1", "nginx"), "cpu_us", 0.8, "<=")
        for peer in ("nginx", "haproxy"):
            ratio_target("h1 req/s >= %s" % peer, own, ("h1", peer), "rps", 1.0, ">=")
    if "h2c" in scenarios:
        mine, theirs = ("h2c", "strangler"), ("h2c", "nghttpx")
        ratio_target("h2c CPU/request <= nghttpx", mine, theirs, "cpu_us", 1.0, "<=")
        ratio_target("h2c req/s >= nghttpx", mine, theirs, "rps", 1.0, ">=")
    if "mirror-fast" in scenarios and "h1" in scenarios:
        ratio_target("mirror 100% CPU/request <= 1.8x own plain h1", ("mirror-fast", "strangler"),
                     own, "cpu_us", 1.8, "<=")
    if "mirror-slow" in scenarios and "h1" in scenarios:
        ratio_target("slow mirror: primary p50 <= 1.1x no-mirror p50", ("mirror-slow", "strangler"),
                     own, "p50_ms", 1.1, "<=")
    if "idle" in scenarios:
        v = s("idle", "strangler", "bytes_per_conn")
        target("idle keep-alive connection <= 1,000 bytes RSS", v, 1000, "<=",
               "%s bytes (nginx %s)" % (fmt(v, ".0f"), fmt(s("idle", "nginx", "bytes_per_conn"), ".0f")))
    if "body" in scenarios:
        v = s("body", "strangler", "rss_growth_mib")
        target("1 GiB body: RSS growth < 32 MiB", v, 32, "<", "%s MiB" % fmt(v, ".2f"))
    if targets:
        w("")
        w("== targets from issue 6 (strangler)")
        for t in targets:
            state = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
            v = t["value"]
            # three decimals for ratios: 0.998 must not print as a "NOT MET 1.00"
            val = "n/a" if v is None else fmt(v, ".3f" if abs(v) < 10 else ".0f")
            w("  %-8s %-48s %8s  (%s)" % (state, t["target"], val, t["detail"]))
            if t.get("rounds"):
                w("  %-8s per round: %s (%d of %d rounds meet it)" % (
                    "", " ".join("%.3f" % r for r in t["rounds"]), t["rounds_met"], len(t["rounds"])))
    return "\n".join(lines) + "\n", medians, targets


def draw_chart(out_dir, runs, medians, tmp):
    if "h1" not in medians or "h2c" not in medians:
        return None
    dat = os.path.join(out_dir, "cpu-per-request.dat")
    with open(dat, "w") as f:
        f.write("# proxy  h1_cpu_us_per_request  h2c_cpu_us_per_request (medians)\n")
        for proxy in PROXIES:
            a = medians["h1"].get(proxy) or {}
            b = medians["h2c"].get(proxy) or {}
            f.write("%s %s %s\n" % (proxy, fmt(a.get("cpu_us"), ".2f").replace("n/a", "NaN"),
                                    fmt(b.get("cpu_us"), ".2f").replace("n/a", "NaN")))
    png = os.path.join(out_dir, "cpu-per-request.png")
    subprocess.run(["gnuplot", "-e", "datafile='%s'; outfile='%s'" % (dat, png),
                    os.path.join(BENCH, "cpu-per-request.gp")], check=True,
                   stdout=subprocess.DEVNULL)
    return png


def build_kind(binary):
    """How the binary was built, from the CMakeCache.txt beside it: e.g. "Release, LTO, PGO"."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(binary)), "CMakeCache.txt")) as f:
            cache = dict(re.findall(r"^(CMAKE_BUILD_TYPE|STRANGLER_LTO|STRANGLER_PGO)"
                                    r"(?::\w+)?=(.*)$", f.read(), re.M))
    except OSError:
        return "?"
    kind = [cache.get("CMAKE_BUILD_TYPE") or "?"]
    if cache.get("STRANGLER_LTO", "OFF").upper() in ("ON", "TRUE", "1"):
        kind.append("LTO")
    pgo = cache.get("STRANGLER_PGO", "OFF").upper()
    if pgo == "USE":
        kind.append("PGO (scripts/pgo-train)")
    elif pgo != "OFF":
        kind.append("PGO " + pgo)
    return ", ".join(kind)


def machine_meta(args):
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def ver(cmd, pat):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            m = re.search(pat, out.stdout + out.stderr)
            return m.group(1) if m else "?"
        except OSError:
            return "?"
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src",
                                "include", "CMakeLists.txt"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        source = head + (" + uncommitted changes in src/include" if dirty else "")
    except OSError:
        source = "?"
    return {
        "source": source,
        "build": build_kind(args.strangler),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu,
        "command": os.environ.get("BENCH_COMMAND", "bench/run " + " ".join(sys.argv[1:])).strip(),
        "versions": {
            "strangler": ver([args.strangler, "--version"], r"(\S+)\s*$"),
            "nginx": ver(["nginx", "-v"], r"nginx/(\S+)"),
            "haproxy": ver(["haproxy", "-v"], r"version (\S+)"),
            "nghttpx": ver(["nghttpx", "--version"], r"nghttpx nghttp2/(\S+)"),
            "wrk": ver(["wrk", "--version"], r"wrk (\S+)"),
            "h2load": ver(["h2load", "--version"], r"nghttp2/(\S+)"),
        },
    }


# ----------------------------------------------------------------------------------------

def reprint(path):
    """The report of a saved run, from its JSON (meta, args and every run)."""
    with open(path) as f:
        saved = json.load(f)
    saved_args = argparse.Namespace(**saved["args"])
    present = {r["scenario"] for r in saved["runs"]}
    scenarios = [s for s in SCENARIOS if s in present]
    text, _, _ = build_report(saved_args, saved["meta"], saved["runs"], scenarios)
    print(text, end="")
    return 0


def main():
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round, 2 s runs (about 2 minutes); writes results/partial.*")
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                    help="run only this scenario (repeatable); writes results/partial.*")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6, help="seconds per load run")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before each run")
    ap.add_argument("--idle-conns", type=int, default=5000)
    ap.add_argument("--body-bytes", type=int, default=1 << 30)
    ap.add_argument("--strangler", default=os.path.join(ROOT, "build-bench", "strangler"))
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    ap.add_argument("--report", metavar="FILE.json",
                    help="print the report of a saved run (e.g. results/latest.json) again with "
                         "this version's report code; measures and writes nothing")
    args = ap.parse_args()
    if args.report:
        return reprint(args.report)
    if args.quick:
        args.rounds, args.duration = 1, 2
    scenarios = args.scenario or list(SCENARIOS)
    scenarios = [s for s in SCENARIOS if s in scenarios]
    partial = bool(args.quick or args.scenario)
    stem = "partial" if partial else "latest"

    b = Bench(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGINT, on_signal)   # also when started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    runs = []
    try:
        meta = machine_meta(args)
        meta["layout"] = b.layout
        b.log("==> layout: %s" % b.layout)
        b.log("==> temporary files in %s" % b.tmp)
        b.start_upstreams()
        total = sum(len(SCENARIOS[s][2]) for s in scenarios) * args.rounds
        done = 0
        for rd in range(args.rounds):
            order = PROXIES[rd % len(PROXIES):] + PROXIES[:rd % len(PROXIES)]
            for scen in scenarios:
                for proxy in order:
                    if proxy not in SCENARIOS[scen][2]:
                        continue
                    done += 1
                    row = {"round": rd + 1, "scenario": scen, "proxy": proxy}
                    try:
                        row.update(b.measure(scen, proxy))
                    except RuntimeError as e:
                        row["failed"] = str(e)
                        b.log("!!  %s/%s round %d failed: %s" % (scen, proxy, rd + 1, e))
                    runs.append(row)
                    b.log("[%d/%d] round %d %-11s %-9s %s" % (
                        done, total, rd + 1, scen, proxy,
                        ", ".join("%s=%s" % (k, fmt(v, ".4g") if isinstance(v, float) else v)
                                  for k, v in row.items()
                                  if k not in ("round", "scenario", "proxy"))))
        meta["strangler_io"] = sorted(b.strangler_io)
        text, medians, targets = build_report(args, meta, runs, scenarios)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, stem + ".txt"), "w") as f:
            f.write(text)
        keys = sorted({k for r in runs for k in r} - {"round", "scenario", "proxy"})
        with open(os.path.join(args.out, stem + ".csv"), "w", newline="") as f:
            cw = csv.writer(f)
            cw.writerow(["round", "scenario", "proxy"] + keys)
            for r in runs:
                cw.writerow([r["round"], r["scenario"], r["proxy"]] +
                            [json.dumps(r[k]) if isinstance(r.get(k), dict) else r.get(k, "")
                             for k in keys])
        with open(os.path.join(args.out, stem + ".json"), "w") as f:
            json.dump({"meta": meta, "args": vars(args), "medians": medians,
                       "targets": targets, "runs": runs}, f, indent=1, default=str)
        if not partial:
            png = draw_chart(args.out, runs, medians, b.tmp)
            if png:
                b.log("==> chart: %s" % png)
        print(text, end="")
        b.log("==> written: %s/%s.{txt,csv,json}" % (args.out, stem))
    except KeyboardInterrupt:
        b.log("interrupted: stopping everything the benchmark started")
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)   # a second Ctrl-C must not cut the cleanup short
        b.procs.stop_all()
        shutil.rmtree(b.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
