"""Command line: --version, --help, --check, exit codes, the ready file, ${ENV} substitution."""

import json
import os
import re
import signal
import socket
import threading
import time

from harness import (Client, Proxy, Upstream, check, config, eq, free_port_holder, main, request,
                     run_cli, tmpdir, wait_until, write_file as write)


def valid_config(port=0, endpoint="127.0.0.1:9"):
    return config({"mono": [endpoint]},
                  [{"name": "default", "destinations": [{"upstream": "mono"}]}],
                  listeners=[{"name": "public", "address": "127.0.0.1:%d" % port}])


def test_version():
    r = run_cli(["--version"])
    eq(r.returncode, 0, "--version exit status")
    check(re.search(r"\d+\.\d+(\.\d+)?", r.stdout + r.stderr),
          "--version prints no version number: %r %r" % (r.stdout, r.stderr))


def test_help():
    r = run_cli(["--help"])
    eq(r.returncode, 0, "--help exit status")
    text = r.stdout + r.stderr
    for opt in ("--check", "--ready-file", "-c"):
        check(opt in text, "--help does not mention %s: %r" % (opt, text[:2000]))


def test_check_valid_prints_one_summary_line_and_binds_nothing():
    # The listener's fixed port is held by us: a --check that tried to bind would fail.
    holder, port = free_port_holder()
    try:
        path = write(valid_config(port))
        r = run_cli(["--check", "-c", path])
        eq(r.returncode, 0, "--check on a valid file: exit status (stderr %r)" % r.stderr)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        eq(len(lines), 1, "--check summary line count (output %r)" % (r.stdout + r.stderr))
        r2 = run_cli(["--check", "--config", path])
        eq(r2.returncode, 0, "--check --config FILE exit status")
    finally:
        holder.close()


def test_check_uses_STRANGLER_CONFIG_when_no_c():
    path = write(valid_config())
    r = run_cli(["--check"], env={"STRANGLER_CONFIG": path})
    eq(r.returncode, 0, "--check with $STRANGLER_CONFIG: exit status (stderr %r)" % r.stderr)
    bad = write("workers: 2\nlisteners: 5\n")
    r = run_cli(["--check"], env={"STRANGLER_CONFIG": bad})
    eq(r.returncode, 1, "--check with $STRANGLER_CONFIG pointing at a bad file")
    check(bad in r.stderr, "errors name the $STRANGLER_CONFIG file: %r" % r.stderr)


INVALID = """\
workers: 2
listeners:
  - name: public
    address: 127.0.0.1:{port}
    bogus_key: 1
admin:
  address: 127.0.0.1:0
upstreams:
  mono:
    endpoints:
      - 127.0.0.1:9
    max_connections: lots
routes:
  - name: r1
    destinations:
      - upstream: nosuch
limits:
  header_timeout: ${{STRANGLER_IT_UNSET_VARIABLE_XYZ}}
"""

# line -> (acceptable columns, a word the message must contain or None)
EXPECTED_ERRORS = {
    5: ({5}, "bogus_key"),                      # unknown key
    12: ({5, 22}, None),                        # wrong type (key or value mark)
    16: ({7, 9, 19}, "nosuch"),                 # dangling upstream reference
    18: ({3, 19}, "STRANGLER_IT_UNSET_VARIABLE_XYZ"),  # unset ${VAR} without default
}


def test_check_invalid_reports_every_error_with_position():
    holder, port = free_port_holder()
    try:
        os.environ.pop("STRANGLER_IT_UNSET_VARIABLE_XYZ", None)
        path = write(INVALID.format(port=port))
        r = run_cli(["--check", "-c", path])
        eq(r.returncode, 1, "--check on an invalid file: exit status (stderr %r)" % r.stderr)
        errs = {}
        for line in r.stderr.splitlines():
            if line.startswith(path + ":"):
                m = re.match(re.escape(path) + r":(\d+):(\d+): (\S.*)$", line)
                check(m, "error line not FILE:LINE:COLUMN: message: %r" % line)
                errs.setdefault(int(m.group(1)), []).append((int(m.group(2)), m.group(3)))
        for ln, (cols, word) in EXPECTED_ERRORS.items():
            check(ln in errs, "no error reported for line %d; stderr:\n%s" % (ln, r.stderr))
            ok = [(c, msg) for c, msg in errs[ln]
                  if c in cols and (word is None or word in msg)]
            check(ok, "line %d: want column in %s%s, got %r" %
                  (ln, sorted(cols), " naming %r" % word if word else "", errs[ln]))
        # Running it (not --check) must fail the same way, with exit 1 and no ready file.
        ready = path + ".ready"
        r = run_cli(["--ready-file", ready, "-c", path])
        eq(r.returncode, 1, "run with an invalid file: exit status (stderr %r)" % r.stderr)
        check(not os.path.exists(ready), "ready file written for an invalid config")
    finally:
        holder.close()


def test_check_yaml_syntax_error():
    path = write("workers: 2\nlisteners:\n  - name: public\n    address: [127.0.0.1:0\n"
                 "admin: {address: 127.0.0.1:0}\n")
    r = run_cli(["--check", "-c", path])
    eq(r.returncode, 1, "--check on broken YAML: exit status")
    check(re.search("^" + re.escape(path) + r":\d+:\d+: \S", r.stderr, re.M),
          "syntax error not reported as FILE:LINE:COLUMN: message: %r" % r.stderr)


def test_missing_file_exits_1():
    path = os.path.join(tmpdir(), "nope.yaml")
    r = run_cli(["--check", "-c", path])
    eq(r.returncode, 1, "--check on a missing file: exit status")
    check(path in r.stderr, "error does not name the missing file: %r" % r.stderr)
    r = run_cli(["-c", path, "--ready-file", path + ".ready"])
    eq(r.returncode, 1, "run with a missing file: exit status")


def _expect_runtime_failure(cfg_text, port):
    path = write(cfg_text)
    ready = path + ".ready"
    t0 = time.monotonic()
    r = run_cli(["--ready-file", ready, "-c", path], timeout=15)
    eq(r.returncode, 2, "listener address in use: exit status (stderr %r)" % r.stderr)
    check(time.monotonic() - t0 < 10, "took %.1fs to give up" % (time.monotonic() - t0))
    check(str(port) in r.stderr, "stderr does not name the address: %r" % r.stderr)
    if os.path.exists(ready):
        with open(ready) as f:
            check("public=" not in f.read(), "ready file written although binding failed")


def test_address_in_use_exits_2():
    holder, port = free_port_holder()
    try:
        _expect_runtime_failure(valid_config(port), port)
    finally:
        holder.close()


def test_admin_address_in_use_exits_2():
    holder, port = free_port_holder()
    try:
        text = valid_config().replace("address: 127.0.0.1:0\nupstreams",
                                      "address: 127.0.0.1:%d\nupstreams" % port)
        check(("127.0.0.1:%d" % port) in text, "test setup: admin port substitution")
        _expect_runtime_failure(text, port)
    finally:
        holder.close()


def test_ready_file_lists_every_listener_and_admin():
    up = Upstream("ready")
    cfg = config({"mono": up}, [{"name": "only", "match": {"path": "/only"},
                                 "destinations": [{"upstream": "mono"}]}],
                 listeners=[{"name": "public", "address": "127.0.0.1:0"},
                            {"name": "second", "address": "127.0.0.1:0"}])
    with Proxy(cfg) as p:
        text = p.ready_text()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        names = {}
        for ln in lines:
            m = re.match(r"^([A-Za-z0-9_.-]+)=127\.0\.0\.1:([0-9]+)$", ln)
            check(m, "ready file line %r is not name=HOST:PORT" % ln)
            names[m.group(1)] = int(m.group(2))
        eq(set(names), {"public", "second", "admin"}, "names in the ready file")
        eq(len(set(names.values())), 3, "distinct ports in the ready file %r" % names)
        for name in ("public", "second"):
            r = request(p.addr(name), "GET", "/only")
            eq(r.status, 200, "GET /only via %s" % name)
            eq(r.json()["server"], "ready", "upstream reached via %s" % name)
            eq(request(p.addr(name), "GET", "/elsewhere").status, 404, "unrouted via " + name)
        eq(p.admin_get("/live").status, 200, "admin GET /live")
        eq(p.admin_get("/ready").status, 200, "admin GET /ready")


def test_env_substitution_in_config():
    up = Upstream("fromenv")
    text = """\
workers: ${STRANGLER_IT_WORKERS:-2}
listeners:
  - name: public
    address: ${STRANGLER_IT_HOST}:0
admin:
  address: 127.0.0.1:0
upstreams:
  mono:
    endpoints:
      - 127.0.0.1:${STRANGLER_IT_UP_PORT}
routes:
  - name: default
    destinations:
      - upstream: mono
"""
    env = {"STRANGLER_IT_HOST": "127.0.0.1", "STRANGLER_IT_UP_PORT": str(up.port)}
    os.environ.pop("STRANGLER_IT_WORKERS", None)
    with Proxy(text, env=env) as p:
        r = request(p.addr(), "GET", "/x")
        eq(r.status, 200, "request through a config using ${ENV}")
        eq(r.json()["server"], "fromenv", "upstream chosen from ${ENV}")
    path = write(text)
    r = run_cli(["--check", "-c", path], env={"STRANGLER_IT_HOST": "127.0.0.1"})
    eq(r.returncode, 1, "--check with an unset ${VAR}: exit status")
    check("STRANGLER_IT_UP_PORT" in r.stderr, "unset variable not named: %r" % r.stderr)


def test_sigterm_exits_0():
    up = Upstream("t")
    cfg = config({"mono": up}, [{"name": "default", "destinations": [{"upstream": "mono"}]}])
    p = Proxy(cfg)
    with p:
        eq(request(p.addr(), "GET", "/").status, 200, "request before SIGTERM")
    # __exit__ asserted exit status 0 within 10 s; check it really is gone
    check(p.proc.poll() is not None, "process still running")


def test_sigterm_drains_in_flight_requests():
    up = Upstream("drain")
    cfg = config({"mono": up}, [{"name": "default", "destinations": [{"upstream": "mono"}]}],
                 extra={"shutdown": {"drain_timeout": "10s"}})
    with Proxy(cfg) as p:
        idle = Client(p.addr())
        eq(idle.request("GET", "/warm").status, 200, "warm-up on a keep-alive connection")
        res = []
        slow = threading.Thread(target=lambda: res.append(request(
            p.addr(), "GET", "/slow", [("x-behave", json.dumps({"delay": 1.5}))])), daemon=True)
        slow.start()
        check(wait_until(lambda: up.heads >= 2, 5), "slow request never reached the upstream")
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        time.sleep(0.3)
        r = request(p.admin, "GET", "/ready")
        eq(r.status, 503, "GET /ready while draining")

        def refused():
            try:
                socket.create_connection(p.addr(), timeout=1).close()
                return False
            except OSError:
                return True
        check(wait_until(refused, 2), "listener still accepts connections while draining")
        slow.join(10)
        check(res, "in-flight request did not finish")
        eq(res[0].status, 200, "in-flight request during drain")
        check("close" in (res[0].header("connection") or "").lower(),
              "keep-alive response during drain without Connection: close: %r"
              % res[0].headers)
        check(idle.wait_closed(5), "idle keep-alive connection left open while draining")
        idle.close()
        p.proc.wait(10)
        dt = time.monotonic() - t0
        check(1.0 <= dt < 8, "exited %.2fs after SIGTERM with a 1.5 s request in flight" % dt)
    eq(p.returncode, 0, "exit status after drain")


if __name__ == "__main__":
    main(globals())
