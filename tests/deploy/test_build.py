#!/usr/bin/python3
"""deploy.build: the CMake options of the release build refuse what cannot work.

scripts/build-release itself runs in scripts/test's pass 1 and, in a copy of the image's
build context, in deploy.docker; here only cmake's configure step, in throw-away build
directories: STRANGLER_PGO takes OFF, GENERATE or USE only; USE needs a profile in
STRANGLER_PGO_DIR; the sanitizer build takes neither PGO nor LTO. (Configure only, a few
seconds each: nothing is compiled.)"""

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


if __name__ == "__main__":
    main(globals())
