"""The escrow driver (`node.escrow.driver.EscrowDriver`) seen through the API's EscrowService.

Maps the driver's views, events and errors to the API's wire types: `fund` proposes the escrow
(the buyer's node then pays it from its wallet by itself), escrow errors become trade errors so
they map to problems (409 conflict, 404 unknown order).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from escrow.terms import EscrowError, Role, State
from node.escrow.book import EscrowChanged, EscrowView
from node.escrow.driver import EscrowDriver
from node.trade.errors import IllegalEvent, NotFound
from p2pmarket.api import schemas_trade as t

if TYPE_CHECKING:
    from node.api.routes.escrow import EscrowChange

# what each party may do next, by escrow state (the machine still has the last word)
NEXT: dict[tuple[Role, State], list[str]] = {
    (Role.BUYER, State.FUNDED): ["release", "dispute"],
    (Role.BUYER, State.SHIPPED): ["release", "dispute"],
    (Role.SELLER, State.FUNDED): ["refund", "dispute"],
    (Role.SELLER, State.SHIPPED): ["refund", "dispute"],
    (Role.BUYER, State.DISPUTED): ["evidence", "accept-ruling", "release"],
    (Role.SELLER, State.DISPUTED): ["evidence", "accept-ruling", "refund"],
    (Role.ARBITER, State.DISPUTED): ["rule"],
}


@dataclass(frozen=True, slots=True)
class Change:
    order: str
    state: str
    step: str


class EscrowApi:
    def __init__(self, driver: EscrowDriver, network: str) -> None:
        self.driver, self.network = driver, network
        self.listeners: list[Callable[[EscrowChange], None]] = []
        driver.listeners.append(self._relay)

    def _relay(self, update: object) -> None:
        if isinstance(update, EscrowChanged):
            change = Change(update.order, str(update.state), update.kind)
            for listener in list(self.listeners):
                listener(change)

    def _out(self, view: EscrowView) -> t.EscrowOut:
        deadlines = sorted(view.deadlines.values())
        return t.EscrowOut(order_id=view.order, state=str(view.state), address=view.address,
                           amount_sat=view.amount_sats, funding_txid=view.funding_txid,
                           deadline=float(deadlines[0]) if deadlines else None,
                           can=[a for a in NEXT.get((view.role, view.state), [])
                                if f"{a}:{view.role}" not in view.signed])

    async def _call(self, order_id: str, action: Callable[[], Awaitable[EscrowView]]
                    ) -> t.EscrowOut:
        try:
            return self._out(await action())
        except EscrowError as exc:
            if str(exc).startswith("no escrow for order"):
                raise NotFound(str(exc)) from exc
            raise IllegalEvent(str(exc)) from exc

    async def status(self, order_id: str) -> t.EscrowOut:
        async def view() -> EscrowView:
            return self.driver.view(order_id)
        return await self._call(order_id, view)

    async def fund(self, order_id: str, fee_rate_sat_vb: int | None) -> t.EscrowOut:
        return await self._call(order_id, lambda: self.driver.start(order_id))

    async def release(self, order_id: str) -> t.EscrowOut:
        return await self._call(order_id, lambda: self.driver.release(order_id))

    async def refund(self, order_id: str) -> t.EscrowOut:
        return await self._call(order_id, lambda: self.driver.refund(order_id))

    async def dispute(self, order_id: str, reason: str) -> t.EscrowOut:
        return await self._call(order_id, lambda: self.driver.dispute(order_id, reason))

    async def add_evidence(self, order_id: str, text: str) -> t.EscrowOut:
        return await self._call(order_id, lambda: self.driver.add_evidence(order_id, text))

    async def rule(self, order_id: str, buyer_sat: int, seller_sat: int,
                   note: str) -> t.EscrowOut:
        return await self._call(
            order_id, lambda: self.driver.rule(order_id, buyer_sat, seller_sat, note))

    async def accept_ruling(self, order_id: str) -> t.EscrowOut:
        return await self._call(order_id, lambda: self.driver.accept_ruling(order_id))

    async def wallet_balance(self) -> t.WalletOut:
        balance = await self.driver.balance()
        return t.WalletOut(network=self.network, confirmed_sat=balance.confirmed,
                           pending_sat=balance.pending)

    async def receive_address(self) -> str:
        return await self.driver.receive_address()


_adapters: WeakKeyDictionary[EscrowDriver, EscrowApi] = WeakKeyDictionary()


def escrow_api(driver: EscrowDriver) -> EscrowApi:
    """One adapter per driver (its listeners must be registered once)."""
    api = _adapters.get(driver)
    if api is None:
        api = _adapters[driver] = EscrowApi(driver, driver.config.network)
    return api
