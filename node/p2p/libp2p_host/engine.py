"""The trio side of `Libp2pHost`: the libp2p host, its stream handlers, writers and requests.

Runs inside the shared trio guest run (`runtime`); `host.Libp2pHost` is its asyncio face.
libp2p and trio exceptions become `transport` errors here (`adapt.map_libp2p_errors`), before
anything crosses over; the catch-alls left are listed in `adapt`'s docstring.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PERMANENT_ADDR_TTL

from node.p2p.framing import FrameDecoder, FrameError, FrameTooLarge, encode_frame
from node.p2p.libp2p_host.adapt import (
    READ_CHUNK,
    EndOfStream,
    build_host,
    close_stream,
    map_libp2p_errors,
    read_frame,
    remote_peer,
    reset_stream,
)
from node.p2p.libp2p_host.limits import PeerBuckets
from node.p2p.libp2p_host.relay import RESERVE_TIMEOUT, Relay, RelayHopLimits, is_circuit
from node.p2p.libp2p_host.runtime import RuntimeStopped, TrioRuntime
from node.p2p.transport import (
    MSG_PROTOCOL,
    FrameHandler,
    P2PError,
    PeerUnreachable,
    RemoteError,
    RequestHandler,
    RequestTimeout,
)

log = logging.getLogger(__name__)

WRITE_TIMEOUT = 10.0            # one frame onto a stream (yamux itself gives up after 5 s)
NEGOTIATE_TIMEOUT = 10.0        # multistream-select on a new stream
REQUEST_READ_TIMEOUT = 10.0     # a requester must send its one frame within this
CLOSE_TIMEOUT = 5.0             # libp2p host close on stop
IDLE_WRITER_SECONDS = 120.0     # an outgoing message stream unused this long is closed
MAX_MSG_STREAMS_PER_PEER = 4    # a peer needs one; a few allow for reopen races


@dataclass(frozen=True, slots=True)
class EngineConfig:
    seed: bytes
    listen: Any  # a multiaddr.Multiaddr
    max_frame: int
    max_response: int
    frame_rate: float
    frame_burst: float
    inbox_size: int
    dial_timeout: float
    relay_hop: RelayHopLimits | None = None  # serve as a circuit relay v2 hop
    relay_via: tuple[str, ...] = ()          # relays to hold a reservation on


class Sink(Protocol):
    """What the engine tells the asyncio side (always through `TrioRuntime.post`)."""

    handler_tasks: set[asyncio.Task[Any]]
    frame_handler: FrameHandler | None

    def frame_received(self, peer_id: str, payload: bytes) -> None: ...

    def violation(self, peer_id: str, reason: str) -> None: ...

    def exited(self) -> None: ...


class _Outbound:
    """The long-lived outgoing message stream to one peer and the frames queued for it."""

    __slots__ = ("peer_id", "peer", "send", "recv", "stream")

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self.peer = ID.from_base58(peer_id)
        self.send, self.recv = trio.open_memory_channel[tuple[bytes, asyncio.Future[None]]](
            math.inf)
        self.stream: INetStream | None = None


class Engine:
    """The trio side of one `Libp2pHost`: its libp2p host and every task serving it."""

    def __init__(self, runtime: TrioRuntime, config: EngineConfig, sink: Sink,
                 handlers: dict[str, RequestHandler], known: dict[str, list[Any]]) -> None:
        self.runtime, self.config, self.sink = runtime, config, sink
        self.handlers = handlers      # shared with the asyncio side: protocol -> handler
        self.known = known            # shared with the asyncio side: peer id -> addresses
        self.host: IHost | None = None
        self.relay: Relay | None = None
        self.nursery: trio.Nursery | None = None
        self._stop = trio.Event()
        self._credits = trio.Semaphore(config.inbox_size)
        self._buckets = PeerBuckets(config.frame_rate, config.frame_burst)
        self._msg_streams: dict[str, int] = {}
        self._outbound: dict[str, _Outbound] = {}  # by peer id

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, *, task_status: Any) -> None:
        """Listen, report (peer id, listen addresses), serve until `stop()`, close the host.

        `task_status` is trio's `TaskStatus[tuple[str, list[str]]]` (the installed trio-typing
        stubs, which mypy prefers over trio's own hints, predate that name).
        """
        started = False
        try:
            host = self.host = build_host(self.config.seed)
            host.set_stream_handler(TProtocol(MSG_PROTOCOL), self._serve_messages)
            for protocol in self.handlers:
                self.register(protocol)
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                async with host.run(listen_addrs=[self.config.listen]):
                    addrs = [str(a) for a in host.get_transport_addrs()]
                    if not addrs:
                        raise P2PError(f"could not listen on {self.config.listen}")
                    await self._start_relay(host, nursery)
                    task_status.started((host.get_id().to_base58(), addrs))
                    started = True
                    await self._stop.wait()
                    with trio.move_on_after(CLOSE_TIMEOUT) as cs:
                        await host.close()
                    if cs.cancelled_caught:
                        log.warning("libp2p host did not close within %.0f s", CLOSE_TIMEOUT)
                nursery.cancel_scope.cancel()
        except Exception:
            if not started:
                raise
            # one host failing must not take down the trio run the other hosts share
            log.exception("libp2p host failed")
        finally:
            self.nursery = None
            self.runtime.post(self.sink.exited)

    async def _start_relay(self, host: IHost, nursery: trio.Nursery) -> None:
        """Serve circuit relay v2 (stop, and hop if configured); reserve on `relay_via`,
        waiting for the first answer of each so the first published addresses include them."""
        relay = self.relay = Relay(host, self.config.relay_hop)
        await nursery.start(relay.serve)
        firsts = []
        for relay_addr in self.config.relay_via:
            first = trio.Event()
            firsts.append(first)
            nursery.start_soon(relay.keep_reservation, relay_addr, first)
        with trio.move_on_after(RESERVE_TIMEOUT + 1.0):
            for first in firsts:
                await first.wait()

    def relayed_addrs(self) -> list[str]:
        """Our addresses through the relays that currently hold a reservation for us."""
        return list(self.relay.reserved.values()) if self.relay is not None else []

    def relay_reservations(self) -> int:
        return self.relay.reservations() if self.relay is not None else 0

    def stop(self) -> None:
        self._stop.set()

    def credit(self) -> None:
        """The asyncio side took one frame off its queue: room for another."""
        self._credits.release()

    def register(self, protocol: str) -> None:
        if self.host is not None:
            self.host.set_stream_handler(TProtocol(protocol), self._serve_request)

    def connected_peers(self) -> list[str]:
        if self.host is None:
            return []
        connections = self.host.get_network().connections
        return sorted(str(peer.to_base58()) for peer, conns in connections.items() if conns)

    # -- dialing --------------------------------------------------------------------------------

    def _require_host(self) -> IHost:
        if self.host is None or self._stop.is_set():
            raise RuntimeStopped("the libp2p host is not running")
        return self.host

    async def _connect(self, peer: ID, timeout: float) -> None:
        """A live connection to `peer`, dialing its known addresses if needed."""
        host = self._require_host()
        network = host.get_network()
        if any(not conn.is_closed for conn in network.get_connections(peer)):
            return
        known = self.known.get(peer.to_base58()) or []
        addrs = [a for a in known if not is_circuit(a)]
        circuits = [a for a in known if is_circuit(a)]
        if circuits and not addrs:
            await self._connect_relayed(peer, circuits, timeout)
            return
        if addrs:
            # our list replaces what libp2p holds (it dials stale addresses first otherwise),
            # with a permanent TTL (libp2p's own connect() lets addresses expire after 120 s)
            peerstore = host.get_peerstore()
            peerstore.clear_addrs(peer)
            peerstore.add_addrs(peer, addrs, PERMANENT_ADDR_TTL)
        # libp2p refuses to redial a peer for 60 s after a failed dial; our callers keep
        # their own backoff, so a peer that came back must be reachable at once
        negative_cache = getattr(network, "_negative_peer_cache", None)
        if negative_cache is not None:
            negative_cache.evict(str(peer))
        try:
            # dial_peer raises SwarmException (PeerUnreachable in the table) whatever failed
            with trio.move_on_after(timeout) as cs, map_libp2p_errors(f"cannot dial {peer}"):
                await network.dial_peer(peer)
            if cs.cancelled_caught:
                raise PeerUnreachable(f"dialing {peer} took over {timeout} s")
        except PeerUnreachable:
            if not circuits:
                raise
            await self._connect_relayed(peer, circuits, timeout)

    async def _connect_relayed(self, peer: ID, circuits: list[Any], timeout: float) -> None:
        if self.relay is None:
            raise PeerUnreachable(f"{peer} is reachable only through a relay")
        await self.relay.dial_any(peer, circuits, timeout)

    async def _negotiate(self, peer: ID, protocol: str) -> INetStream:
        """A new stream to `peer` speaking `protocol`; raises a P2PError (RemoteError: refused)."""
        host = self._require_host()
        with (map_libp2p_errors(f"cannot open {protocol} to {peer}"),
              trio.fail_after(NEGOTIATE_TIMEOUT)):
            return await host.new_stream(peer, [TProtocol(protocol)])

    # -- sending messages -----------------------------------------------------------------------

    def enqueue(self, peer_id: str, frame: bytes, fut: asyncio.Future[None]) -> None:
        """Queue one frame for `peer_id` (called through the trio token, in call order)."""
        # an exception here would crash the whole trio run: settle the future instead
        try:
            if self.nursery is None or self._stop.is_set():
                raise RuntimeStopped("the libp2p host is not running")
            outbound = self._outbound.get(peer_id)
            if outbound is None:
                outbound = _Outbound(peer_id)
                try:
                    self.nursery.start_soon(self._writer, outbound)
                except RuntimeError as exc:  # the nursery is closing
                    raise RuntimeStopped("the libp2p host is stopping") from exc
                self._outbound[peer_id] = outbound
            outbound.send.send_nowait((frame, fut))
        except P2PError as exc:
            self.runtime.post(_fail, fut, exc)
        except Exception as exc:  # a bug: this frame fails, the trio run goes on
            log.exception("cannot queue a frame for %s", peer_id)
            self.runtime.post(_fail, fut, _unexpected(f"cannot queue a frame for {peer_id}", exc))

    async def _writer(self, outbound: _Outbound) -> None:
        """Write the frames queued for one peer, in order, one at a time."""
        while True:
            item = None
            with trio.move_on_after(IDLE_WRITER_SECONDS):
                item = await outbound.recv.receive()
            if item is None:
                if outbound.recv.statistics().current_buffer_used:
                    continue  # queued while the timeout was being delivered
                # idle: no await between the check above and this pop, so nothing is lost
                self._outbound.pop(outbound.peer_id, None)
                if outbound.stream is not None:
                    await close_stream(outbound.stream)
                return
            frame, fut = item
            if fut.done():  # its sender gave up before we got to it
                continue
            try:
                await self._write(outbound, frame)
            except P2PError as exc:
                self._fail_queue(outbound, fut, exc)
            except Exception as exc:  # a bug: this peer's queue fails, the host goes on
                log.exception("writing to %s failed", outbound.peer_id)
                if outbound.stream is not None:
                    stream, outbound.stream = outbound.stream, None
                    await reset_stream(stream)
                self._fail_queue(outbound, fut,
                                 _unexpected(f"cannot write to {outbound.peer_id}", exc))
            else:
                self.runtime.post(_succeed, fut)

    def _fail_queue(self, outbound: _Outbound, fut: asyncio.Future[None],
                    exc: P2PError) -> None:
        self.runtime.post(_fail, fut, exc)
        # frames queued behind a failed one fail too, so none overtakes it
        while True:
            try:
                _, later = outbound.recv.receive_nowait()
            except trio.WouldBlock:
                break
            self.runtime.post(_fail, later, PeerUnreachable(str(exc)))

    async def _write(self, outbound: _Outbound, frame: bytes) -> None:
        """Write `frame` on the peer's message stream; open it, or reopen it once if broken."""
        last: P2PError | None = None
        for _attempt in range(2):
            if outbound.stream is None:
                # a failed dial raises: trying again at once would fail the same way
                await self._connect(outbound.peer, self.config.dial_timeout)
            try:
                if outbound.stream is None:
                    outbound.stream = await self._negotiate(outbound.peer, MSG_PROTOCOL)
                with map_libp2p_errors(), trio.fail_after(WRITE_TIMEOUT):
                    await outbound.stream.write(frame)
                return
            except RuntimeStopped:
                raise
            except P2PError as exc:
                log.debug("message stream to %s failed (%r); reopening once", outbound.peer, exc)
                last = exc
                if outbound.stream is not None:
                    stream, outbound.stream = outbound.stream, None
                    # the peer drops any partial frame with the stream; we resend it whole
                    await reset_stream(stream)
        raise PeerUnreachable(f"cannot write to {outbound.peer}: {last!r}") from last

    async def send_raw(self, peer_id: str, data: bytes) -> None:
        """Test hook: `data` unframed on a fresh message stream, then close it."""
        peer = ID.from_base58(peer_id)
        await self._connect(peer, self.config.dial_timeout)
        stream = await self._negotiate(peer, MSG_PROTOCOL)
        try:
            with map_libp2p_errors(f"cannot write to {peer_id}"):
                await stream.write(data)
        finally:
            await close_stream(stream)

    async def disconnect(self, peer_id: str) -> None:
        host = self._require_host()
        peer = ID.from_base58(peer_id)
        outbound = self._outbound.get(peer_id)
        if outbound is not None and outbound.stream is not None:
            stream, outbound.stream = outbound.stream, None
            await reset_stream(stream)
        with map_libp2p_errors(f"cannot disconnect {peer_id}"):
            await host.disconnect(peer)

    # -- receiving messages ---------------------------------------------------------------------

    def _violation(self, peer: str, reason: str) -> None:
        log.info("peer %s violated the protocol: %s", peer, reason)
        self.runtime.post(self.sink.violation, peer, reason)

    async def _serve_messages(self, stream: INetStream) -> None:
        peer = remote_peer(stream)
        count = self._msg_streams.get(peer, 0)
        if count >= MAX_MSG_STREAMS_PER_PEER:
            self._violation(peer, "too many message streams")
            await reset_stream(stream)
            return
        self._msg_streams[peer] = count + 1
        try:
            await self._read_messages(peer, stream)
        except P2PError:
            log.debug("message stream from %s broke", peer, exc_info=True)
            await reset_stream(stream)
        except Exception:  # a bug: this stream is dropped, the host goes on
            log.exception("serving the message stream from %s failed", peer)
            await reset_stream(stream)
        finally:
            left = self._msg_streams.pop(peer, 1) - 1
            if left:
                self._msg_streams[peer] = left

    async def _read_messages(self, peer: str, stream: INetStream) -> None:
        decoder = FrameDecoder(self.config.max_frame)
        while True:
            with map_libp2p_errors():
                try:
                    data = await stream.read(READ_CHUNK)
                except EOFError:  # libp2p's StreamEOF: the peer closed its side
                    data = b""
            if not data:
                if decoder.pending:
                    self._violation(peer, "truncated frame")
                    await reset_stream(stream)
                else:
                    await close_stream(stream)
                return
            try:
                frames = decoder.feed(data)
            except FrameTooLarge:
                self._violation(peer, "frame too large")
                await reset_stream(stream)
                return
            for frame in frames:
                if not self._buckets.take(peer):
                    self._violation(peer, "frame rate over limit")
                    await reset_stream(stream)
                    return
                handler = self.sink.frame_handler
                if handler is not None:
                    # synchronous: the next read waits until the frame is handled
                    _hand_over(handler, peer, frame)
                    continue
                # backpressure: wait for room in the asyncio-side queue, never drop
                await self._credits.acquire()
                self.runtime.post(self.sink.frame_received, peer, frame)

    # -- request / response ---------------------------------------------------------------------

    async def request(self, peer_id: str, protocol: str, frame: bytes, timeout: float,
                      max_response: int) -> bytes:
        peer = ID.from_base58(peer_id)
        deadline = trio.current_time() + timeout
        await self._connect(peer, min(self.config.dial_timeout, timeout))
        stream: INetStream | None = None
        try:
            with trio.move_on_at(deadline):
                # whatever went wrong on the connection, the requester is told RemoteError
                try:
                    stream = await self._negotiate(peer, protocol)
                except P2PError as exc:
                    raise RemoteError(f"{peer_id} did not open {protocol}: {exc}") from exc
                try:
                    with map_libp2p_errors():
                        await stream.write(frame)
                    answer = await read_frame(stream, FrameDecoder(max_response))
                except FrameTooLarge as exc:
                    raise RemoteError(f"{peer_id} answered over {max_response} bytes") from exc
                except EndOfStream as exc:
                    raise RemoteError(f"{peer_id} closed {protocol} without an answer") from exc
                except P2PError as exc:
                    raise RemoteError(f"{peer_id} broke the {protocol} stream: {exc}") from exc
                done, stream = stream, None
                await close_stream(done)
                return answer
            raise RequestTimeout(f"{peer_id} did not answer {protocol} within {timeout} s")
        finally:
            if stream is not None:
                await reset_stream(stream)

    async def _serve_request(self, stream: INetStream) -> None:
        try:
            await self._answer(remote_peer(stream), str(stream.get_protocol()), stream)
        except P2PError:
            log.debug("request stream failed", exc_info=True)
            await reset_stream(stream)
        except Exception:  # a bug: this stream is dropped, the host goes on
            log.exception("serving a request stream failed")
            await reset_stream(stream)

    async def _answer(self, peer: str, protocol: str, stream: INetStream) -> None:
        handler = self.handlers.get(protocol)
        if handler is None:
            await reset_stream(stream)
            return
        payload = None
        try:
            with trio.move_on_after(REQUEST_READ_TIMEOUT):
                payload = await read_frame(stream, FrameDecoder(self.config.max_frame))
        except FrameError:
            self._violation(peer, "request frame too large")
        except EndOfStream as exc:
            if exc.pending:
                self._violation(peer, "truncated request")
        if payload is None:
            await reset_stream(stream)
            return
        try:
            answer = await self.runtime.run_asyncio(handler, peer, payload,
                                                    tasks=self.sink.handler_tasks)
            frame = encode_frame(answer, self.config.max_response)
        except Exception:  # the node's handler (or its answer) failed: the requester sees a reset
            log.warning("handler for %s from %s failed", protocol, peer, exc_info=True)
            await reset_stream(stream)
            return
        with map_libp2p_errors(f"cannot answer {peer}"):
            await stream.write(frame)
        await close_stream(stream)


def _hand_over(handler: FrameHandler, peer: str, frame: bytes) -> None:
    try:
        handler(peer, frame)
    except Exception:  # the node's bug; the frame is dropped, and its sender retries
        log.exception("the frame handler failed on a frame from %s", peer)


def _unexpected(what: str, exc: Exception) -> P2PError:
    error = P2PError(f"{what}: {exc!r}")
    error.__cause__ = exc
    return error


def _succeed(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _fail(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
