"""The libp2p implementation of `transport.Host`: an asyncio face over py-libp2p run by trio.

libp2p runs as a trio guest on the node's asyncio loop (`runtime`); its trio side is
`engine`. Nothing trio or libp2p crosses this module's public API, exceptions included.

Messages (`/p2pmarket/msg/1.0.0`): `send()` writes one length-prefixed frame on a long-lived
stream per peer; frames to one peer go out in call order, one at a time, and if one fails every
frame queued behind it fails too (so none overtakes it). Incoming frames arrive through
`incoming()`, tagged with the Noise-authenticated remote peer id. The asyncio queue behind it is
bounded by credits: when the consumer lags, the trio side stops reading (yamux flow control then
stalls the sender) instead of dropping frames. Note that a py-libp2p yamux writer gives up after
5 s without window, so a consumer stalled for longer breaks the sender's stream (`send()` fails).
With `set_frame_handler` (the messenger's short path, `transport.DirectHost`) frames skip that
queue: the trio reader calls the handler itself, and what the handler `send_soon`s is queued
for writing without crossing back over.

Other protocols (`/p2pmarket/blob/1.0.0`): one request frame, one answer frame, on a new stream.

Circuit relay v2 (`relay`): with `relay_hop` the host relays for others (a bootstrap
node); with `relay_via` it says it cannot accept connections, holds a reservation on those
relays and `advertised_addrs()` are its `/p2p/RELAY/p2p-circuit` addresses only. Peers known
only by such addresses are dialed through the relay; the connection is then an ordinary one
(Noise end to end, yamux), so messages, acks and requests work over it unchanged.

Misbehaviour on incoming streams (oversized or truncated frames, more than `frame_rate`
frames a second beyond a `frame_burst`) resets that stream, counts in `violations[peer]` and
calls `on_violation(peer, reason)`; what to do about the peer is the caller's decision.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import TYPE_CHECKING, Any

from node.p2p.framing import MAX_FRAME, encode_frame
from node.p2p.ids import public_of
from node.p2p.libp2p_host.adapt import multiaddr_of, parse_addrs
from node.p2p.libp2p_host.engine import Engine, EngineConfig
from node.p2p.libp2p_host.relay import RelayHopLimits
from node.p2p.libp2p_host.runtime import RuntimeStopped, TrioRuntime, in_trio_task, wait_bridged
from node.p2p.transport import (
    MSG_PROTOCOL,
    FrameHandler,
    P2PError,
    PeerUnreachable,
    RemoteError,
    RequestHandler,
    RequestTimeout,
    ViolationHook,
)
from p2pmarket.identity import Identity

if TYPE_CHECKING:
    import trio

__all__ = ["Libp2pHost", "P2PError", "PeerUnreachable", "RemoteError", "RequestTimeout",
           "RuntimeStopped", "MAX_RESPONSE", "RelayHopLimits"]

log = logging.getLogger(__name__)

MAX_RESPONSE = 3 * 1024 * 1024
STOP_TIMEOUT = 15.0


class _Incoming:
    """`async for peer_id, payload in host.incoming()`; ends when the host stops."""

    def __init__(self, host: Libp2pHost) -> None:
        self._host = host
        self._queue = host._inbox

    def __aiter__(self) -> _Incoming:
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # for any other iterator over the same run
            raise StopAsyncIteration
        if self._queue is self._host._inbox:
            self._host._credit()
        return item


def _check_port_free(host: str, port: int) -> None:
    """Refuse a TCP port another process listens on.

    py-libp2p 0.8 listens with SO_REUSEPORT (for hole punching), so on Linux a second node on
    the same port would start "fine" and share incoming connections with the first one.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise P2PError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


class Libp2pHost:
    """A libp2p host (TCP, Noise, yamux) under the node's Ed25519 identity."""

    def __init__(self, identity: Identity, host: str = "127.0.0.1", port: int = 0, *,
                 max_frame: int = MAX_FRAME, max_response: int = MAX_RESPONSE,
                 frame_rate: float = 1000.0, frame_burst: float = 5000.0,
                 inbox_size: int = 1024, dial_timeout: float = 10.0,
                 on_violation: ViolationHook | None = None,
                 relay_hop: RelayHopLimits | None = None,
                 relay_via: tuple[str, ...] = ()) -> None:
        self.identity = identity
        self.peer_id: str = identity.peer_id
        self.max_frame, self.max_response = max_frame, max_response
        self.on_violation = on_violation
        self.violations: Counter[str] = Counter()
        self.handler_tasks: set[asyncio.Task[Any]] = set()
        self.frame_handler: FrameHandler | None = None
        family = "ip6" if ":" in host else "ip4"
        self._bind = (host, port)
        self._config = EngineConfig(
            seed=identity.seed(), listen=multiaddr_of(f"/{family}/{host}/tcp/{port}"),
            max_frame=max_frame, max_response=max_response, frame_rate=frame_rate,
            frame_burst=frame_burst, inbox_size=inbox_size, dial_timeout=dial_timeout,
            relay_hop=relay_hop, relay_via=tuple(relay_via))
        for relay_addr in relay_via:
            if multiaddr_of(relay_addr).get_peer_id() is None:
                raise ValueError(f"a relay address needs /p2p/<relay id>: {relay_addr!r}")
        self._handlers: dict[str, RequestHandler] = {}
        self._known: dict[str, list[Any]] = {}  # peer id -> multiaddrs
        self._pending: set[asyncio.Future[Any]] = set()
        self._inbox: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self._addrs: list[str] = []
        self._runtime: TrioRuntime | None = None
        self._engine: Engine | None = None
        self._exited: asyncio.Future[None] | None = None
        self._stopping: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        state = "running" if self._engine is not None else "stopped"
        return f"Libp2pHost({self.peer_id}, {state}, {' '.join(self._addrs)})"

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join (or start) the loop's trio guest run and listen; returns once listening."""
        if self._engine is not None:
            raise P2PError("host already started")
        _check_port_free(*self._bind)
        loop = asyncio.get_running_loop()
        runtime = TrioRuntime.for_running_loop()
        await runtime.acquire()
        engine = Engine(runtime, self._config, self, self._handlers, self._known)
        self._runtime, self._engine = runtime, engine
        self._exited = loop.create_future()
        try:
            root = runtime.nursery
            peer_id, addrs = await runtime.call(root, root.start, engine.run,
                                                pending=self._pending)
            if peer_id != self.identity.peer_id:  # the key derivation must agree with libp2p
                raise P2PError(f"libp2p derived peer id {peer_id}, expected {self.peer_id}")
        except BaseException:
            if self._engine is engine:
                await self._teardown(runtime, engine)
            raise
        if self._engine is not engine:  # stop() ran while we were starting
            raise RuntimeStopped("the host was stopped while starting")
        self._addrs = addrs
        log.info("libp2p host %s listening on %s", self.peer_id, " ".join(addrs))

    async def stop(self) -> None:
        """Close the libp2p host and leave the trio run; pending calls fail. Idempotent."""
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
            return
        runtime, engine = self._runtime, self._engine
        if runtime is None or engine is None:
            return
        self._stopping = asyncio.get_running_loop().create_future()
        try:
            await self._teardown(runtime, engine)
        finally:
            self._stopping.set_result(None)
            self._stopping = None

    async def _teardown(self, runtime: TrioRuntime, engine: Engine) -> None:
        runtime.run_sync_soon_quiet(engine.stop)
        exited = self._exited
        if exited is not None and runtime.running:
            try:
                await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT)
            except TimeoutError:
                log.error("libp2p host %s did not stop within %.0f s", self.peer_id,
                          STOP_TIMEOUT)
        for fut in list(self._pending):
            fut.cancel()
        tasks = list(self.handler_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._inbox.put_nowait(None)
        self._inbox = asyncio.Queue()
        self._addrs = []
        self._runtime = self._engine = self._exited = None
        await runtime.release()
        log.info("libp2p host %s stopped", self.peer_id)

    # -- called by the engine, through TrioRuntime.post -----------------------------------------

    def frame_received(self, peer_id: str, payload: bytes) -> None:
        self._inbox.put_nowait((peer_id, payload))

    def violation(self, peer_id: str, reason: str) -> None:
        self.violations[peer_id] += 1
        hook = self.on_violation
        if hook is not None:
            try:
                hook(peer_id, reason)
            except Exception:
                log.exception("on_violation hook failed")

    def exited(self) -> None:
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)

    def _credit(self) -> None:
        if self._runtime is not None and self._engine is not None:
            self._runtime.run_sync_soon_quiet(self._engine.credit)

    # -- addresses and peers --------------------------------------------------------------------

    def listen_addrs(self) -> list[str]:
        """Bound addresses (the real port when started with port 0), without `/p2p/...`."""
        return list(self._addrs)

    def advertised_addrs(self) -> list[str]:
        """The addresses others should dial us at (what our `peer` record publishes).

        With `relay_via` the node says it cannot accept connections: only its addresses
        through relays that hold a reservation for it now (possibly none). Otherwise its
        bound addresses.
        """
        if not self._config.relay_via:
            return self.listen_addrs()
        return self._engine.relayed_addrs() if self._engine is not None else []

    def relay_reservations(self) -> int:
        """Peers holding a reservation on this host's relay hop (0 when it is none)."""
        return self._engine.relay_reservations() if self._engine is not None else 0

    def add_peer(self, peer_id: str, addrs: list[str]) -> None:
        """Set the addresses to dial `peer_id` at (they replace earlier ones for that peer)."""
        public_of(peer_id)  # raises PeerIdError (a ValueError)
        self._known[peer_id] = parse_addrs(peer_id, addrs)

    def connected_peers(self) -> list[str]:
        return self._engine.connected_peers() if self._engine is not None else []

    async def disconnect(self, peer_id: str) -> None:
        public_of(peer_id)
        runtime, engine = self._running()
        await runtime.call(self._nursery(engine), engine.disconnect, peer_id,
                           pending=self._pending)

    # -- messages -------------------------------------------------------------------------------

    async def send(self, peer_id: str, payload: bytes) -> None:
        """Write one frame to `peer_id`; raises PeerUnreachable if it cannot be dialed/written.

        Returns once the frame is written to the stream, not when the peer has read it.
        """
        await wait_bridged(self.send_soon(peer_id, payload))

    def send_soon(self, peer_id: str, payload: bytes) -> asyncio.Future[None]:
        """Queue one frame for `peer_id`; the future settles once it is written (or failed).

        From a frame handler (which runs inside the trio run) the frame is queued at once; from
        asyncio code it crosses over through the trio token, in call order.
        """
        frame = encode_frame(payload, self.max_frame)  # FrameTooLarge: the caller's bug
        public_of(peer_id)
        runtime, engine = self._running()
        fut: asyncio.Future[None] = runtime.loop.create_future()
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        if in_trio_task():
            engine.enqueue(peer_id, frame, fut)  # settles `fut` itself on failure
            return fut
        try:
            runtime.run_sync_soon(engine.enqueue, peer_id, frame, fut)
        except RuntimeStopped:
            fut.cancel()
            raise
        return fut

    def incoming(self) -> _Incoming:
        return _Incoming(self)

    def set_frame_handler(self, handler: FrameHandler | None) -> None:
        """Frames go to `handler(peer_id, payload)`, called inside the trio reader (see
        `transport.DirectHost`), instead of `incoming()`; no queue, no crossing per frame."""
        self.frame_handler = handler

    # -- request / response ---------------------------------------------------------------------

    def set_request_handler(self, protocol: str, handler: RequestHandler) -> None:
        """Answer requests on `protocol` with `await handler(peer_id, payload)` (asyncio side)."""
        if protocol == MSG_PROTOCOL:
            raise ValueError(f"{MSG_PROTOCOL} carries messages, not requests")
        self._handlers[protocol] = handler
        if self._runtime is not None and self._engine is not None:
            self._runtime.run_sync_soon_quiet(self._engine.register, protocol)

    async def request(self, peer_id: str, protocol: str, payload: bytes,
                      timeout: float = 10.0, max_response: int = MAX_RESPONSE) -> bytes:
        """One frame to `peer_id` on a new `protocol` stream and its one-frame answer.

        Raises PeerUnreachable (cannot dial), RequestTimeout (no answer within `timeout`),
        RemoteError (protocol refused, stream reset or closed early, answer over `max_response`).
        """
        if protocol == MSG_PROTOCOL:
            raise ValueError(f"{MSG_PROTOCOL} carries messages, not requests")
        frame = encode_frame(payload, self.max_frame)
        public_of(peer_id)
        runtime, engine = self._running()
        return await runtime.call(self._nursery(engine), engine.request, peer_id, protocol,
                                  frame, timeout, max_response, pending=self._pending)

    # -- helpers --------------------------------------------------------------------------------

    def _running(self) -> tuple[TrioRuntime, Engine]:
        if self._runtime is None or self._engine is None or self._stopping is not None:
            raise RuntimeStopped("the host is not running")
        return self._runtime, self._engine

    @staticmethod
    def _nursery(engine: Engine) -> trio.Nursery:
        if engine.nursery is None:
            raise RuntimeStopped("the host is not running")
        return engine.nursery

    def _trio_side(self) -> tuple[TrioRuntime, Any]:
        """Benchmark hook: the trio runtime and this host's libp2p `IHost` (use it from trio)."""
        runtime, engine = self._running()
        return runtime, engine.host

    async def _send_raw(self, peer_id: str, data: bytes) -> None:
        """Test hook: write `data` as is on a fresh message stream to `peer_id`, then close it."""
        runtime, engine = self._running()
        await runtime.call(self._nursery(engine), engine.send_raw, peer_id, data,
                           pending=self._pending)
