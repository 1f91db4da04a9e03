#!/usr/bin/python3
"""deploy.build: the CMake options of the release build refuse what cannot work.

scripts/build-release itself runs in scripts/test's pass 1 and, in a copy of the image's
build context, in deploy.docker; here only cmake's configure step, in throw-away build
directories: STRANGLER_PGO takes OFF, GENERATE or USE only; USE needs a profile in
STRANGLER_PGO_DIR; the sanitizer build takes neither PGO nor LTO. (Configure only, a few
seconds each: nothing is compiled.) And scripts/lib.sh's sg_configure, which scripts/build, the
sanitizer pass and the demo use, makes a directory a release build configured a plain build
again."""

import os
import subprocess
import tempfile

from deploylib import ROOT, main


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


def cache(build):
    """The build directory's CMakeCache.txt entries, NAME -> value."""
    vals = {}
    with open(os.path.join(build, "CMakeCache.txt")) as f:
        for line in f:
            name, sep, value = line.rstrip("\n").partition("=")
            if sep and not line.startswith(("#", "//")):
                vals[name.split(":")[0]] = value
    return vals


def test_sg_configure_resets_a_release_build_directory():
    keys = ("CMAKE_BUILD_TYPE", "STRANGLER_LTO", "STRANGLER_PGO")
    with tempfile.TemporaryDirectory() as build:
        def sg_configure(*args):
            p = subprocess.run(["bash", "-c", 'source scripts/lib.sh && sg_configure "$@"', "sh", build,
                                "-DSTRANGLER_TESTS=OFF"] + list(args),
                               cwd=str(ROOT), capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stdout + p.stderr
            vals = cache(build)
            return tuple(vals.get(k) for k in keys)
        # what scripts/build-release's first step sets
        got = sg_configure("-DCMAKE_BUILD_TYPE=Release", "-DSTRANGLER_LTO=ON", "-DSTRANGLER_PGO=GENERATE")
        assert got == ("Release", "ON", "GENERATE"), got
        # then scripts/build in the same directory
        got = sg_configure()
        assert got == ("RelWithDebInfo", "OFF", "OFF"), got


if __name__ == "__main__":
    main(globals())
