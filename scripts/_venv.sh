# Sourced by quickstart.sh and test.sh (not run on its own): make sure .venv exists and holds
# this checkout installed with its dev extras. The install is skipped while the stamp file
# holds the sha256 of pyproject.toml, so a second run costs nothing and needs no network.
# Expects the current directory to be the repo root. Set PYTHON to pick the interpreter.

p2pmarket_venv() {
    local python="${PYTHON:-python3}"
    local stamp=".venv/.p2pmarket-installed"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found; install Python 3.11 or newer (or set PYTHON)" >&2
        return 1
    fi
    if [ ! -x .venv/bin/python ]; then
        if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "error: p2pmarket needs Python >= 3.11; $python is $("$python" -V 2>&1)" >&2
            return 1
        fi
        echo "==> creating .venv with $("$python" -V 2>&1)" >&2
        "$python" -m venv .venv
    fi
    local want have=""
    want="$(.venv/bin/python -c 'import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' pyproject.toml)"
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    if [ "$want" != "$have" ]; then
        echo "==> installing p2pmarket and its dev tools into .venv" >&2
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -e ".[dev]"
        printf '%s\n' "$want" >"$stamp"
    fi
}
