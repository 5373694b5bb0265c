"""Length-prefixed frames on a byte stream, sans-IO: feed bytes in, take whole frames out.

A frame is a 4-byte big-endian length then that many bytes. A length over the limit is the
peer's fault (`FrameTooLarge`): the stream must be dropped, since its framing is lost.
"""

from __future__ import annotations

MAX_FRAME = 64 * 1024
HEADER = 4


class FrameError(Exception):
    """Base of framing errors: the remote peer sent bytes that are not frames."""


class FrameTooLarge(FrameError):
    pass


def encode_frame(payload: bytes, max_size: int = MAX_FRAME) -> bytes:
    if len(payload) > max_size:
        raise FrameTooLarge(f"frame of {len(payload)} bytes; the limit is {max_size}")
    return len(payload).to_bytes(HEADER, "big") + payload


class FrameDecoder:
    def __init__(self, max_size: int = MAX_FRAME) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame now complete (possibly none)."""
        self._buf += data
        frames: list[bytes] = []
        while len(self._buf) >= HEADER:
            size = int.from_bytes(self._buf[:HEADER], "big")
            if size > self.max_size:
                raise FrameTooLarge(f"peer announced a {size}-byte frame; limit {self.max_size}")
            if len(self._buf) < HEADER + size:
                break
            frames.append(bytes(self._buf[HEADER:HEADER + size]))
            del self._buf[:HEADER + size]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)
