#!/usr/bin/env bash
# Set up everything fastxfer needs on a fresh machine, then run a job.
#   scripts/dev.sh demo   # venv + packages, then a round trip through an embedded S3 server
#   scripts/dev.sh test   # venv + packages (+ dev tools), then the test suite
#   scripts/dev.sh bench  # venv + benchmark peers, then the benchmark suite
# Idempotent: a second run reuses .venv and skips what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-demo}"
shift || true

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "fastxfer needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi

need_debs=()
command -v gpg >/dev/null 2>&1 || need_debs+=(gnupg)  # duplicity runs `gpg --version` at start
if [ "${#need_debs[@]}" -gt 0 ] && [ "$job" = test ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "${need_debs[@]}" >/dev/null
fi

extras="."
case "$job" in
    test) extras=".[dev]" ;;
    bench) extras=".[dev,bench]" ;;
esac
stamp=".venv/.installed-$(echo "$extras" | tr -c 'a-z' '_')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$extras"
    if [ "$job" != demo ]; then
        # The duplicity backend's tests run real duplicity 3.2.1: its wheel
        # bundles librsync; --no-deps skips ~110 cloud SDK packages it never
        # needs with fastxfer's backend (docs: duplicity-contract.md).
        .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
            "duplicity==3.2.1" fasteners
    fi
    touch "$stamp"
fi

case "$job" in
    demo) exec .venv/bin/fastxfer demo "$@" ;;
    test) exec .venv/bin/python -m pytest "$@" ;;
    bench) exec .venv/bin/python -m benchmarks.run "$@" ;;
    *) echo "usage: scripts/dev.sh demo|test|bench [args...]" >&2; exit 2 ;;
esac
