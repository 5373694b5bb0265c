#!/usr/bin/env bash
# Set up .venv (first run only), then run the tests, ruff and mypy. Extra arguments go to
# pytest (e.g. `./scripts/test.sh tests/unit -x`). Every step runs; the exit code is non-zero
# if any of them failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
p2pmarket_venv

failed=()
step() {
    local name="$1"
    shift
    echo "==> $name" >&2
    if ! "$@"; then
        failed+=("$name")
    fi
}
step pytest .venv/bin/python -m pytest "$@"
step ruff .venv/bin/ruff check .
step mypy .venv/bin/mypy

if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all checks passed" >&2
