#!/usr/bin/env bash
# Set up .venv (first run only), then start the main job: `p2pmarket devnet`, a whole local
# market on loopback (regtest devchain, bootstrap, seller, buyer and arbiter nodes, sample
# listings) kept in .devnet/. It opens the TUI on the buyer when this installation has the `tui`
# verb and a terminal; otherwise it runs in the foreground until Ctrl-C. Ctrl-C stops every
# process it started; running this again resumes the same market. Extra arguments go to devnet
# (e.g. `--nodes 2` for two more sellers, `--no-tui`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
p2pmarket_venv

args=(--dir .devnet)
if ! .venv/bin/p2pmarket tui --help >/dev/null 2>&1; then
    echo "==> no \`p2pmarket tui\` in this installation yet: running the devnet without it" >&2
    args+=(--no-tui)
elif [ ! -t 0 ] || [ ! -t 1 ]; then
    args+=(--no-tui)  # no terminal for the TUI
fi
echo "==> starting the devnet in .devnet (Ctrl-C stops it)" >&2
exec .venv/bin/p2pmarket devnet "${args[@]}" "$@"
