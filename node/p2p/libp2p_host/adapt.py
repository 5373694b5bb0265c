"""The libp2p boundary of `Libp2pHost`: building the host, multiaddrs, stream helpers.

Only trio-side code calls these. Importing this module undoes libp2p's import-time logging
setup (propagate=False, so its warnings went straight to stderr) to route them to the node's log.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from node.p2p.framing import FrameDecoder

log = logging.getLogger(__name__)

# `import libp2p` detaches its loggers from the root logger unless LIBP2P_DEBUG is set; the
# node's logging configuration should decide (libp2p's level stays at WARNING)
if not logging.getLogger("libp2p").handlers:
    logging.getLogger("libp2p").propagate = True
    # it logs every refused TCP dial attempt at ERROR (four a dial); a peer being offline is
    # routine here, and our callers get PeerUnreachable with the cause attached
    logging.getLogger("libp2p.transport.tcp.tcp").setLevel(logging.CRITICAL)

# the multiaddr package ships no type information: it stays `Any` at this boundary
_multiaddr: Any = importlib.import_module("multiaddr")

READ_CHUNK = 64 * 1024


class EndOfStream(Exception):
    """The stream ended before a whole frame; `pending` bytes of one were read."""

    def __init__(self, pending: int) -> None:
        super().__init__(f"stream ended with {pending} bytes of an unfinished frame")
        self.pending = pending


def remote_peer(stream: INetStream) -> str:
    """The Noise-authenticated peer id of the other end of `stream`."""
    return str(stream.muxed_conn.peer_id.to_base58())


async def reset_stream(stream: INetStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        try:
            await stream.reset()
        except Exception:  # already gone: nothing left to reset
            log.debug("stream reset failed", exc_info=True)


async def close_stream(stream: INetStream) -> None:
    with trio.move_on_after(1.0):
        try:
            await stream.close()
        except Exception:
            log.debug("stream close failed", exc_info=True)


async def read_frame(stream: INetStream, decoder: FrameDecoder) -> bytes:
    """Read until `decoder` yields one frame; raises FrameError or `EndOfStream`."""
    while True:
        try:
            data = await stream.read(READ_CHUNK)
        except EOFError:
            data = b""
        if not data:
            raise EndOfStream(decoder.pending)
        frames = decoder.feed(data)
        if frames:
            return frames[0]


def multiaddr_of(text: str) -> Any:
    try:
        return _multiaddr.Multiaddr(text)
    except Exception as exc:  # multiaddr raises a zoo of its own types
        raise ValueError(f"not a multiaddr: {text!r}") from exc


def parse_addrs(peer_id: str, addrs: list[str]) -> list[Any]:
    """Multiaddrs to dial `peer_id` at; a `/p2p/<id>` suffix must name that peer.

    Direct addresses lose that suffix; relayed ones (`.../p2p/RELAY/p2p-circuit`) keep or gain
    it, since the relay needs to know whom to connect to.
    """
    parsed: list[Any] = []
    for text in addrs:
        addr = multiaddr_of(text)
        if "/p2p-circuit" in text:
            head, _, tail = text.partition("/p2p-circuit")
            if tail not in ("", f"/p2p/{peer_id}"):
                raise ValueError(f"{text!r} does not lead to peer {peer_id}")
            if multiaddr_of(head).get_peer_id() is None:
                raise ValueError(f"{text!r} does not name its relay (/p2p/<id>)")
            parsed.append(multiaddr_of(f"{head}/p2p-circuit/p2p/{peer_id}"))
            continue
        named = addr.get_peer_id()
        if named is not None:
            if named != peer_id:
                raise ValueError(f"{text!r} names peer {named}, not {peer_id}")
            addr = addr.decapsulate(multiaddr_of(f"/p2p/{named}"))
        parsed.append(addr)
    return parsed


def build_host(seed: bytes) -> IHost:
    """A libp2p host for the Ed25519 key with this seed: TCP, Noise, yamux, one conn a peer."""
    private = Ed25519PrivateKey.from_bytes(seed)
    key_pair = KeyPair(private, private.get_public_key())
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        connection_config=ConnectionConfig(
            # without this, every connect() waits ~250 ms (happy-eyeballs fallback timer)
            max_connections_per_peer=1,
            # no connection floor: see _no_auto_dialing
            min_connections=0, auto_connect_interval=3600.0),
    )
    _no_auto_dialing(host)
    return host


def _no_auto_dialing(host: IHost) -> None:
    """Stop libp2p dialing peerstore entries on its own to keep ~150 connections open.

    Its AutoConnector does that every 10-30 s and after each disconnect; a market node dials
    a peer when it has something to say (a closed port would otherwise be dialed forever, and
    `disconnect()` undone). No ConnectionConfig value turns it off without also pruning.
    """
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is not None:
        async def dial_nobody() -> None:
            return None

        connector.maybe_connect = dial_nobody
