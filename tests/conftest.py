"""Fixtures shared across test folders; each one is a factory (helpers live in tests/support/)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from p2pmarket.identity import Identity

if TYPE_CHECKING:
    from node.p2p.libp2p_host.host import Libp2pHost
    from tests.support.p2p import HostFactory


@pytest.fixture
async def make_host() -> AsyncIterator[HostFactory]:
    """Started hosts on 127.0.0.1, port 0; every one is stopped at the end, and leaves nothing."""
    from node.p2p.libp2p_host.host import Libp2pHost  # trio and libp2p only for tests using them
    from node.p2p.libp2p_host.runtime import TrioRuntime

    hosts: list[Libp2pHost] = []

    async def factory(identity: Identity | None = None, **kwargs: Any) -> Libp2pHost:
        host = Libp2pHost(identity or Identity.generate(), "127.0.0.1", **kwargs)
        await host.start()
        hosts.append(host)
        return host

    try:
        yield factory
    finally:
        for host in hosts:
            await host.stop()
    assert not TrioRuntime.for_running_loop().running
    assert asyncio.all_tasks() == {asyncio.current_task()}
