"""The `p2pmarket` command line: verbs, their shared helpers and the devnet.
Heavy packages (node, dht, escrow, tui) are imported lazily, inside the verb that needs them.
"""
