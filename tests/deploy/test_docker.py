#!/usr/bin/python3
"""deploy.docker: docker/Dockerfile without Docker (it cannot run on these machines).

What is checked, and how far it goes:
- the structure: a Debian bookworm build stage and a bookworm-slim final stage, a numeric
  non-root USER, STOPSIGNAL SIGTERM, EXPOSE of the ports the configurations use, the
  configuration at /etc/strangler/strangler.yaml, ENTRYPOINT/CMD;
- the build stage installs scripts/lib.sh's SG_BUILD_PACKAGES and SG_PGO_PACKAGES and runs
  the build script scripts/test's pass 1 (CI) runs (scripts/build-release), with its arguments;
- the build context: .dockerignore applied to the work tree, every COPY source is in it,
  and the build stage's scripts/build-release command, run in a copy of exactly that context,
  builds a strangler that runs and checks the image's default configuration;
- the runtime packages are exactly the packages of the shared libraries the binary under
  test links (ldd + dpkg -S on this Debian 12 machine);
- docker/healthcheck against a running strangler.
Not checked: anything only `docker build` itself could show (base image pulls, apt inside
the image, the final image's file permissions)."""

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from deploylib import ROOT, STRANGLER, Strangler, clean_env, main

DOCKERFILE = ROOT / "docker" / "Dockerfile"


def instructions():
    """[(INSTRUCTION, argument text)] with comments dropped and continuations joined."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


def stages():
    """[{"from": image (ARGs substituted), "name": alias, "ins": [(INSTR, args)]}]."""
    args, result = {}, []
    for ins, rest in instructions():
        if ins == "ARG" and not result:
            name, _, default = rest.partition("=")
            args[name] = default
        elif ins == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            result.append({"from": image, "name": alias, "ins": []})
        else:
            assert result, "%s before the first FROM" % ins
            result[-1]["ins"].append((ins, rest))
    return result


def runs(stage):
    return [rest for ins, rest in stage["ins"] if ins == "RUN"]


def pass1_build_args():
    """The build command scripts/test runs in pass 1: ["scripts/SCRIPT", ARGS...]."""
    text = (ROOT / "scripts" / "test").read_text()
    assert '"$SG_ROOT/scripts/$script" "$dir" "$@"' in text, \
        "scripts/test no longer builds with scripts/BUILD_SCRIPT"
    m = re.search(r'^test_pass "pass 1[^"]*" (.+?)(?: \|\|.*)?$', text, re.M)
    assert m, "pass 1 not found in scripts/test"
    words = shlex.split(m.group(1))
    return ["scripts/" + words[0]] + words[1:]


def test_two_stages_bookworm_then_slim():
    st = stages()
    assert len(st) == 2, [s["from"] for s in st]
    assert st[0]["from"] == "debian:bookworm" and st[0]["name"] == "build", st[0]
    assert st[1]["from"] == "debian:bookworm-slim", st[1]
    copies_from_build = [r for i, r in st[1]["ins"] if i == "COPY" and "--from=build" in r]
    assert copies_from_build == ["--from=build /src/build/strangler /usr/local/bin/strangler"], \
        copies_from_build


def test_build_stage_installs_the_ci_packages_and_runs_scripts_build_like_ci():
    build = stages()[0]
    assert ("WORKDIR", "/src") in build["ins"]
    r = runs(build)
    assert any('source scripts/lib.sh' in x and
               'sg_ensure_packages "${SG_BUILD_PACKAGES[@]}" "${SG_PGO_PACKAGES[@]}"' in x
               for x in r), r
    calls = [x for x in r if "scripts/build" in x]
    assert len(calls) == 1, r
    words = shlex.split(calls[0].split("&&")[0])
    assert words == pass1_build_args(), (words, pass1_build_args())
    assert words[0] == "scripts/build-release", "the image is not the release build: %s" % words


def test_runtime_stage_runs_as_non_root_with_the_config_in_etc():
    rt = stages()[1]
    ins = rt["ins"]
    users = [r for i, r in ins if i == "USER"]
    assert len(users) == 1, users
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) > 0, "USER must be a numeric non-root UID: %s" % users[0]
    assert any("useradd" in x and "--uid %s" % uid in x for x in runs(rt)), runs(rt)
    # USER comes after every RUN: nothing runs as root at start.
    last_run = max(n for n, (i, _) in enumerate(ins) if i == "RUN")
    assert [i for i, _ in ins].index("USER") > last_run
    assert ("COPY", "docker/strangler.yaml /etc/strangler/strangler.yaml") in ins, ins
    assert ("STOPSIGNAL", "SIGTERM") in ins
    assert ("ENTRYPOINT", '["/usr/local/bin/strangler"]') in ins
    assert ("CMD", '["-c", "/etc/strangler/strangler.yaml"]') in ins
    assert ("ENV", "STRANGLER_CONFIG=/etc/strangler/strangler.yaml") in ins
    hc = [r for i, r in ins if i == "HEALTHCHECK"]
    assert len(hc) <= 1
    if hc:
        assert ("COPY", "docker/healthcheck /usr/local/bin/strangler-healthcheck") in ins
        assert "/usr/local/bin/strangler-healthcheck" in hc[0]


def test_expose_documents_the_ports():
    lines = DOCKERFILE.read_text().splitlines()
    exposed = []
    for n, line in enumerate(lines):
        if line.startswith("EXPOSE "):
            exposed += line.split()[1:]
            assert lines[n - 1].startswith("#"), "EXPOSE at line %d has no comment" % (n + 1)
    assert sorted(exposed) == ["8080", "8443", "9901"], exposed
    # The default configuration uses 8080 and 9901.
    text = (ROOT / "docker" / "strangler.yaml").read_text()
    assert ":-0.0.0.0:8080}" in text and ":-0.0.0.0:9901}" in text


def _needed_packages(binary):
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    libs = [m.group(1) for m in re.finditer(r"=> (/\S+)", out)]
    assert "not found" not in out, out
    pkgs = set()
    for lib in libs:
        p = subprocess.run(["dpkg", "-S", os.path.realpath(lib)], capture_output=True, text=True)
        if p.returncode != 0:
            p = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True)
        assert p.returncode == 0, "no Debian package owns %s" % lib
        pkgs.add(p.stdout.split(":")[0])
    return pkgs


# Not libraries, but data the binary reads: the system trust store used by
# upstreams.*.tls when no `ca` is given.
DATA_PACKAGES = {"ca-certificates"}


def _runtime_library_packages():
    """The runtime stage's packages, less DATA_PACKAGES (which must be there)."""
    listed = set()
    for r in runs(stages()[1]):
        m = re.search(r"apt-get install -y --no-install-recommends (.+?)(?: &&|$)", r)
        if m:
            listed |= set(m.group(1).split())
    assert listed, "the runtime stage installs no package"
    assert DATA_PACKAGES <= listed, "runtime stage lacks %s" % sorted(DATA_PACKAGES - listed)
    return listed - DATA_PACKAGES


def test_runtime_packages_are_exactly_the_libraries_of_the_binary():
    listed = _runtime_library_packages()
    needed = _needed_packages(STRANGLER)
    needed.discard("libc6")        # in debian:bookworm-slim
    if any(p.startswith("libasan") for p in needed):
        # The sanitizer pass's binary links more (the sanitizer runtimes, and libevent
        # itself): every listed package must still be one it uses. The image's own
        # (unsanitized) build is compared exactly in test_build_context_builds_the_image_binary.
        assert listed <= needed, "runtime stage: %s, the binary needs: %s" % (sorted(listed),
                                                                              sorted(needed))
        return
    assert listed == needed, "runtime stage: %s, the binary needs: %s" % (sorted(listed),
                                                                          sorted(needed))


def _ignored(rel, rules):
    """.dockerignore semantics (last matching rule wins; a match on a parent counts)."""
    parts = rel.split("/")
    excluded = False
    for negate, rx in rules:
        for i in range(1, len(parts) + 1):
            if rx.fullmatch("/".join(parts[:i])):
                excluded = not negate
                break
    return excluded


def _dockerignore_rules():
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        rules.append((negate, re.compile(rx)))
    return rules


def _context_files():
    rules = _dockerignore_rules()
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for f in filenames:
            rel = f if rel_dir == "." else rel_dir + "/" + f
            if not _ignored(rel, rules):
                files.append(rel)
    return files


def test_build_context_builds_the_image_binary():
    files = _context_files()
    assert not [f for f in files if re.match(r"build(-[^/]*)?/", f)], "build trees in the context"
    for want in ("CMakeLists.txt", "LICENSE", "scripts/lib.sh", "scripts/build-release",
                 "scripts/pgo-train",
                 "tests/CMakeLists.txt", "docker/strangler.yaml", "docker/healthcheck", "src/main.c"):
        assert want in files, "%s is not in the build context" % want
    for st in stages():
        for ins, rest in st["ins"]:
            if ins == "COPY" and not rest.startswith("--from="):
                for src in rest.split()[:-1]:
                    if src != ".":
                        assert src in files, "COPY %s: not in the build context" % src
    build_cmd = [x for x in runs(stages()[0]) if "scripts/build" in x][0]
    with tempfile.TemporaryDirectory() as ctx:
        for rel in files:
            dst = Path(ctx) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ASAN_", "UBSAN_", "STRANGLER_"))}
        p = subprocess.run(["bash", "-o", "pipefail", "-c", build_cmd], cwd=ctx, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=600)
        assert p.returncode == 0, "the build stage's command failed:\n" + p.stdout[-4000:]
        binary = Path(ctx) / "build" / "strangler"  # COPY --from=build /src/build/strangler
        assert binary.exists()
        check = subprocess.run([str(binary), "--check", "-c", str(Path(ctx) / "docker" /
                                                                  "strangler.yaml")],
                               env=clean_env(MONOLITH_ADDR="127.0.0.1:3000"),
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        needed = _needed_packages(binary) - {"libc6"}
        listed = _runtime_library_packages()
        assert needed == listed, (sorted(needed), sorted(listed))


def test_healthcheck_script():
    script = ROOT / "docker" / "healthcheck"
    assert os.access(script, os.X_OK), "docker/healthcheck is not executable"
    env = clean_env(LISTEN_ADDR="127.0.0.1:0", ADMIN_ADDR="127.0.0.1:0", WORKERS="1",
                    MONOLITH_ADDR="127.0.0.1:9")
    with Strangler(ROOT / "docker" / "strangler.yaml", env) as px:
        ok = subprocess.run([str(script)], env=dict(env, STRANGLER_HEALTHCHECK_ADDR=px.admin),
                            timeout=10)
        assert ok.returncode == 0
        public = subprocess.run([str(script)],  # the proxy port answers 404 for /live
                                env=dict(env, STRANGLER_HEALTHCHECK_ADDR=px.addr("public")),
                                timeout=10)
        assert public.returncode == 1
        admin = px.admin
    down = subprocess.run([str(script)], env=dict(env, STRANGLER_HEALTHCHECK_ADDR=admin),
                          timeout=10)
    assert down.returncode == 1


if __name__ == "__main__":
    main(globals())
