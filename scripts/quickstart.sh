#!/usr/bin/env bash
# Set up .venv (first run only) and start the main job. For now that is a development node
# in .devnet/node: create it once, then print its peer id. `p2pmarket devnet` replaces this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
p2pmarket_venv

datadir=.devnet/node
if [ ! -f "$datadir/keystore" ]; then
    # a throwaway development identity: no passphrase, said so on every start
    .venv/bin/p2pmarket init --datadir "$datadir" --insecure-no-passphrase >/dev/null
fi
echo "peer id of the development node in $datadir:"
.venv/bin/p2pmarket id --datadir "$datadir"
echo "next: .venv/bin/p2pmarket run --datadir $datadir"
echo "(once it exists, \`p2pmarket devnet\` will replace this: a whole local market on loopback)"
