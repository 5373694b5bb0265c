"""The seam between the node and its peer-to-peer transport (httpcore-style).

`Host` is what the node uses: the libp2p implementation (`node.p2p.libp2p_host.host.Libp2pHost`)
and an in-memory one (`node.p2p.memory.MemoryHost`) for tests of market logic both provide it.
`DirectHost` adds the messenger's short path: frames handed to a callback, frames queued
without awaiting (`Libp2pHost` and `memory.DirectMemoryHost` provide it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, runtime_checkable

MSG_PROTOCOL = "/p2pmarket/msg/1.0.0"
BLOB_PROTOCOL = "/p2pmarket/blob/1.0.0"
KEEP_PROTOCOL = "/p2pmarket/keep/1.0.0"  # a publisher asks a keeper to hold a listing image

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
FrameHandler = Callable[[str, bytes], None]
ViolationHook = Callable[[str, str], None]


class P2PError(Exception):
    """Base of transport errors seen by the node."""


class PeerUnreachable(P2PError):
    """Could not dial the peer or write to it."""


class RequestTimeout(P2PError):
    """The peer did not answer a request in time."""


class RemoteError(P2PError):
    """The peer answered a request with an error or broke the stream."""


class StreamClosed(RemoteError):
    """The stream (or the connection under it) was reset or closed mid-exchange."""


class AddressError(P2PError, ValueError):
    """A peer address that does not parse, or does not lead to the peer it is given for."""


class Host(Protocol):
    peer_id: str
    on_violation: ViolationHook | None

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def listen_addrs(self) -> list[str]: ...

    def advertised_addrs(self) -> list[str]: ...

    def add_peer(self, peer_id: str, addrs: list[str]) -> None: ...

    async def send(self, peer_id: str, payload: bytes) -> None: ...

    def incoming(self) -> AsyncIterator[tuple[str, bytes]]: ...

    def set_request_handler(self, protocol: str, handler: RequestHandler) -> None: ...

    async def request(self, peer_id: str, protocol: str, payload: bytes,
                      timeout: float = 10.0, max_response: int = ...) -> bytes: ...

    async def disconnect(self, peer_id: str) -> None: ...

    def connected_peers(self) -> list[str]: ...


@runtime_checkable
class DirectHost(Host, Protocol):
    def set_frame_handler(self, handler: FrameHandler | None) -> None:
        """Hand each incoming message frame to `handler(peer_id, payload)` instead of
        `incoming()` (None: back to `incoming()`).

        The handler is called synchronously on the event loop's thread, one frame at a time and
        in arrival order per stream; it must not block for long. An exception it raises is
        logged and the frame dropped (the sender's retry brings it again).
        """
        ...

    def send_soon(self, peer_id: str, payload: bytes) -> asyncio.Future[None]:
        """Queue one frame for `peer_id` without waiting; the future settles like `send()`.

        Callable from a frame handler. Frames to one peer leave in the order of the `send` and
        `send_soon` calls made from the same side (asyncio code, or a frame handler).
        """
        ...
