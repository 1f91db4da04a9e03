# shellcheck shell=bash
# Shared functions of the scripts in scripts/ (build, build-release, test, demo, fuzz) and
# of the Dockerfile's build stage. Source it, don't run it.
#
# Sets SG_ROOT to the repository root (computed from this file's location, so
# the scripts work from any cwd) and provides:
#   sg_log / sg_die            progress and fatal messages on stderr
#   sg_usage                   print the script's header comment (its --help)
#   sg_build_dir_arg "$@"      --help, or refuse an option where a build directory belongs
#   sg_as_root CMD...          run CMD as root (directly, or through sudo)
#   sg_ensure_packages PKG...  apt-get install only the packages that are missing
#   sg_ensure_all_packages     everything needed to build, test and demo
#   sg_configure DIR ARGS...   cmake configure DIR (RelWithDebInfo, -Werror, no LTO or PGO)
#   sg_build DIR [TARGET...]   cmake --build with one job per CPU

SG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
export SG_ROOT
# The script that sourced this file, absolute: the scripts cd to SG_ROOT before they read it.
SG_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[1]:-$0}")" && pwd -P)/$(basename "${BASH_SOURCE[1]:-$0}")"

# Python with Debian's python3-* modules (h2, websockets). A python3 earlier
# on PATH (pyenv, venv) would not have them.
SG_PYTHON=/usr/bin/python3

# Build toolchain and libraries. libc6-dev is only a Recommends of gcc, so it
# is listed explicitly for --no-install-recommends installs.
SG_BUILD_PACKAGES=(
    cmake make gcc libc6-dev pkg-config
    libevent-dev libnghttp2-dev libssl-dev libyaml-dev libjansson-dev liburing-dev libcmocka-dev node-llhttp
)
# Tools the integration tests and the demo run. python3-yaml: the deploy
# tests (tests/deploy) parse the configs and the Helm chart's output. clang:
# the libFuzzer targets (scripts/fuzz, scripts/test's fuzz pass).
# nghttp2-server: nghttpd, an HTTP/2 upstream in test_h2_upstream.py.
SG_TOOL_PACKAGES=(
    curl python3 python3-h2 python3-websockets nghttp2-client nghttp2-server ca-certificates
    openssl python3-yaml clang
)

# What scripts/build-release needs beyond SG_BUILD_PACKAGES: scripts/pgo-train runs
# proxy traffic from h2load through the instrumented binary, with its own Python upstream.
SG_PGO_PACKAGES=(python3 nghttp2-client)

sg_log() { printf '==> %s\n' "$*" >&2; }
sg_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# sg_usage: the script's header comment, the lines after "#!" up to the first line that is
# not a comment, without their "# ": what every script prints for --help.
sg_usage() { awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$SG_SCRIPT"; }

# sg_build_dir_arg "$@": the first argument of scripts/build and scripts/build-release is a
# build directory; -h/--help prints the usage and exits, another option is refused.
sg_build_dir_arg() {
    case "${1:-}" in
        -h | --help) sg_usage; exit 0 ;;
        -*) sg_die "the first argument is the build directory, not '$1' (try --help)" ;;
    esac
}

sg_jobs() {
    if [[ -n "${SG_JOBS:-}" ]]; then
        printf '%s\n' "$SG_JOBS"
    else
        nproc 2>/dev/null || echo 2
    fi
}

sg_as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -- "$@"
    else
        sg_die "need root to run '$*': run this script as root, or install and configure sudo"
    fi
}

# True when dpkg considers PKG installed (status "... ok installed").
sg_pkg_installed() {
    local status
    status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" || return 1
    [[ "$status" == *" ok installed" ]]
}

sg_ensure_packages() {
    command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 ||
        sg_die "dpkg/apt-get not found: these scripts expect Debian 12 (bookworm)"
    local pkg missing=()
    for pkg in "$@"; do
        sg_pkg_installed "$pkg" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        sg_log "packages: nothing to install (all $# required packages are present)"
        return 0
    fi
    sg_log "packages: installing ${missing[*]}"
    sg_as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    sg_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
    for pkg in "${missing[@]}"; do
        sg_pkg_installed "$pkg" || sg_die "package $pkg is still not installed"
    done
}

# npm: the Helm chart test (tests/deploy) fetches helm from the npm registry.
# Debian's npm package brings Debian's nodejs; NodeSource's nodejs ships its
# own npm and conflicts with Debian's npm package, so npm is asked for only
# when no npm is on PATH.
sg_ensure_all_packages() {
    local extra=()
    command -v npm >/dev/null 2>&1 || extra+=(npm)
    sg_ensure_packages "${SG_BUILD_PACKAGES[@]}" "${SG_PGO_PACKAGES[@]}" "${SG_TOOL_PACKAGES[@]}" \
        "${extra[@]}"
}

# sg_build_dir DIR: DIR itself if absolute, else relative to the repository root.
sg_build_dir() {
    if [[ "$1" == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$SG_ROOT/$1"; fi
}

# sg_configure BUILD_DIR [extra cmake args...]
sg_configure() {
    local dir="$1"
    shift
    cmake -S "$SG_ROOT" -B "$(sg_build_dir "$dir")" \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DSTRANGLER_WERROR=ON \
        -DSTRANGLER_TESTS=ON \
        -DSTRANGLER_LTO=OFF \
        -DSTRANGLER_PGO=OFF \
        "$@"
}

# sg_build BUILD_DIR [target...]
sg_build() {
    local dir="$1" target
    shift
    local args=()
    for target in "$@"; do
        args+=(--target "$target")
    done
    cmake --build "$(sg_build_dir "$dir")" --parallel "$(sg_jobs)" "${args[@]}"
}
