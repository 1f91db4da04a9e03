#!/usr/bin/python3
"""deploy.build: the CMake options of the release build refuse what cannot work.

scripts/build-release itself runs in scripts/test's pass 1 and, in a copy of the image's
build context, in deploy.docker; here only cmake's configure step, in throw-away build
directories: STRANGLER_PGO takes OFF, GENERATE or USE only; USE needs a profile in
STRANGLER_PGO_DIR; the sanitizer build takes neither PGO nor LTO. (Configure only, a few
seconds each: nothing is compiled.) And scripts/lib.sh's sg_configure, which scripts/build, the
sanitizer pass and the demo use, makes a directory a release build configured a plain build
again. And the scripts' --help (scripts/lib.sh sg_usage) from any working directory."""

import importlib.util
import os
import subprocess
import tempfile

from deploylib import ROOT, main


# bench/bench.py's build_kind reads a build directory's CMakeCache.txt for the report's
# "strangler build" line: "Release, LTO, PGO GENERATE", "RelWithDebInfo"...
_spec = importlib.util.spec_from_file_location("bench_for_build_kind", ROOT / "bench" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def build_kind(build):
    return bench.build_kind(os.path.join(build, "strangler"))


def configure(*args):
    with tempfile.TemporaryDirectory() as build:
        p = subprocess.run(["cmake", "-S", str(ROOT), "-B", build, "-DSTRANGLER_TESTS=OFF"] +
                           list(args), capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout + p.stderr


def test_pgo_takes_off_generate_or_use_only():
    rc, out = configure("-DSTRANGLER_PGO=YES")
    assert rc != 0 and "STRANGLER_PGO must be OFF, GENERATE or USE" in out, out
    rc, out = configure("-DSTRANGLER_PGO=GENERATE")
    assert rc == 0, out


def test_pgo_use_without_a_profile_is_refused():
    with tempfile.TemporaryDirectory() as empty:
        rc, out = configure("-DSTRANGLER_PGO=USE", "-DSTRANGLER_PGO_DIR=" + empty)
    assert rc != 0 and "holds no profile" in out, out


def test_the_sanitizer_build_takes_neither_pgo_nor_lto():
    for extra in ("-DSTRANGLER_LTO=ON", "-DSTRANGLER_PGO=GENERATE"):
        rc, out = configure("-DSTRANGLER_SANITIZE=ON", extra)
        assert rc != 0 and "STRANGLER_SANITIZE=ON is a debugging build" in out, (extra, out)


def test_sg_configure_resets_a_release_build_directory():
    with tempfile.TemporaryDirectory() as build:
        def sg_configure(*args):
            p = subprocess.run(["bash", "-c", 'source scripts/lib.sh && sg_configure "$@"', "sh", build,
                                "-DSTRANGLER_TESTS=OFF"] + list(args),
                               cwd=str(ROOT), capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stdout + p.stderr
            return build_kind(build)
        # what scripts/build-release's first step sets
        got = sg_configure("-DCMAKE_BUILD_TYPE=Release", "-DSTRANGLER_LTO=ON", "-DSTRANGLER_PGO=GENERATE")
        assert got == "Release, LTO, PGO GENERATE", got
        # then scripts/build in the same directory: no LTO, no PGO
        got = sg_configure()
        assert got == "RelWithDebInfo", got


def test_the_scripts_print_their_header_for_help_from_any_directory():
    # run from scripts/, where "./build" is the script and, after the scripts' cd to the
    # root, the build directory: the header must be read from the script's own path
    for script, first in (("build", "Configures and builds strangler"),
                          ("build-release", "Builds the release strangler"),
                          ("fuzz", "Builds the libFuzzer targets"),
                          ("demo", "strangler demo: a monolith")):
        p = subprocess.run(["./" + script, "--help"], cwd=str(ROOT / "scripts"),
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, (script, p.stderr)
        lines = p.stdout.splitlines()
        assert lines[0].startswith(first), (script, lines[:2])
        assert any(x.startswith("Usage: scripts/" + script) for x in lines), (script, p.stdout)
        assert not any(x.startswith(("#", "set -", "source ")) for x in lines), (script, p.stdout)
    for script in ("build", "build-release"):
        p = subprocess.run(["scripts/" + script, "-DSTRANGLER_LTO=ON"], cwd=str(ROOT),
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "the first argument is the build directory" in p.stderr, \
            (script, p.stderr)


if __name__ == "__main__":
    main(globals())
