"""The libp2p exception table: each library type becomes the right `P2PError`, chained to it;
anything else passes through untouched. No host, no event loop."""

from __future__ import annotations

import pytest
import trio
from libp2p.exceptions import BaseLibp2pError, MultiError, ValidationError
from libp2p.host.exceptions import ConnectionFailure, StreamFailure
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError, MessageTooLarge
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.exceptions import SwarmDialAllFailedError, SwarmException
from libp2p.network.stream.exceptions import StreamClosed as Libp2pStreamClosed
from libp2p.network.stream.exceptions import StreamEOF, StreamError, StreamReset
from libp2p.protocol_muxer.exceptions import (
    MultiselectClientError,
    MultiselectCommunicatorError,
    MultiselectError,
    ProtocolNotSupportedError,
)
from libp2p.relay.circuit_v2.exceptions import RelayConnectionError
from libp2p.security.exceptions import HandshakeFailure, SecurityError
from libp2p.security.noise.exceptions import NoiseFailure, PeerIDMismatchesPubkey
from libp2p.stream_muxer.exceptions import (
    MuxedConnUnavailable,
    MuxedStreamClosed,
    MuxedStreamEOF,
    MuxedStreamReset,
)
from libp2p.stream_muxer.mplex.exceptions import MplexError, MplexStreamReset
from libp2p.transport.exceptions import (
    MuxerUpgradeFailure,
    OpenConnectionError,
    SecurityUpgradeFailure,
)
from multiaddr.exceptions import ProtocolLookupError, StringParseError  # type: ignore[import-untyped]

from node.p2p.libp2p_host.adapt import LIBP2P_ERRORS, map_libp2p_errors, multiaddr_of
from node.p2p.libp2p_host.relay import ReservationRefused
from node.p2p.transport import (
    AddressError,
    P2PError,
    PeerUnreachable,
    RemoteError,
    RequestTimeout,
    StreamClosed,
)

CASES: list[tuple[Exception, type[P2PError]]] = [
    # deadlines
    (trio.TooSlowError(), RequestTimeout),
    (TimeoutError("timed out"), RequestTimeout),
    # a stream or its connection going away mid-exchange
    (StreamError("broken"), StreamClosed),
    (StreamReset(), StreamClosed),
    (StreamEOF(), StreamClosed),
    (Libp2pStreamClosed(), StreamClosed),
    (MuxedStreamReset("Stream was reset"), StreamClosed),
    (MuxedStreamEOF("Stream is closed for receiving"), StreamClosed),
    (MuxedStreamClosed(), StreamClosed),
    (MplexStreamReset(), StreamClosed),
    (IncompleteReadError("short read", expected_bytes=4, received_bytes=1), StreamClosed),
    (ConnectionClosedError("closed by peer"), StreamClosed),
    (MessageTooLarge("too big"), StreamClosed),
    (RawConnError("raw"), StreamClosed),
    (trio.ClosedResourceError(), StreamClosed),
    (trio.BrokenResourceError(), StreamClosed),
    # the peer would not speak the protocol
    (StreamFailure("failed to open a stream"), RemoteError),
    (MultiselectClientError("no"), RemoteError),
    (ProtocolNotSupportedError("nobody speaks this"), RemoteError),
    (MultiselectError("bad handshake"), RemoteError),
    (MultiselectCommunicatorError("garbled"), RemoteError),
    # no connection
    (SwarmException("fail to open connection"), PeerUnreachable),
    (SwarmDialAllFailedError("all failed", num_addrs_tried=2), PeerUnreachable),
    (ConnectionFailure(), PeerUnreachable),
    (OpenConnectionError("refused"), PeerUnreachable),
    (SecurityUpgradeFailure(), PeerUnreachable),
    (MuxerUpgradeFailure(), PeerUnreachable),
    (HandshakeFailure(), PeerUnreachable),
    (NoiseFailure(), PeerUnreachable),
    (PeerIDMismatchesPubkey(), PeerUnreachable),
    (SecurityError(), PeerUnreachable),
    (MuxedConnUnavailable("Connection closed"), PeerUnreachable),
    (MplexError(), PeerUnreachable),
    (RelayConnectionError("relay said no"), PeerUnreachable),
    (ConnectionError("Could not open stream to relay"), PeerUnreachable),
    (ConnectionRefusedError(111, "Connection refused"), PeerUnreachable),
    (OSError(99, "Cannot assign requested address"), PeerUnreachable),
    # multiaddr
    (StringParseError("unknown protocol: foo", "/foo"), AddressError),
    (ProtocolLookupError("p2p", "/ip4/1.2.3.4"), AddressError),
    # anything else libp2p raises on purpose
    (ValidationError("bad record"), P2PError),
    (MultiError([ValueError("a"), ValueError("b")]), P2PError),
    (BaseLibp2pError("generic"), P2PError),
]


@pytest.mark.parametrize(("library_exc", "expected"), CASES,
                         ids=[type(exc).__name__ for exc, _ in CASES])
def test_library_exceptions_become_p2p_errors(library_exc: Exception,
                                              expected: type[P2PError]) -> None:
    with pytest.raises(P2PError) as info:
        with map_libp2p_errors("talking to peer X"):
            raise library_exc
    assert type(info.value) is expected
    assert info.value.__cause__ is library_exc
    assert str(info.value).startswith("talking to peer X: ")


def test_without_context_the_message_names_the_library_exception() -> None:
    with pytest.raises(StreamClosed, match="StreamReset"):
        with map_libp2p_errors():
            raise StreamReset()


@pytest.mark.parametrize("exc", [
    TypeError("a bug"), AttributeError("a bug"), KeyError("a bug"), ValueError("a bug"),
    RuntimeError("a bug"), AssertionError("a bug"), EOFError(),
    PeerUnreachable("already ours"), RemoteError("already ours"),
], ids=lambda exc: type(exc).__name__)
def test_unknown_exceptions_pass_through_unchanged(exc: Exception) -> None:
    with pytest.raises(type(exc)) as info:
        with map_libp2p_errors("context"):
            raise exc
    assert info.value is exc
    assert info.value.__cause__ is None


def test_base_exceptions_are_not_touched() -> None:
    class Cancelled(BaseException):  # like trio.Cancelled, which cannot be built by hand
        pass

    with pytest.raises(Cancelled):
        with map_libp2p_errors():
            raise Cancelled()


def test_a_group_of_one_counts_as_that_exception() -> None:
    reset = StreamReset()
    with pytest.raises(StreamClosed) as info:
        with map_libp2p_errors():
            raise ExceptionGroup("nursery", [ExceptionGroup("inner", [reset])])
    assert info.value.__cause__ is reset
    # a group of several, or of one unknown exception, is left alone
    several = ExceptionGroup("nursery", [StreamReset(), SwarmException()])
    with pytest.raises(ExceptionGroup) as group_info:
        with map_libp2p_errors():
            raise several
    assert group_info.value is several
    bug = ExceptionGroup("nursery", [TypeError("a bug")])
    with pytest.raises(ExceptionGroup) as bug_info:
        with map_libp2p_errors():
            raise bug
    assert bug_info.value is bug


def test_no_entry_of_the_table_is_hidden_behind_an_earlier_one() -> None:
    entries = list(LIBP2P_ERRORS)
    for i, later in enumerate(entries):
        for earlier in entries[:i]:
            assert not issubclass(later, earlier), f"{later} is shadowed by {earlier}"
    assert all(issubclass(ours, P2PError) for ours in LIBP2P_ERRORS.values())


def test_error_classes_keep_their_older_contracts() -> None:
    assert issubclass(StreamClosed, RemoteError)      # request() promises RemoteError
    assert issubclass(AddressError, ValueError)       # add_peer() promised ValueError
    assert issubclass(ReservationRefused, RemoteError)


def test_multiaddr_of_raises_address_error() -> None:
    assert str(multiaddr_of("/ip4/127.0.0.1/tcp/4001")) == "/ip4/127.0.0.1/tcp/4001"
    with pytest.raises(AddressError, match="not a multiaddr") as info:
        multiaddr_of("/ip4/300.1.1.1/tcp/1")
    assert isinstance(info.value.__cause__, StringParseError)
