"""Wallet routes: the node wallet's balance (as of its last sync; `?refresh=true` syncs first,
rate-limited), a receive address, payments out (preview, then send with the fee the user
confirmed) and the history. Like the escrow routes they answer 501 on a node without a chain.

Refusals map by type (`node.api.problems`): a bad address, dust or fee rate is 422 with the
field's pointer, too little confirmed money 409 `insufficient-funds`, a fee above the confirmed
one 409 `fee-changed`, a reused idempotency key 409, the chain backend failing 502.
"""

from __future__ import annotations

from node.api.context import Call
from node.api.convert import page
from node.api.problems import ApiProblem, FieldError
from node.api.registry import Routes
from node.api.routes.escrow import NOT_YET, escrow
from node.escrow.wallet import HistoryItem
from p2pmarket.api import schemas as s
from p2pmarket.api import schemas_trade as t
from p2pmarket.api import wallet as w

routes = Routes("wallet")


@routes.get("/wallet", name="getWallet", summary="The node wallet's balance",
            query=w.WalletQuery, response=t.WalletOut, errors=NOT_YET)
async def get_wallet(call: Call) -> t.WalletOut:
    """The balance as of the last sync (the node syncs in the background); `refresh=true`
    syncs first unless the last sync is only seconds old."""
    driver = escrow(call)
    funds = driver.funds
    balance = await funds.balance(refresh=call.query(w.WalletQuery).refresh)
    return t.WalletOut(network=driver.config.network, confirmed_sat=balance.confirmed,
                       pending_sat=balance.pending, synced_at=funds.synced_at,
                       sync_error=funds.sync_error)


@routes.post("/wallet/address", name="newReceiveAddress",
             summary="A fresh address to receive funds", response=t.AddressOut,
             errors=NOT_YET)
async def new_receive_address(call: Call) -> t.AddressOut:
    return t.AddressOut(address=await escrow(call).receive_address())


@routes.post("/wallet/send/preview", name="previewWalletSend",
             summary="What a payment from the wallet would cost (nothing is signed)",
             body=w.SendPreviewFields, response=w.SendPreviewOut, errors=(409, 502, *NOT_YET))
async def preview_wallet_send(call: Call) -> w.SendPreviewOut:
    """Show the user `amount_sat`, `fee_sat`, `total_sat` and `address` before sending."""
    f = call.body(w.SendPreviewFields)
    if f.sweep == (f.amount_sat is not None):
        raise ApiProblem("validation", "give amount_sat or sweep=true", errors=[
            FieldError(detail="give amount_sat or sweep=true, not both", pointer="/amount_sat")])
    driver = escrow(call)
    p = await driver.funds.preview(f.address, f.amount_sat, f.fee_rate_sat_vb,
                                   f.idempotency_key)
    plan = p.plan
    return w.SendPreviewOut(address=p.address, network=driver.config.network,
                            amount_sat=plan.amount, fee_sat=plan.fee, fee_rate_sat_vb=p.fee_rate,
                            total_sat=plan.amount + plan.fee, change_sat=plan.change,
                            vsize=plan.vsize, spendable_sat=p.spendable, sweep=p.sweep,
                            sent_txid=p.sent)


@routes.post("/wallet/send", name="sendFromWallet",
             summary="Pay from the wallet's confirmed coins (the fee at most as confirmed)",
             body=w.SendFields, response=w.SendOut, errors=(409, 502, *NOT_YET))
async def send_from_wallet(call: Call) -> w.SendOut:
    """Preview first: `max_fee_sat` is the preview's `fee_sat` the user confirmed. Give an
    `idempotency_key` so a repeated request answers the first payment instead of paying
    again."""
    f = call.body(w.SendFields)
    sent = await escrow(call).funds.send(f.address, f.amount_sat, f.max_fee_sat,
                                         f.fee_rate_sat_vb, f.idempotency_key)
    plan = sent.plan
    return w.SendOut(txid=plan.txid, address=sent.address, amount_sat=plan.amount,
                     fee_sat=plan.fee, total_sat=plan.amount + plan.fee, change_sat=plan.change,
                     fee_rate_sat_vb=sent.fee_rate, idempotency_key=sent.key,
                     replayed=sent.replayed)


def tx_out(item: HistoryItem) -> w.WalletTxOut:
    tx = item.tx
    return w.WalletTxOut(txid=tx.txid, direction="in" if tx.net > 0 else "out", net_sat=tx.net,
                         sent_sat=tx.sent, received_sat=tx.received, fee_sat=tx.fee,
                         confirmations=item.confirmations, height=tx.height, time=tx.time,
                         address=item.address)


@routes.get("/wallet/transactions", name="listWalletTransactions",
            summary="The wallet's transactions, unconfirmed first, then newest first",
            query=s.Paging, response=w.WalletTxPage, errors=NOT_YET)
async def list_wallet_transactions(call: Call) -> w.WalletTxPage:
    """As of the last sync, plus what the node sent since; `confirmations` counts to the
    block the wallet last synced to."""
    items, token = page(await escrow(call).funds.history(), call.query(s.Paging))
    return w.WalletTxPage(items=[tx_out(i) for i in items], next_page_token=token)
