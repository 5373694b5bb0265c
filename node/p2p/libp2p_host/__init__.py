"""The libp2p implementation of `transport.Host`: the only package that imports trio or
libp2p. `host.Libp2pHost` is its asyncio face; library exceptions are translated in `adapt`.
"""
