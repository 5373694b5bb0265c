"""Client methods for offers, orders, conversations, messages, escrow and wallet.

Each method is the snake_case form of its endpoint's operationId in the OpenAPI document.
"""

from __future__ import annotations

import uuid

from p2pmarket.api import schemas as s
from p2pmarket.api import schemas_trade as t
from p2pmarket.api import wallet as w
from p2pmarket.client.market import seg
from p2pmarket.client.transport import Transport


class TradeMethods(Transport):
    # -- offers --------------------------------------------------------------------------------

    async def list_offers(self, *, page_size: int = 50, page_token: str | None = None
                          ) -> t.OfferPage:
        return await self.call("GET", "/offers", t.OfferPage,
                               query=s.Paging(page_size=page_size, page_token=page_token))

    async def make_offer(self, seller: str, listing_id: str, amount: int, *, quantity: int = 1,
                         note: str = "") -> t.OfferOut:
        body = t.OfferFields(seller=seller, listing_id=listing_id, amount=amount,
                             quantity=quantity, note=note)
        return await self.call("POST", "/offers", t.OfferOut, body=body)

    async def get_offer(self, offer_id: str) -> t.OfferOut:
        return await self.call("GET", f"/offers/{seg(offer_id)}", t.OfferOut)

    async def counter_offer(self, offer_id: str, amount: int, *, quantity: int = 1,
                            note: str = "") -> t.OfferOut:
        return await self.call("POST", f"/offers/{seg(offer_id)}/counter", t.OfferOut,
                               body=t.CounterFields(amount=amount, quantity=quantity, note=note))

    async def accept_offer(self, offer_id: str) -> t.OfferOut:
        return await self.call("POST", f"/offers/{seg(offer_id)}/accept", t.OfferOut)

    async def decline_offer(self, offer_id: str, reason: str = "") -> t.OfferOut:
        return await self.call("POST", f"/offers/{seg(offer_id)}/decline", t.OfferOut,
                               body=s.ReasonBody(reason=reason))

    async def withdraw_offer(self, offer_id: str, reason: str = "") -> t.OfferOut:
        return await self.call("POST", f"/offers/{seg(offer_id)}/withdraw", t.OfferOut,
                               body=s.ReasonBody(reason=reason))

    # -- orders --------------------------------------------------------------------------------

    async def list_orders(self, *, state: t.OrderState | None = None, role: t.Role | None = None,
                          page_size: int = 50, page_token: str | None = None) -> t.OrderPage:
        return await self.call("GET", "/orders", t.OrderPage, query=t.OrderQuery(
            state=state, role=role, page_size=page_size, page_token=page_token))

    async def get_order(self, order_id: str) -> t.OrderOut:
        return await self.call("GET", f"/orders/{seg(order_id)}", t.OrderOut)

    async def get_order_log(self, order_id: str, *, page_size: int = 50,
                            page_token: str | None = None) -> t.StepPage:
        return await self.call("GET", f"/orders/{seg(order_id)}/log", t.StepPage,
                               query=s.Paging(page_size=page_size, page_token=page_token))

    async def _step(self, order_id: str, step: str, body: s.Wire) -> t.OrderOut:
        return await self.call("POST", f"/orders/{seg(order_id)}/{step}", t.OrderOut, body=body)

    async def send_address(self, order_id: str, address: str) -> t.OrderOut:
        return await self._step(order_id, "address", t.AddressFields(address=address))

    async def confirm_payment(self, order_id: str, reference: str = "") -> t.OrderOut:
        return await self._step(order_id, "payment", t.PaymentFields(reference=reference))

    async def ship_order(self, order_id: str, carrier: str, tracking: str) -> t.OrderOut:
        return await self._step(order_id, "ship", t.ShipFields(carrier=carrier,
                                                               tracking=tracking))

    async def confirm_received(self, order_id: str, note: str = "") -> t.OrderOut:
        return await self._step(order_id, "confirm", t.ConfirmFields(note=note))

    async def settle_order(self, order_id: str, reference: str = "") -> t.OrderOut:
        return await self._step(order_id, "settle", t.SettleFields(reference=reference))

    async def cancel_order(self, order_id: str, reason: str = "") -> t.OrderOut:
        return await self._step(order_id, "cancel", s.ReasonBody(reason=reason))

    async def review_order(self, order_id: str, stars: int, text: str = "") -> s.ReviewOut:
        return await self.call("POST", f"/orders/{seg(order_id)}/review", s.ReviewOut,
                               body=t.ReviewFields(stars=stars, text=text))

    # -- conversations and messages ------------------------------------------------------------

    async def list_conversations(self, *, page_size: int = 50, page_token: str | None = None
                                 ) -> s.Page[t.ConversationOut]:
        return await self.call("GET", "/conversations", s.Page[t.ConversationOut],
                               query=s.Paging(page_size=page_size, page_token=page_token))

    async def start_conversation(self, seller: str, listing_id: str, text: str
                                 ) -> t.ConversationOut:
        """Ask a seller about a listing before any offer (404 `not-found`: listing unknown)."""
        return await self.call("POST", "/conversations", t.ConversationOut,
                               body=t.ConversationFields(seller=seller, listing_id=listing_id,
                                                         text=text))

    async def list_messages(self, conversation_id: str, *, page_size: int = 50,
                            page_token: str | None = None) -> s.Page[t.ChatOut]:
        return await self.call("GET", f"/conversations/{seg(conversation_id)}/messages",
                               s.Page[t.ChatOut],
                               query=s.Paging(page_size=page_size, page_token=page_token))

    async def send_message(self, conversation_id: str, text: str) -> t.ChatOut:
        return await self.call("POST", f"/conversations/{seg(conversation_id)}/messages",
                               t.ChatOut, body=t.ChatFields(text=text))

    async def list_outbox(self, *, state: t.DeliveryState | None = None, peer: str | None = None,
                          page_size: int = 50, page_token: str | None = None
                          ) -> s.Page[t.OutboxOut]:
        return await self.call("GET", "/messages/outbox", s.Page[t.OutboxOut],
                               query=t.OutboxQuery(state=state, peer=peer, page_size=page_size,
                                                   page_token=page_token))

    async def get_outbox_message(self, message_id: str) -> t.OutboxOut:
        return await self.call("GET", f"/messages/outbox/{seg(message_id)}", t.OutboxOut)

    async def list_inbox(self, *, peer: str | None = None, page_size: int = 50,
                         page_token: str | None = None) -> s.Page[t.InboxOut]:
        return await self.call("GET", "/messages/inbox", s.Page[t.InboxOut], query=t.InboxQuery(
            peer=peer, page_size=page_size, page_token=page_token))

    # -- escrow and wallet (501 until the node has escrow) -------------------------------------

    async def _escrow(self, order_id: str, step: str, body: s.Wire | None = None
                      ) -> t.EscrowOut:
        return await self.call("POST", f"/orders/{seg(order_id)}/escrow/{step}", t.EscrowOut,
                               body=body)

    async def get_escrow(self, order_id: str) -> t.EscrowOut:
        return await self.call("GET", f"/orders/{seg(order_id)}/escrow", t.EscrowOut)

    async def fund_escrow(self, order_id: str, *, fee_rate_sat_vb: int | None = None
                          ) -> t.EscrowOut:
        return await self._escrow(order_id, "fund", t.FundFields(fee_rate_sat_vb=fee_rate_sat_vb))

    async def release_escrow(self, order_id: str) -> t.EscrowOut:
        return await self._escrow(order_id, "release")

    async def refund_escrow(self, order_id: str) -> t.EscrowOut:
        return await self._escrow(order_id, "refund")

    async def open_dispute(self, order_id: str, reason: str) -> t.EscrowOut:
        return await self._escrow(order_id, "dispute", t.DisputeFields(reason=reason))

    async def add_evidence(self, order_id: str, text: str) -> t.EscrowOut:
        return await self._escrow(order_id, "evidence", t.EvidenceFields(text=text))

    async def rule_dispute(self, order_id: str, buyer_sat: int, seller_sat: int,
                           note: str = "") -> t.EscrowOut:
        return await self._escrow(order_id, "rule", t.RulingFields(
            buyer_sat=buyer_sat, seller_sat=seller_sat, note=note))

    async def accept_ruling(self, order_id: str) -> t.EscrowOut:
        return await self._escrow(order_id, "accept-ruling")

    async def get_wallet(self, *, refresh: bool = False) -> t.WalletOut:
        """The balance as of the node's last sync; `refresh` asks it to sync first (the node
        does so at most every few seconds)."""
        return await self.call("GET", "/wallet", t.WalletOut,
                               query=w.WalletQuery(refresh=refresh) if refresh else None)

    async def new_receive_address(self) -> t.AddressOut:
        return await self.call("POST", "/wallet/address", t.AddressOut)

    async def preview_wallet_send(self, address: str, amount_sat: int | None = None, *,
                                  sweep: bool = False, fee_rate_sat_vb: int | None = None,
                                  idempotency_key: str | None = None) -> w.SendPreviewOut:
        """Amount, fee, total and change of a payment (`sweep`: everything confirmed) before
        the user confirms it; nothing is signed. With the key of a send already made: that
        payment (`sent_txid`)."""
        return await self.call("POST", "/wallet/send/preview", w.SendPreviewOut,
                               body=w.SendPreviewFields(address=address, amount_sat=amount_sat,
                                                        sweep=sweep,
                                                        fee_rate_sat_vb=fee_rate_sat_vb,
                                                        idempotency_key=idempotency_key))

    async def send_from_wallet(self, address: str, amount_sat: int, *, max_fee_sat: int,
                               fee_rate_sat_vb: int | None = None,
                               idempotency_key: str | None = None) -> w.SendOut:
        """Pay from the wallet; `max_fee_sat` is the previewed fee the user confirmed. A new
        idempotency key is made unless given: to retry a send whose answer was lost, pass
        the same key again (the node then answers the first payment, never pays twice)."""
        key = idempotency_key or f"send-{uuid.uuid4().hex}"
        return await self.call("POST", "/wallet/send", w.SendOut, body=w.SendFields(
            address=address, amount_sat=amount_sat, max_fee_sat=max_fee_sat,
            fee_rate_sat_vb=fee_rate_sat_vb, idempotency_key=key))

    async def list_wallet_transactions(self, *, page_size: int = 50,
                                       page_token: str | None = None) -> w.WalletTxPage:
        return await self.call("GET", "/wallet/transactions", w.WalletTxPage,
                               query=s.Paging(page_size=page_size, page_token=page_token))

    # -- arbitration ---------------------------------------------------------------------------

    async def get_arbiter_advert(self) -> s.ArbiterOut:
        """This node's live arbiter advert (404 `not-found` when it does not arbitrate)."""
        return await self.call("GET", "/arbiter", s.ArbiterOut)

    async def publish_arbiter_advert(self, fields: t.ArbiterFields) -> s.ArbiterOut:
        return await self.call("PUT", "/arbiter", s.ArbiterOut, body=fields)

    async def withdraw_arbiter_advert(self) -> None:
        await self.call_empty("DELETE", "/arbiter")

    async def list_disputes(self, *, page_size: int = 50, page_token: str | None = None
                            ) -> s.Page[t.DisputeOut]:
        return await self.call("GET", "/disputes", s.Page[t.DisputeOut],
                               query=s.Paging(page_size=page_size, page_token=page_token))

    async def get_dispute(self, order_id: str) -> t.DisputeOut:
        return await self.call("GET", f"/disputes/{seg(order_id)}", t.DisputeOut)

    async def rule_case(self, order_id: str, buyer_sat: int, seller_sat: int,
                        note: str = "") -> t.DisputeOut:
        """Arbiter: sign the split of the escrow (the fee comes out of what is left)."""
        return await self.call("POST", f"/disputes/{seg(order_id)}/rule", t.DisputeOut,
                               body=t.RulingFields(buyer_sat=buyer_sat, seller_sat=seller_sat,
                                                   note=note))
