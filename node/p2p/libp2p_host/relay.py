"""Circuit relay v2 for the libp2p host (trio side): serving as a relay hop, holding a
reservation on a relay, and dialing peers at `/p2p/RELAY/p2p-circuit` addresses.

py-libp2p 0.8.1's swarm never dials `/p2p-circuit` addresses itself (it filters them out), so
`Engine._connect` dials them here through `CircuitV2Transport.dial`, which opens a HOP CONNECT
stream to the relay and upgrades it (Noise, yamux) into an ordinary connection to the peer:
streams on it are authenticated end to end, the relay only copies bytes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2 import CircuitV2Protocol, CircuitV2Transport, RelayLimits
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.tools.anyio_service import background_trio_service

from node.p2p.libp2p_host.adapt import close_stream, map_libp2p_errors, multiaddr_of, reset_stream
from node.p2p.transport import P2PError, PeerUnreachable, RemoteError

log = logging.getLogger(__name__)

# the relay protocol logs at ERROR each time a client closes its HOP stream after one exchange,
# which is how every reservation (ours included) ends; our own logs and metrics say what happened
logging.getLogger("libp2p.relay.circuit_v2.protocol").setLevel(logging.CRITICAL)

CIRCUIT = "/p2p-circuit"
RESERVE_TIMEOUT = 10.0
RETRY_MIN, RETRY_MAX = 1.0, 30.0
WATCH_EVERY = 1.0  # how often a client checks that its relay connection is still up


@dataclass(frozen=True, slots=True)
class RelayHopLimits:
    """What a relay hop grants. One reservation per peer; `max_reservations` in total."""

    max_reservations: int = 128        # peers holding a reservation at once
    reservation_ttl: int = 3600        # seconds; clients refresh before it lapses
    max_circuits_per_peer: int = 8     # relayed connections to one reserved peer at once
    circuit_duration: int = 3600       # seconds a relayed connection may last (0: no cap)
    circuit_data: int = 16 * 1024 * 1024  # bytes a relayed connection may carry (0: no cap)

    def to_libp2p(self) -> RelayLimits:
        return RelayLimits(duration=self.circuit_duration, data=self.circuit_data,
                           max_circuit_conns=self.max_circuits_per_peer,
                           max_reservations=self.max_reservations,
                           reservation_ttl=self.reservation_ttl)


def is_circuit(addr: Any) -> bool:
    return CIRCUIT in str(addr)


class Relay:
    """The circuit relay v2 protocol on one host: hop (if `hop` is given), stop, and dialing."""

    def __init__(self, host: IHost, hop: RelayHopLimits | None) -> None:
        self.host = host
        limits = (hop or RelayHopLimits()).to_libp2p()
        self.protocol = CircuitV2Protocol(host, limits, allow_hop=hop is not None)
        # STOP only: dialing through a relay must not ask it for a reservation of our own
        self._dialer = CircuitV2Transport(host, self.protocol, RelayConfig(roles=RelayRole.STOP))
        self._reserver = CircuitV2Transport(
            host, self.protocol, RelayConfig(roles=RelayRole.STOP | RelayRole.CLIENT))
        self.reserved: dict[str, str] = {}  # relay address -> our circuit address

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the protocol (stream handlers for HOP and STOP) until cancelled."""
        async with background_trio_service(self.protocol):
            await self.protocol.event_started.wait()
            task_status.started()
            await trio.sleep_forever()

    def reservations(self) -> int:
        """Reservations this hop holds for others now (expired ones dropped first)."""
        manager = self.protocol.resource_manager
        manager._clean_expired()  # py-libp2p 0.8.1 has no public count
        return len(manager._reservations)

    # -- dialing --------------------------------------------------------------------------------

    async def dial(self, circuit_addr: Any) -> None:
        """Connect to the peer at `.../p2p/RELAY/p2p-circuit/p2p/PEER` through the relay."""
        with map_libp2p_errors(f"cannot dial {circuit_addr} through the relay"):
            await self._dialer.dial(circuit_addr)

    async def dial_any(self, peer: ID, circuits: list[Any], timeout: float) -> None:
        """Connect to `peer` through the first of its relayed addresses that works."""
        last: P2PError | None = None
        with trio.move_on_after(timeout) as cs:
            for circuit in circuits:
                try:
                    await self.dial(circuit)
                    return
                except P2PError as exc:
                    last = exc
        if cs.cancelled_caught:
            raise PeerUnreachable(f"dialing {peer} through a relay took over {timeout} s")
        raise PeerUnreachable(f"cannot dial {peer} through any relay: {last}") from last

    # -- holding a reservation (a client behind NAT) --------------------------------------------

    async def reserve(self, relay_addr: str) -> int:
        """Reserve a slot on the relay at `relay_addr` (`/ip4/../tcp/../p2p/RELAY`); returns
        the reservation's expiry (unix time). Raises a P2PError: PeerUnreachable (no answer),
        RemoteError (HOP refused) or `ReservationRefused`."""
        addr = multiaddr_of(relay_addr)
        relay_text = addr.get_peer_id()
        if relay_text is None:
            raise ValueError(f"a relay address needs /p2p/<id>: {relay_addr!r}")
        relay = ID.from_base58(relay_text)
        ok = False
        with trio.move_on_after(RESERVE_TIMEOUT) as cs:
            with map_libp2p_errors(f"cannot reach relay {relay_addr}"):
                await self.host.connect(PeerInfo(relay, [addr]))
                stream = await self.host.new_stream(relay, [HOP_PROTOCOL])
            try:
                ok = await self._reserver._make_reservation(stream, relay)
            finally:
                if ok:
                    await close_stream(stream)
                else:
                    await reset_stream(stream)
        if cs.cancelled_caught:
            raise PeerUnreachable(f"relay {relay_addr} did not answer within {RESERVE_TIMEOUT} s")
        if not ok:
            raise ReservationRefused(f"relay {relay_addr} refused a reservation")
        return int(self._reserver._reservations.get(relay, 0))

    def relay_connected(self, relay_addr: str) -> bool:
        relay_text = multiaddr_of(relay_addr).get_peer_id()
        network = self.host.get_network()
        conns = network.get_connections(ID.from_base58(relay_text))
        return any(not conn.is_closed for conn in conns)

    async def keep_reservation(self, relay_addr: str, first: trio.Event) -> None:
        """Hold a reservation on one relay for as long as the host runs: refresh it at half
        its life, redo it (with backoff) whenever the relay connection drops. While it holds,
        `reserved[relay_addr]` is our address through that relay."""
        backoff = RETRY_MIN
        circuit = f"{relay_addr.rstrip('/')}{CIRCUIT}"
        while True:
            try:
                expires = await self.reserve(relay_addr)
            except P2PError as exc:  # ReservationRefused among them
                if self.reserved.pop(relay_addr, None) is not None or not first.is_set():
                    log.warning("no relay reservation on %s: %s", relay_addr, exc)
                first.set()
                await trio.sleep(backoff)
                backoff = min(RETRY_MAX, backoff * 2)
                continue
            if relay_addr not in self.reserved:
                log.info("reserved a relay slot: reachable at %s", circuit)
            self.reserved[relay_addr] = circuit
            first.set()
            backoff = RETRY_MIN
            refresh_at = trio.current_time() + max(5.0, (expires - time.time()) / 2)
            # polled: py-libp2p 0.8.1 offers no event for one connection closing
            while trio.current_time() < refresh_at and self.relay_connected(relay_addr):  # noqa: ASYNC110
                await trio.sleep(WATCH_EVERY)
            if not self.relay_connected(relay_addr):
                log.info("lost the connection to relay %s; reserving again", relay_addr)
                self.reserved.pop(relay_addr, None)


class ReservationRefused(RemoteError):
    """The relay answered, and said no (its limits are reached)."""
