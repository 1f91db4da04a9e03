#!/usr/bin/python3
"""bench/tools/ab.py: CPU per request of two or more proxy builds or settings, in alternating rounds.

    bench/tools/ab.py [--load h1|h2c] [--rounds N] [--seconds S] [--syscalls] [--directions]
                      [--connections N] VARIANT VARIANT...

VARIANT is NAME=BINARY (strangler with bench/conf/strangler/plain.yaml), NAME=BINARY:CONFIG
(strangler with that configuration, e.g. bench/conf/strangler/mirror-fast.yaml or a copy with
`io_uring: off`), or one of the peers: nginx, haproxy, nghttpx (their plain configurations;
nginx has no h2c on the shared port, so not with --load h2c).

For changes too small for bench/run to separate from the machine's drift, docs/performance.md
("What moved the figures") quotes this tool. Layout as bench/run's on 2 CPUs: the proxy on
CPU 0; the load (wrk -t1 -c64, or -cN with --connections N for a lighter load with fewer
requests per loop turn; or h2load -t1 -c16 -m10), the upstream nginx `return 200` and
the mirror nginx (bench/conf/upstream/) on CPU 1. Every round starts each variant fresh, in
alternating order, warms it up for 1 s, measures utime+stime of its process tree over the
load run and divides by the requests completed. Prints every run, then the medians and, per
round, each variant's ratio to the first. --syscalls adds the variant's system calls per
request and context switches per request (how often its event loop went to sleep), counted
with `perf stat -e raw_syscalls:sys_enter,context-switches` over the middle of the run (needs
perf and tracepoints; the count slows the proxy a little, so CPU figures of such a run are
not compared with others). Every run also prints the TCP segments sent per request, machine
wide (Tcp OutSegs of /proc/net/snmp: the load, the proxy and the upstreams together; 4.00 for
plain HTTP/1.1 keep-alive), the delayed ACKs among them, and the load core's busy time per
request (CPU 1 in /proc/stat, everything but idle and iowait: what the load generator and the
upstreams spent, and so how far the proxy makes them work for a request; on this layout that
core, not the proxy's, decides requests per second). --directions adds the TCP segments per
request in each direction of the proxy's connections (c>p client to proxy, p>c proxy to client,
p>u proxy to the upstream on 18081, u>p back; the mirror target's connections are not counted:
the segs_out of each socket in two `ss -tin` snapshots over the middle of the run, sockets
present in both), which tell how many responses the proxy packs into a segment.

Ports 18080, 18081-18084, 18089 and 18901 on 127.0.0.1, as bench/run's (refuses to start if
one is taken). Every process it starts is stopped by its PID. Standard library only.
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
# bench/run's own process handling (stopped by PID, workers included) and /proc readers
from bench import CLK_TCK, Procs, cpu_ticks, med, port_open, tree  # noqa: E402

CONF = os.path.join(ROOT, "bench", "conf")
PORTS = (18080, 18081, 18082, 18083, 18084, 18089, 18901)


def run_load(kind, seconds, conns=64):
    if kind == "h1":
        cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "http://127.0.0.1:18080/"]
        pat = r"(\d+) requests in"
    else:
        cmd = ["h2load", "-t1", "-c16", "-m10", "-D%d" % seconds, "http://127.0.0.1:18080/"]
        pat = r"requests: \d+ total, \d+ started, (\d+) done"
    out = subprocess.run(["taskset", "-c", "1"] + cmd, capture_output=True, text=True).stdout
    m = re.search(pat, out)
    if not m:
        raise SystemExit("error: no result from %s:\n%s" % (cmd[0], out[-1000:]))
    return int(m.group(1))


def tcp_counters():
    """Machine-wide TCP counters (/proc/net/snmp, netstat): segments sent, delayed ACKs sent."""
    vals = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        with open(path) as f:
            lines = f.read().splitlines()
        for head, body in zip(lines[::2], lines[1::2]):
            for k, v in zip(head.split()[1:], body.split()[1:]):
                vals[head.split(":")[0] + ":" + k] = int(v)
    return vals.get("Tcp:OutSegs", 0), vals.get("TcpExt:DelayedACKs", 0)


def core_busy(cpu):
    """Busy time of one CPU so far, in clock ticks (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu%d " % cpu):
                v = [int(x) for x in line.split()[1:]]
                return sum(v[:8]) - v[3] - v[4]
    return 0


def count_syscalls(pids, seconds, box):
    """System calls and context switches of the processes over `seconds`, one second into
    the load run."""
    time.sleep(1)
    out = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter,context-switches",
                          "-p", ",".join(str(p) for p in pids), "--", "sleep", str(seconds)],
                         capture_output=True, text=True).stderr
    for key, event in (("n", "raw_syscalls:sys_enter"), ("cs", "context-switches")):
        m = re.search(r"^(\d+),[^,]*,%s," % re.escape(event), out, re.M)
        box[key] = int(m.group(1)) if m else None


DIRECTIONS = (("c>p", None, ":18080"), ("p>c", ":18080", None), ("p>u", None, ":18081"),
              ("u>p", ":18081", None))


def segs_out():
    """segs_out of every established TCP socket, by (local, peer) address (`ss -tin`)."""
    out = subprocess.run(["ss", "-tinH", "state", "established"], capture_output=True, text=True).stdout
    socks, cur = {}, None
    for line in out.splitlines():
        if not line[:1].isspace():
            f = line.split()
            cur = (f[-2], f[-1]) if len(f) >= 2 else None
            continue
        m = re.search(r"\bsegs_out:(\d+)", line)
        if cur and m:
            socks[cur] = int(m.group(1))
    return socks


def count_directions(seconds, box):
    """Segments sent over `seconds` in each direction of the proxy's connections, one second
    into the load run: sockets present in both snapshots only."""
    time.sleep(1)
    a = segs_out()
    time.sleep(seconds)
    b = segs_out()
    for name, local, peer in DIRECTIONS:
        box[name] = sum(v - a[k] for k, v in b.items() if k in a and
                        (k[0].endswith(local) if local else k[1].endswith(peer)))


def per_req(v):
    return "n/a" if v is None or v != v else "%.3f" % v  # None or NaN: not counted


def start_variant(procs, tmp, v):
    """Starts variant v on CPU 0, its stderr appended to tmp/log."""
    log = os.path.join(tmp, "log")
    if v in ("nginx", "haproxy", "nghttpx"):
        if v == "nginx":
            prefix = os.path.join(tmp, "nginx")
            os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
            argv = ["nginx", "-p", prefix + "/", "-e", "stderr", "-c",
                    os.path.join(CONF, "nginx", "plain.conf")]
        elif v == "haproxy":
            argv = ["haproxy", "-db", "-f", os.path.join(CONF, "haproxy", "common.cfg"),
                    "-f", os.path.join(CONF, "haproxy", "plain.cfg")]
        else:
            argv = ["nghttpx", "--conf=" + os.path.join(CONF, "nghttpx", "plain.conf")]
        return v, procs.start(argv, cpu=0, log=log, stdout=subprocess.DEVNULL)
    name, _, rest = v.partition("=")
    binary, _, config = rest.partition(":")
    config = config or os.path.join(CONF, "strangler", "plain.yaml")
    return name, procs.start([binary, "-c", config, "--log-level", "warn"], cpu=0, log=log,
                             stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load", choices=("h1", "h2c"), default="h1")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--syscalls", action="store_true")
    ap.add_argument("--directions", action="store_true")
    ap.add_argument("--connections", type=int, default=64,
                    help="wrk's connections for --load h1 (fewer: fewer requests per loop turn)")
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    for v in args.variants:
        if v not in ("nginx", "haproxy", "nghttpx") and "=" not in v:
            ap.error("variant %r: NAME=BINARY[:CONFIG], nginx, haproxy or nghttpx" % v)
    if args.load == "h2c" and "nginx" in args.variants:
        ap.error("nginx serves h2c on another port: not with --load h2c")
    busy = [p for p in PORTS if port_open(p)]
    if busy:
        raise SystemExit("error: ports already in use on 127.0.0.1: %s" % busy)
    tmp = tempfile.mkdtemp(prefix="strangler-ab.")
    procs = Procs()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results = {}
    try:
        for name in ("app", "mirror"):
            prefix = os.path.join(tmp, "up-" + name)
            os.makedirs(os.path.join(prefix, "tmp"))
            procs.start(["nginx", "-p", prefix + "/", "-e", "stderr", "-c",
                         os.path.join(CONF, "upstream", name + ".conf")],
                        cpu=1, log=os.path.join(tmp, "log"), stdout=subprocess.DEVNULL)
        end = time.monotonic() + 5
        while not (port_open(18081) and port_open(18083)):
            if time.monotonic() > end:
                raise SystemExit("error: the upstream nginx did not start (log in %s)" % tmp)
            time.sleep(0.05)
        for rd in range(args.rounds):
            order = args.variants if rd % 2 == 0 else args.variants[::-1]
            for v in order:
                end = time.monotonic() + 5
                while port_open(18080) and time.monotonic() < end:
                    time.sleep(0.05)
                name, p = start_variant(procs, tmp, v)
                end = time.monotonic() + 5
                while not port_open(18080):
                    if p.poll() is not None or time.monotonic() > end:
                        raise SystemExit("error: %s did not start (log in %s)" % (name, tmp))
                    time.sleep(0.02)
                time.sleep(0.2)
                run_load(args.load, 1, args.connections)
                pids = tree(p.pid)  # nginx's and nghttpx's workers, after the warm-up
                all0, sys0 = cpu_ticks(pids), cpu_ticks(pids, kernel_only=True)
                tcp0, load0 = tcp_counters(), core_busy(1)
                box, window = {}, max(1, args.seconds - 2)
                threads = []
                if args.syscalls:
                    threads.append(threading.Thread(target=count_syscalls, args=(pids, window, box)))
                if args.directions:
                    dirs = {}
                    threads.append(threading.Thread(target=count_directions, args=(window, dirs)))
                for t in threads:
                    t.start()
                n = run_load(args.load, args.seconds, args.connections)
                all1, sys1 = cpu_ticks(pids), cpu_ticks(pids, kernel_only=True)
                tcp = [b - a for a, b in zip(tcp0, tcp_counters())]
                load = (core_busy(1) - load0) / CLK_TCK * 1e6 / n
                row = {"us": (all1 - all0) / CLK_TCK * 1e6 / n, "sys": (sys1 - sys0) / CLK_TCK * 1e6 / n,
                       "rps": n / args.seconds, "segs": tcp[0] / n, "dack": tcp[1] / n, "load": load}
                for t in threads:
                    t.join()
                if args.directions:
                    row["dirs"] = {k: v / (row["rps"] * window) for k, v in dirs.items()}
                if args.syscalls:
                    row["sc"] = box["n"] / (row["rps"] * window) if box.get("n") else None
                    row["cs"] = box["cs"] / (row["rps"] * window) if box.get("cs") is not None else None
                results.setdefault(name, []).append(row)
                print("round %d %-12s %7.2f us/req (sys %6.2f) %9.0f req/s  load core %5.2f us/req"
                      "  %.2f segments/req (%.3f delayed ACKs)%s%s" % (
                    rd + 1, name, row["us"], row["sys"], row["rps"], row["load"], row["segs"], row["dack"],
                    "  %.2f syscalls/req, %s context switches/req" % (row["sc"], per_req(row["cs"]))
                    if row.get("sc") else "",
                    "".join("  %s %.3f" % kv for kv in row.get("dirs", {}).items())), flush=True)
                procs.stop(p)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    names = list(results)
    print("\nmedians over %d rounds (%s, %d s runs):" % (args.rounds, args.load, args.seconds))
    for name in names:
        rows = results[name]
        ratios = [a["us"] / b["us"] for a, b in zip(rows, results[names[0]])]
        print("%-12s %7.2f us/req (sys %6.2f) %9.0f req/s  load core %5.2f us/req %5.2f segments/req"
              "   %.3fx %s (per-round ratios %s)%s%s" % (
            name, statistics.median(r["us"] for r in rows), statistics.median(r["sys"] for r in rows),
            statistics.median(r["rps"] for r in rows), statistics.median(r["load"] for r in rows),
            statistics.median(r["segs"] for r in rows),
            statistics.median(ratios), names[0], " ".join("%.2f" % x for x in ratios),
            "  %.2f syscalls/req, %s context switches/req" % (
                statistics.median(r["sc"] for r in rows if r.get("sc")),
                per_req(med(r.get("cs") for r in rows)))
            if args.syscalls and any(r.get("sc") for r in rows) else "",
            "".join("  %s %.3f" % (k, statistics.median(r["dirs"][k] for r in rows))
                    for k, _, _ in DIRECTIONS) if args.directions else ""))


if __name__ == "__main__":
    main()
