#!/usr/bin/python3
"""bench.report: the benchmark's verdicts on issue 6's targets, from made-up runs.

bench/run takes 10-25 minutes and measures a shared machine, so its report code is checked
here on runs whose figures are chosen: a ratio target is the median of the ratios taken
within each round, the per-round values and how many rounds meet the target are listed
under it, a ratio just below its limit prints with enough decimals to read as such, and
`bench/bench.py --report FILE.json` prints a saved run's report again. Standard library
only; starts no process but `bench/bench.py --report`."""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH_PY = os.path.join(ROOT, "bench", "bench.py")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_report_under_test", BENCH_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = load_bench()

META = {"date": "2026-12-02 10:09 UTC", "nproc": 2, "cpu": "test CPU", "layout": "test layout",
        "command": "bench/run --rounds 3", "versions": {"nginx": "1"}, "source": "abc1234",
        "strangler_io": ["io_uring"]}
ARGS = {"rounds": 3, "duration": 6, "warmup": 1, "idle_conns": 5000, "body_bytes": 1 << 30}


def h1(rnd, proxy, cpu_us, rps):
    return {"round": rnd, "scenario": "h1", "proxy": proxy, "requests": int(rps * 6),
            "seconds": 6.0, "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0,
            "cpu_us": cpu_us, "sys_us": cpu_us * 0.7, "cpu_pct": 80.0}


# strangler's CPU per request against nginx's: 0.75, 0.81, 0.79 (median 0.79, met; 2 of 3
# rounds). Its req/s against HAProxy's: 0.998, 1.01, 0.99 (median 0.998: not met, 1 of 3).
RUNS = []
for rnd, (s_cpu, n_cpu, s_rps, h_rps) in enumerate(
        [(15.0, 20.0, 39920.0, 40000.0), (16.2, 20.0, 40400.0, 40000.0),
         (15.8, 20.0, 39600.0, 40000.0)], start=1):
    RUNS += [h1(rnd, "strangler", s_cpu, s_rps), h1(rnd, "nginx", n_cpu, 30000.0),
             h1(rnd, "haproxy", 22.0, h_rps), h1(rnd, "nghttpx", 25.0, 30000.0)]


def report(runs=RUNS):
    text, _, targets = bench.build_report(types.SimpleNamespace(**ARGS), META, runs, ["h1"])
    return text, {t["target"]: t for t in targets}


def line_after(text, needle):
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if needle in line:
            return line, lines[i + 1] if i + 1 < len(lines) else ""
    raise AssertionError("no line with %r in:\n%s" % (needle, text))


def test_a_ratio_target_is_the_median_of_the_rounds_ratios():
    _, targets = report()
    cpu = targets["h1 CPU/request <= 0.8x nginx"]
    assert abs(cpu["value"] - 0.79) < 1e-9, cpu
    assert cpu["met"] is True, cpu
    assert [round(r, 3) for r in cpu["rounds"]] == [0.75, 0.81, 0.79], cpu
    assert cpu["rounds_met"] == 2, cpu


def test_the_report_lists_each_rounds_ratio_under_its_target():
    text, _ = report()
    head, rounds = line_after(text, "h1 CPU/request <= 0.8x nginx")
    assert head.split()[0] == "MET", head
    assert "0.790" in head, head
    assert rounds.split() == ["per", "round:", "0.750", "0.810", "0.790", "(2", "of", "3",
                              "rounds", "meet", "it)"], rounds


def test_a_ratio_just_below_its_limit_does_not_print_as_the_limit():
    text, targets = report()
    rps = targets["h1 req/s >= haproxy"]
    assert rps["met"] is False and rps["rounds_met"] == 1, rps
    head, rounds = line_after(text, "h1 req/s >= haproxy")
    assert head.split()[:2] == ["NOT", "MET"], head
    assert "0.998" in head and "1.00 " not in head, head
    assert "(1 of 3 rounds meet it)" in rounds, rounds


def test_a_target_without_rounds_has_no_per_round_line():
    # Only two proxies measured: no HAProxy runs, so that target is not measured at all.
    runs = [r for r in RUNS if r["proxy"] in ("strangler", "nginx")]
    text, targets = report(runs)
    assert targets["h1 req/s >= haproxy"]["met"] is None, targets["h1 req/s >= haproxy"]
    head, after = line_after(text, "h1 req/s >= haproxy")
    assert head.split()[0] == "n/a", head
    assert "per round" not in after, after


def test_report_option_prints_a_saved_run_again():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "saved.json")
        with open(path, "w") as f:
            json.dump({"meta": META, "args": ARGS, "medians": {}, "targets": [], "runs": RUNS}, f)
        out = subprocess.run([sys.executable, BENCH_PY, "--report", path], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout == report()[0], out.stdout
        assert os.listdir(tmp) == ["saved.json"], os.listdir(tmp)  # nothing written


def test_the_report_names_how_strangler_was_built():
    # build_kind reads the CMakeCache.txt beside the binary (scripts/build-release's cache).
    with tempfile.TemporaryDirectory() as tmp:
        binary = os.path.join(tmp, "strangler")
        assert bench.build_kind(binary) == "?"  # no cache: unknown, not guessed
        with open(os.path.join(tmp, "CMakeCache.txt"), "w") as f:
            f.write("CMAKE_BUILD_TYPE:STRING=Release\nSTRANGLER_LTO:BOOL=ON\n"
                    "STRANGLER_PGO:STRING=USE\nSTRANGLER_PGO_DIR:PATH=/x/pgo-profile\n")
        assert bench.build_kind(binary) == "Release, LTO, PGO (scripts/pgo-train)"
        with open(os.path.join(tmp, "CMakeCache.txt"), "w") as f:
            f.write("CMAKE_BUILD_TYPE:STRING=RelWithDebInfo\nSTRANGLER_LTO:BOOL=OFF\n"
                    "STRANGLER_PGO:STRING=OFF\n")
        assert bench.build_kind(binary) == "RelWithDebInfo"
    text, _, _ = bench.build_report(types.SimpleNamespace(**ARGS), dict(META, build="Release, LTO"),
                                    RUNS, ["h1"])
    assert "\nstrangler build: Release, LTO\n" in text, text
    assert "strangler build:" not in report()[0]  # a saved run from before: no such line


def main():
    tests = [(k, v) for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    only = sys.argv[1:]
    failed = 0
    for name, fn in tests:
        if only and name not in only:
            continue
        try:
            fn()
            print("ok   %s" % name)
        except Exception as e:  # noqa: BLE001 - report every failure, then fail
            failed += 1
            print("FAIL %s: %s" % (name, e))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
