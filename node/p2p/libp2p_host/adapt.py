"""The libp2p boundary of `Libp2pHost`: building the host, multiaddrs, stream helpers, and
`LIBP2P_ERRORS`, the one table turning trio, libp2p and multiaddr exceptions into `P2PError`s.

Only trio-side code calls these. Each library call that a peer or the network can make fail
(dials, streams, relays, multiaddrs) sits in `map_libp2p_errors()`; what the table does not
know (a bug: TypeError, AttributeError...) propagates unchanged.
Catch-alls are left only where one peer or one callback must not take the host down; they log
with a traceback and carry on: `Engine.run` (one host in the shared trio run), `Engine._writer`
(one peer's queue), `Engine._serve_messages` and `Engine._serve_request` (one incoming stream),
the node's own callbacks (`Engine._answer`'s request handler, `engine._hand_over`'s frame
handler, `Libp2pHost.violation`'s hook), and `Engine.enqueue` and `TrioRuntime._run_call`,
which settle the asyncio side's future with a `P2PError` instead.
Importing this module undoes libp2p's import-time logging setup (propagate=False, so its
warnings went straight to stderr) to route them to the node's log.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.host.exceptions import ConnectionFailure, StreamFailure
from libp2p.io.exceptions import IOException
from libp2p.network.config import ConnectionConfig
from libp2p.network.exceptions import SwarmException
from libp2p.network.stream.exceptions import StreamError
from libp2p.protocol_muxer.exceptions import (
    MultiselectClientError,
    MultiselectCommunicatorError,
    MultiselectError,
)
from libp2p.relay.circuit_v2.exceptions import RelayError
from libp2p.security.exceptions import HandshakeFailure, SecurityError
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.exceptions import MuxedConnError, MuxedStreamError
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.exceptions import OpenConnectionError, UpgradeFailure

from node.p2p.framing import FrameDecoder
from node.p2p.transport import (
    AddressError,
    P2PError,
    PeerUnreachable,
    RemoteError,
    RequestTimeout,
    StreamClosed,
)

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
_multiaddr_errors: Any = importlib.import_module("multiaddr.exceptions")

# library exception -> ours; the first entry the exception is an instance of wins, so a
# subclass must come before its base (TimeoutError before OSError, everything before the last)
LIBP2P_ERRORS: Final[Mapping[type[Exception], type[P2PError]]] = MappingProxyType({
    # our own deadlines (trio.fail_after) and the library's
    trio.TooSlowError: RequestTimeout,
    TimeoutError: RequestTimeout,
    # the stream, or the connection under it, went away mid-exchange
    StreamError: StreamClosed,        # StreamReset, StreamEOF, StreamClosed (net streams)
    MuxedStreamError: StreamClosed,   # yamux and mplex streams: reset, EOF, closed
    IOException: StreamClosed,        # raw connections, msgio, Noise frames, incomplete reads
    trio.ClosedResourceError: StreamClosed,
    trio.BrokenResourceError: StreamClosed,
    # the connection is up but the peer would not speak the protocol
    StreamFailure: RemoteError,
    MultiselectClientError: RemoteError,
    MultiselectError: RemoteError,
    MultiselectCommunicatorError: RemoteError,
    # no connection: dialing, upgrading (Noise, yamux), relaying
    SwarmException: PeerUnreachable,  # SwarmDialAllFailedError
    ConnectionFailure: PeerUnreachable,
    OpenConnectionError: PeerUnreachable,
    UpgradeFailure: PeerUnreachable,
    HandshakeFailure: PeerUnreachable,  # NoiseFailure and the other handshakes
    SecurityError: PeerUnreachable,
    MuxedConnError: PeerUnreachable,  # yamux/mplex connection gone (MuxedConnUnavailable)
    RelayError: PeerUnreachable,
    OSError: PeerUnreachable,         # sockets; the relay transport's ConnectionError
    # multiaddr's own family (parse and lookup errors)
    _multiaddr_errors.Error: AddressError,
    # whatever else libp2p raises on purpose
    BaseLibp2pError: P2PError,
})


def _error_type(exc: BaseException) -> type[P2PError] | None:
    for library_type, our_type in LIBP2P_ERRORS.items():
        if isinstance(exc, library_type):
            return our_type
    return None


@contextlib.contextmanager
def map_libp2p_errors(context: str = "") -> Iterator[None]:
    """Re-raise a library exception as its `LIBP2P_ERRORS` type, chained (`from exc`);
    anything else propagates unchanged. `context` prefixes the message.

    A group of exactly one exception (trio nurseries make those) counts as that exception.
    """
    try:
        yield
    except Exception as exc:
        inner: BaseException = exc
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        to_exc = _error_type(inner)
        if to_exc is None:
            raise
        raise to_exc(f"{context}: {inner!r}" if context else repr(inner)) from inner


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
    """Reset `stream`, best effort (one already gone has nothing left to reset)."""
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        try:
            with map_libp2p_errors():
                await stream.reset()
        except P2PError:
            log.debug("stream reset failed", exc_info=True)


async def close_stream(stream: INetStream) -> None:
    """Close `stream`, best effort (the peer may have reset it already)."""
    with trio.move_on_after(1.0):
        try:
            with map_libp2p_errors():
                await stream.close()
        except P2PError:
            log.debug("stream close failed", exc_info=True)


async def read_frame(stream: INetStream, decoder: FrameDecoder) -> bytes:
    """Read until `decoder` yields one frame; raises FrameError, `EndOfStream` or
    `StreamClosed` (a reset)."""
    while True:
        with map_libp2p_errors():
            try:
                data = await stream.read(READ_CHUNK)
            except EOFError:  # libp2p's StreamEOF: the peer closed its side
                data = b""
        if not data:
            raise EndOfStream(decoder.pending)
        frames = decoder.feed(data)
        if frames:
            return frames[0]


def multiaddr_of(text: str) -> Any:
    """`text` as a multiaddr; raises AddressError (a ValueError)."""
    with map_libp2p_errors(f"not a multiaddr: {text!r}"):
        return _multiaddr.Multiaddr(text)


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
                raise AddressError(f"{text!r} does not lead to peer {peer_id}")
            if multiaddr_of(head).get_peer_id() is None:
                raise AddressError(f"{text!r} does not name its relay (/p2p/<id>)")
            parsed.append(multiaddr_of(f"{head}/p2p-circuit/p2p/{peer_id}"))
            continue
        named = addr.get_peer_id()
        if named is not None:
            if named != peer_id:
                raise AddressError(f"{text!r} names peer {named}, not {peer_id}")
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
