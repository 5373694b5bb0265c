"""A loopback Esplora-compatible regtest chain for the devnet and the tests: it accepts a
transaction only if Bitcoin Core's consensus library validates every input.
"""
