"""`WalletService`'s checks that need no chain: an escrow address of ours is refused, and so is
an address of another network (both before anything is built or signed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from mnemonic import Mnemonic

from escrow.bitcoin import HotWallet
from node.escrow.wallet import EscrowAddress, PaymentInvalid, WalletService
from p2pmarket.storage import Database

ESCROW = HotWallet(Mnemonic("english").to_mnemonic(bytes(16)), "regtest").receive_address()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[WalletService]:
    wallet = SimpleNamespace(network="regtest")
    with Database.open(tmp_path / "node.db") as db:
        yield WalletService(lambda: cast(Any, wallet), cast(Any, None), db,
                            escrow_addresses=lambda: [("order-1", ESCROW)])


async def test_an_escrow_of_ours_is_not_paid_from_the_wallet(service: WalletService) -> None:
    with pytest.raises(EscrowAddress, match="order-1"):
        await service.send(ESCROW, 10_000, 1_000, None, "key-00000001")


async def test_an_address_of_another_network_is_refused(service: WalletService) -> None:
    with pytest.raises(PaymentInvalid) as bad:
        await service.preview("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", 10_000, None)
    assert bad.value.pointer == "/address"
