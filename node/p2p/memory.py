"""An in-memory `Host` for tests of node logic: same interface as libp2p, no sockets.

Hosts on one `MemoryNetwork` reach each other by peer id while both are started and the sender
knows an address for the recipient (as with a real peerstore). `offline` hosts are unreachable.
`DirectMemoryHost` also offers the `DirectHost` short path, as `Libp2pHost` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from node.p2p.transport import (
    FrameHandler,
    P2PError,
    PeerUnreachable,
    RemoteError,
    RequestHandler,
    RequestTimeout,
    ViolationHook,
)
from p2pmarket.identity import Identity


class MemoryNetwork:
    def __init__(self) -> None:
        self.hosts: dict[str, MemoryHost] = {}

    def host(self, identity: Identity) -> MemoryHost:
        host = MemoryHost(self, identity)
        self.hosts[host.peer_id] = host
        return host


class MemoryHost:
    def __init__(self, network: MemoryNetwork, identity: Identity) -> None:
        self.network = network
        self.peer_id = identity.peer_id
        self.on_violation: ViolationHook | None = None
        self.running = False
        self._known: dict[str, list[str]] = {}
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=10_000)
        self._handlers: dict[str, RequestHandler] = {}
        self._connected: set[str] = set()

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False
        self._connected.clear()

    def listen_addrs(self) -> list[str]:
        return [f"/memory/{self.peer_id}"]

    def advertised_addrs(self) -> list[str]:
        return self.listen_addrs()

    def add_peer(self, peer_id: str, addrs: list[str]) -> None:
        self._known[peer_id] = list(addrs)

    def _reach(self, peer_id: str) -> MemoryHost:
        peer = self.network.hosts.get(peer_id)
        if not self.running or peer is None or not peer.running or peer_id not in self._known:
            raise PeerUnreachable(f"cannot reach {peer_id}")
        self._connected.add(peer_id)
        peer._connected.add(self.peer_id)
        return peer

    async def send(self, peer_id: str, payload: bytes) -> None:
        await self._reach(peer_id)._queue.put((self.peer_id, payload))

    def _accept(self, sender: str, payload: bytes) -> None:
        """A frame from a `send_soon` (a full queue loses it, as a real network might)."""
        if self.running:
            self._queue.put_nowait((sender, payload))

    async def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        while True:
            yield await self._queue.get()

    def set_request_handler(self, protocol: str, handler: RequestHandler) -> None:
        self._handlers[protocol] = handler

    async def request(self, peer_id: str, protocol: str, payload: bytes,
                      timeout: float = 10.0, max_response: int = 3_000_000) -> bytes:
        peer = self._reach(peer_id)
        handler = peer._handlers.get(protocol)
        if handler is None:
            raise RemoteError(f"{peer_id} does not speak {protocol}")
        try:
            answer = await asyncio.wait_for(handler(self.peer_id, payload), timeout)
        except TimeoutError as exc:
            raise RequestTimeout(f"{peer_id} did not answer in {timeout} s") from exc
        if len(answer) > max_response:
            raise RemoteError(f"answer of {len(answer)} bytes exceeds {max_response}")
        return answer

    async def disconnect(self, peer_id: str) -> None:
        self._connected.discard(peer_id)

    def connected_peers(self) -> list[str]:
        return sorted(self._connected)


class DirectMemoryHost(MemoryHost):
    """A `MemoryHost` with `set_frame_handler` and `send_soon` (`transport.DirectHost`).

    A frame reaches the recipient's handler in a later loop callback (never inside the
    sender's call), in send order; without a handler it goes to `incoming()`.
    """

    def __init__(self, network: MemoryNetwork, identity: Identity) -> None:
        super().__init__(network, identity)
        self.frame_handler: FrameHandler | None = None

    def set_frame_handler(self, handler: FrameHandler | None) -> None:
        self.frame_handler = handler

    def send_soon(self, peer_id: str, payload: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        try:
            peer = self._reach(peer_id)
        except P2PError as exc:
            fut.set_exception(exc)
            return fut
        loop.call_soon(peer._accept, self.peer_id, payload)
        fut.set_result(None)
        return fut

    async def send(self, peer_id: str, payload: bytes) -> None:
        await self.send_soon(peer_id, payload)

    def _accept(self, sender: str, payload: bytes) -> None:
        handler = self.frame_handler
        if handler is None:
            super()._accept(sender, payload)
        elif self.running:  # stopped since: the frame is lost, as on a real network
            handler(sender, payload)
