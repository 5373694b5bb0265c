"""The bitcoin adapter, the only module that imports bdkpython: per-order escrow keys, the 2-of-3
descriptor and its address, PSBTs checked before signing, the node's wallet and an Esplora client.

Every call blocks (bdk is Rust underneath); async code runs them in `asyncio.to_thread`. bdk's
exceptions never leave this module: they become `EscrowBitcoinError`, `PsbtRejected` or
`ChainError`. Counterparties see only bare per-order xpubs (no origin, no fingerprint), so
orders cannot be linked to each other or to the node's master key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import bdkpython as bdk

from escrow.terms import (
    DUST_SATS,
    ChainError,
    EscrowBitcoinError,
    EscrowError,
    Funding,
    Network,
    Payout,
    PsbtRejected,
)
from p2pmarket.words import seed_of

_NETWORKS: dict[str, tuple[bdk.Network, bdk.NetworkKind, int]] = {
    "regtest": (bdk.Network.REGTEST, bdk.NetworkKind.TEST, 1),
    "signet": (bdk.Network.SIGNET, bdk.NetworkKind.TEST, 1),
    "testnet": (bdk.Network.TESTNET, bdk.NetworkKind.TEST, 1),
    "mainnet": (bdk.Network.BITCOIN, bdk.NetworkKind.MAIN, 0),
}
_XPUB = re.compile(r"^[tx]pub[1-9A-HJ-NP-Za-km-z]{100,112}$")
_RBF_SEQUENCES = frozenset({0xFFFFFFFD, 0xFFFFFFFE, 0xFFFFFFFF})
_EXTERNAL = bdk.KeychainKind.EXTERNAL


@contextmanager
def bdk_errors(what: str, error: type[EscrowError] = EscrowBitcoinError) -> Iterator[None]:
    """Turn any bdk exception raised inside the block into `error` (chained, not leaked)."""
    try:
        yield
    except EscrowError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith("bdkpython"):
            raise
        raise error(f"{what}: {type(exc).__qualname__} {exc}".strip()) from exc


def _net(network: Network) -> tuple[bdk.Network, bdk.NetworkKind, int]:
    if network not in _NETWORKS:
        raise EscrowBitcoinError(f"unknown network {network!r}")
    return _NETWORKS[network]


def _bare(key: object) -> str:
    return re.sub(r"^\[[^\]]*\]", "", str(key))  # drop the key origin: it names the master key


def _sign_options() -> bdk.SignOptions:
    return bdk.SignOptions(trust_witness_utxo=False, assume_height=None, allow_all_sighashes=False,
                           try_finalize=False, sign_with_tap_internal_key=False,
                           allow_grinding=True)


# -- keys, addresses --------------------------------------------------------------------------


def legacy_order_index(order_id: str) -> int:
    """The index escrows made before the key registry used: a public hash of the order id,
    which a buyer choosing ids could grind into a repeat. Only for those existing escrows."""
    digest = hashlib.sha256(b"p2pmarket/escrow-key/" + order_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def index_secret(mnemonic: str) -> bytes:
    """A node secret (from its seed) that makes order indexes unpredictable to others."""
    return hmac.new(seed_of(mnemonic), b"p2pmarket/escrow-index", hashlib.sha256).digest()


def order_index(secret: bytes, order_id: str, attempt: int = 0) -> int:
    """Candidate `attempt` for an order's hardened child index: HMAC(node secret, order id), so
    nobody else can aim at one of our indexes; the key registry (node.escrow.store) takes the
    first candidate no other order holds, so an index, hence a key, never repeats."""
    mac = hmac.new(secret, f"{order_id}\x1f{attempt}".encode(), hashlib.sha256).digest()
    return int.from_bytes(mac[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class OrderKey:
    """This node's keys for one order: share `xpub` (and `timeout_xpub` as a seller) only."""

    network: Network
    index: int
    xpub: str
    timeout_xpub: str
    xprv: str = field(repr=False)
    timeout_xprv: str = field(repr=False)


def derive_order_key(mnemonic: str, index: int, network: Network) -> OrderKey:
    """Keys at m/48'/coin'/0'/2'/index' and, for the seller's timeout branch, .../index'/1'."""
    if not 0 <= index < 2**31:
        raise EscrowBitcoinError("order index out of range")
    _, kind, coin = _net(network)
    with bdk_errors("cannot derive the order key"):
        root = bdk.DescriptorSecretKey(kind, bdk.Mnemonic.from_string(mnemonic), None)
        key = root.derive(bdk.DerivationPath(f"m/48'/{coin}'/0'/2'/{index}'"))
        tkey = key.derive(bdk.DerivationPath("m/1'"))
        return OrderKey(network, index, _bare(key.as_public()), _bare(tkey.as_public()),
                        _bare(key), _bare(tkey))


def check_xpub(xpub: str, network: Network) -> str:
    """A bare extended public key of the right network, or `EscrowBitcoinError`."""
    want = "xpub" if network == "mainnet" else "tpub"
    if not _XPUB.match(xpub) or not xpub.startswith(want):
        raise EscrowBitcoinError(f"not a bare {want} key")
    with bdk_errors("invalid extended public key"):
        bdk.DescriptorPublicKey.from_string(xpub)
    return xpub


def address_script(address: str, network: Network) -> bytes:
    """The scriptPubKey of an address valid on `network`, or `EscrowBitcoinError`."""
    with bdk_errors(f"invalid {network} address"):
        return bytes(bdk.Address(address, _net(network)[0]).script_pubkey().to_bytes())


@dataclass(frozen=True)
class EscrowPolicy:
    """The escrow's spending policy from the three parties' xpubs; everyone computes the same.

    `wsh(sortedmulti(2,B,S,A))`, or with a timeout
    `wsh(or_d(multi(2,B,S,A),and_v(v:pk(S2),older(N))))`: the seller alone with its second key
    S2 once the funding output is N blocks deep.
    """

    network: Network
    buyer_xpub: str
    seller_xpub: str
    arbiter_xpub: str
    seller_timeout_xpub: str | None = None
    timeout_blocks: int | None = None

    def __post_init__(self) -> None:
        keys = [self.buyer_xpub, self.seller_xpub, self.arbiter_xpub]
        if (self.seller_timeout_xpub is None) != (self.timeout_blocks is None):
            raise EscrowBitcoinError("the timeout branch needs both a key and a block count")
        if self.seller_timeout_xpub is not None:
            keys.append(self.seller_timeout_xpub)
        if self.timeout_blocks is not None and not 1 <= self.timeout_blocks <= 0xFFFF:
            raise EscrowBitcoinError("timeout_blocks must be 1..65535")
        for k in keys:
            check_xpub(k, self.network)
        if len(set(keys)) != len(keys):
            raise EscrowBitcoinError("the escrow keys must be distinct")

    def descriptor(self, secrets: dict[str, str] | None = None) -> str:
        """The descriptor; keys found in `secrets` (xpub -> xprv) are replaced to sign with."""
        sub = secrets or {}
        b, s, a = (sub.get(k, k) + "/0/*" for k in (self.buyer_xpub, self.seller_xpub,
                                                     self.arbiter_xpub))
        if self.seller_timeout_xpub is None:
            return f"wsh(sortedmulti(2,{b},{s},{a}))"
        s2 = sub.get(self.seller_timeout_xpub, self.seller_timeout_xpub) + "/0/*"
        return f"wsh(or_d(multi(2,{b},{s},{a}),and_v(v:pk({s2}),older({self.timeout_blocks}))))"

    @cached_property
    def address(self) -> str:
        net, kind, _ = _net(self.network)
        with bdk_errors("invalid escrow descriptor"):
            return str(bdk.Descriptor(self.descriptor(), kind).derive_address(0, net))

    @cached_property
    def script_pubkey(self) -> bytes:
        return address_script(self.address, self.network)


# -- PSBTs ------------------------------------------------------------------------------------


def plan_outputs(funding: Funding, payout: Payout, network: Network,
                 fee_sats: int | None = None) -> tuple[list[tuple[bytes, int]], int]:
    """The (scriptPubKey, sats) outputs and the miner fee of `payout` spending `funding`."""
    outs = [(address_script(o.address, network), o.sats) for o in payout.outputs]
    rest = funding.amount - sum(v for _, v in outs)
    if payout.remainder_to is None:
        fee = rest
    else:
        fee = payout.min_fee_sats if fee_sats is None else fee_sats
        outs.append((address_script(payout.remainder_to, network), rest - fee))
    if not payout.min_fee_sats <= fee <= payout.max_fee_sats:
        raise PsbtRejected(f"miner fee {fee} outside {payout.min_fee_sats}..{payout.max_fee_sats}")
    if any(v < DUST_SATS for _, v in outs):
        raise PsbtRejected("an output below the dust limit")
    return outs, fee


def _parse(psbt: str) -> bdk.Psbt:
    with bdk_errors("not a PSBT", PsbtRejected):
        return bdk.Psbt(psbt)


def check_psbt(psbt: str, policy: EscrowPolicy, funding: Funding, payout: Payout) -> int:
    """Refuse (`PsbtRejected`) unless the PSBT spends exactly the escrow's funding output into
    exactly the agreed outputs with a fee within bounds. Returns the fee. Run before signing."""
    p = _parse(psbt)
    with bdk_errors("unreadable PSBT", PsbtRejected):
        doc: dict[str, Any] = json.loads(p.json_serialize())
        inputs = p.input()
    tx = doc["unsigned_tx"]
    if len(tx["input"]) != 1 or len(inputs) != 1:
        raise PsbtRejected("the escrow spend must have exactly one input")
    txin, pin = tx["input"][0], inputs[0]
    if txin["previous_output"] != f"{funding.txid}:{funding.vout}":
        raise PsbtRejected(f"input {txin['previous_output']} is not the escrow outpoint")
    spk = policy.script_pubkey
    wu = pin.witness_utxo
    if wu is None or wu.value.to_sat() != funding.amount or wu.script_pubkey.to_bytes() != spk:
        raise PsbtRejected("witness utxo does not match the funding output")
    if pin.non_witness_utxo is not None:
        prev = pin.non_witness_utxo
        outs = prev.output()
        if (str(prev.compute_txid()) != funding.txid or len(outs) <= funding.vout
                or outs[funding.vout].value.to_sat() != funding.amount
                or outs[funding.vout].script_pubkey.to_bytes() != spk):
            raise PsbtRejected("previous transaction does not match the funding output")
    ws = pin.witness_script
    if ws is None or b"\x00\x20" + hashlib.sha256(ws.to_bytes()).digest() != spk:
        raise PsbtRejected("witness script is not the escrow script")
    if pin.sighash_type not in (None, "SIGHASH_ALL"):
        raise PsbtRejected(f"sighash {pin.sighash_type} is not ALL")
    if tx["lock_time"] != 0:
        raise PsbtRejected("a locktime would delay the settlement")
    seq = txin["sequence"]
    if payout.kind == "timeout" and seq != policy.timeout_blocks:
        raise PsbtRejected(f"sequence {seq} is not the timeout of {policy.timeout_blocks} blocks")
    if payout.kind != "timeout" and seq not in _RBF_SEQUENCES:
        raise PsbtRejected(f"sequence {seq} sets a relative lock")
    got = sorted((bytes.fromhex(o["script_pubkey"]), int(o["value"])) for o in tx["output"])
    fee = funding.amount - sum(v for _, v in got)
    want, _ = plan_outputs(funding, payout, policy.network, fee)
    if got != sorted(want):
        raise PsbtRejected("outputs differ from the agreed payout")
    return fee


def combine(psbts: Sequence[str]) -> str:
    """Merge partially signed copies of the same PSBT."""
    if not psbts:
        raise PsbtRejected("nothing to combine")
    merged = _parse(psbts[0])
    with bdk_errors("cannot combine PSBTs", PsbtRejected):
        for other in psbts[1:]:
            merged = merged.combine(_parse(other))
        return str(merged.serialize())


def finalize(psbts: Sequence[str]) -> bytes:
    """Combine, finalize and extract the network transaction, or `PsbtRejected`."""
    merged = _parse(combine(psbts))
    with bdk_errors("cannot finalize", PsbtRejected):
        result = merged.finalize()
        if not result.could_finalize:
            raise PsbtRejected(f"not enough valid signatures: {result.errors}")
        return bytes(result.psbt.extract_tx().serialize())


def txid(raw_tx: bytes) -> str:
    with bdk_errors("not a transaction"):
        return str(bdk.Transaction(raw_tx).compute_txid())


def tx_outputs(raw_tx: bytes) -> list[tuple[bytes, int]]:
    """(scriptPubKey, sats) of each output of a serialized transaction."""
    with bdk_errors("not a transaction"):
        return [(bytes(o.script_pubkey.to_bytes()), o.value.to_sat())
                for o in bdk.Transaction(raw_tx).output()]


class EscrowSigner:
    """One party's signing view of one escrow: its own order key plus the others' xpubs."""

    def __init__(self, policy: EscrowPolicy, key: OrderKey) -> None:
        if key.network != policy.network:
            raise EscrowBitcoinError("order key and escrow are on different networks")
        secrets = {key.xpub: key.xprv, key.timeout_xpub: key.timeout_xprv}
        if key.xpub not in (policy.buyer_xpub, policy.seller_xpub, policy.arbiter_xpub):
            raise EscrowBitcoinError("our order key is not part of this escrow")
        self.policy = policy
        net, kind, _ = _net(policy.network)
        with bdk_errors("cannot open the escrow wallet"):
            self._wallet = bdk.Wallet.create_single(bdk.Descriptor(policy.descriptor(secrets),
                                                                   kind),
                                                    net, bdk.Persister.new_in_memory())
            self._wallet.reveal_addresses_to(_EXTERNAL, 0)

    def add_funding(self, raw_tx: bytes) -> Funding:
        """Learn the funding transaction (from the chain); returns its escrow output."""
        with bdk_errors("bad funding transaction"):
            tx = bdk.Transaction(raw_tx)
            outs = [(i, o.value.to_sat()) for i, o in enumerate(tx.output())
                    if o.script_pubkey.to_bytes() == self.policy.script_pubkey]
            if not outs:
                raise EscrowBitcoinError("the transaction does not pay the escrow address")
            self._wallet.apply_unconfirmed_txs([bdk.UnconfirmedTx(tx=tx,
                                                                  last_seen=int(time.time()))])
            return Funding(str(tx.compute_txid()), outs[0][0], outs[0][1])

    def build(self, funding: Funding, payout: Payout, fee_sats: int | None = None) -> str:
        """An unsigned PSBT paying `payout` from the escrow (`add_funding` first)."""
        outs, fee = plan_outputs(funding, payout, self.policy.network, fee_sats)
        with bdk_errors("cannot build the escrow spend"):
            point = bdk.OutPoint(txid=bdk.Txid.from_string(funding.txid), vout=funding.vout)
            builder = (bdk.TxBuilder().add_utxo(point).manually_selected_only()
                       .ordering(bdk.TxOrdering.UNTOUCHED)
                       .set_recipients([bdk.ScriptAmount(script=bdk.Script(s),
                                                         amount=bdk.Amount.from_sat(v))
                                        for s, v in outs])
                       .fee_absolute(bdk.Amount.from_sat(fee)))
            if self.policy.timeout_blocks is not None:
                branch = [1] if payout.kind == "timeout" else [0]
                root = self._wallet.policies(_EXTERNAL)
                assert root is not None
                builder = builder.policy_path({root.id(): branch}, _EXTERNAL)
            psbt = str(builder.finish(self._wallet).serialize())
        check_psbt(psbt, self.policy, funding, payout)
        return psbt

    def sign(self, psbt: str, funding: Funding, payout: Payout) -> str:
        """Check the PSBT against the agreed payout, then add our signature."""
        check_psbt(psbt, self.policy, funding, payout)
        p = _parse(psbt)
        with bdk_errors("cannot sign", PsbtRejected):
            before = len(p.input()[0].partial_sigs)
            self._wallet.sign(p, _sign_options())
            if len(p.input()[0].partial_sigs) == before:
                raise PsbtRejected("none of our keys could sign this PSBT")
            return str(p.serialize())


# -- chain client and the node's wallet -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainTx:
    txid: str
    confirmed: bool
    height: int | None


@dataclass(frozen=True, slots=True)
class WalletBalance:
    """Sats: `confirmed` is spendable now, `pending` is unconfirmed in or out."""

    confirmed: int
    pending: int
    total: int


class InsufficientFunds(EscrowBitcoinError):
    """The wallet's confirmed coins do not cover a payment and its fee."""


@dataclass(frozen=True, slots=True)
class PaymentPlan:
    """A payment the wallet built: `amount` to the recipient, `fee`, `change` back to us;
    `raw_tx` is the signed transaction (None for a preview)."""

    txid: str
    amount: int
    fee: int
    change: int
    vsize: int
    raw_tx: bytes | None


@dataclass(frozen=True, slots=True)
class WalletTx:
    """One transaction of the wallet: `net` is what it changed our balance by (sats, fee
    included); `height` None while unconfirmed; `time` the block's time, or when first seen."""

    txid: str
    sent: int
    received: int
    net: int
    fee: int | None
    height: int | None
    time: int | None


class Esplora:
    """bdk's blocking Esplora client; every failure is a `ChainError`."""

    def __init__(self, url: str) -> None:
        with bdk_errors("bad Esplora URL", ChainError):
            self.client = bdk.EsploraClient(url)

    def height(self) -> int:
        with bdk_errors("tip height", ChainError):
            return int(self.client.get_height())

    def tx_status(self, tx_id: str) -> ChainTx:
        with bdk_errors("transaction status", ChainError):
            st = self.client.get_tx_status(bdk.Txid.from_string(tx_id))
            return ChainTx(tx_id, st.confirmed, st.block_height)

    def raw_tx(self, tx_id: str) -> bytes | None:
        with bdk_errors("get transaction", ChainError):
            tx = self.client.get_tx(bdk.Txid.from_string(tx_id))
            return None if tx is None else bytes(tx.serialize())

    def address_txs(self, address: str, network: Network) -> list[ChainTx]:
        """Mempool transactions and the newest confirmed ones touching `address`."""
        with bdk_errors("address history", ChainError):
            addr = bdk.Address(address, _net(network)[0])
            return [ChainTx(str(t.txid), t.status.confirmed, t.status.block_height)
                    for t in self.client.get_address_txs(addr, None)]

    def spender(self, tx_id: str, vout: int) -> str | None:
        """The txid spending output `vout` of `tx_id` (in the mempool or a block), or None."""
        with bdk_errors("output status", ChainError):
            st = self.client.get_output_status(bdk.Txid.from_string(tx_id), vout)
        if st is None or not st.spent:
            return None
        return str(st.txid) if st.txid is not None else "unknown"

    def broadcast(self, raw_tx: bytes) -> str:
        with bdk_errors("broadcast refused", ChainError):
            tx = bdk.Transaction(raw_tx)
            self.client.broadcast(tx)
            return str(tx.compute_txid())

    def fee_estimates(self) -> dict[int, float]:
        with bdk_errors("fee estimates", ChainError):
            return {int(k): float(v) for k, v in self.client.get_fee_estimates().items()}


class HotWallet:
    """The node's single-sig wallet: wpkh at BIP84 m/84'/coin'/0' of the same mnemonic as the
    escrow keys, persisted in SQLite at `db_path` (in memory if None). Not thread-safe."""

    def __init__(self, mnemonic: str, network: Network, db_path: str | None = None) -> None:
        net, kind, _ = _net(network)
        with bdk_errors("cannot open the wallet"):
            root = bdk.DescriptorSecretKey(kind, bdk.Mnemonic.from_string(mnemonic), None)
            ext = bdk.Descriptor.new_bip84(root, _EXTERNAL, kind)
            change = bdk.Descriptor.new_bip84(root, bdk.KeychainKind.INTERNAL, kind)
            self._persister = (bdk.Persister.new_in_memory() if db_path is None
                               else bdk.Persister.new_sqlite(db_path))
            try:
                self._wallet = bdk.Wallet.load(ext, change, self._persister)
            except bdk.LoadWithPersistError.CouldNotLoad:
                self._wallet = bdk.Wallet(ext, change, net, self._persister)
            if self._wallet.network() != net:
                raise EscrowBitcoinError(f"the wallet database is not for {network}")
        self.network = network
        self._scanned = self._wallet.latest_checkpoint().height > 0

    def _persist(self) -> None:
        with bdk_errors("cannot save the wallet"):
            self._wallet.persist(self._persister)

    def receive_address(self) -> str:
        with bdk_errors("cannot reveal an address"):
            address = str(self._wallet.reveal_next_address(_EXTERNAL).address)
        self._persist()
        return address

    def balance(self) -> WalletBalance:
        b = self._wallet.balance()
        pending = b.trusted_pending.to_sat() + b.untrusted_pending.to_sat()
        return WalletBalance(b.confirmed.to_sat(), pending, b.total.to_sat())

    def sync(self, esplora: Esplora, *, full: bool = False) -> None:
        """Catch up with the chain: a full scan the first time (or when asked), then a sync."""
        with bdk_errors("wallet sync", ChainError):
            if full or not self._scanned:
                req = self._wallet.start_full_scan().build()
                update = esplora.client.full_scan(req, 20, 4)
            else:
                update = esplora.client.sync(self._wallet.start_sync_with_revealed_spks().build(),
                                             4)
            self._wallet.apply_update(update)
        self._scanned = True
        self._persist()

    def pay(self, address: str, sats: int, sat_per_vb: int) -> bytes:
        """A signed transaction paying exactly `sats` to `address` (change back to us)."""
        raw = self.plan(address, sats, sat_per_vb).raw_tx
        assert raw is not None
        return raw

    def plan(self, address: str, sats: int | None, sat_per_vb: int, *,
             preview: bool = False) -> PaymentPlan:
        """Pay `sats` to `address`, or everything (`sats=None`, a sweep), spending confirmed
        coins only, largest first (the same coins give the same fee, so a preview's fee is
        what the payment costs). Signed unless `preview`; `InsufficientFunds` when the
        confirmed coins do not cover amount and fee."""
        if (sats is not None and sats < DUST_SATS) or sat_per_vb < 1:
            raise EscrowBitcoinError("payment below the dust limit or fee rate below 1 sat/vB")
        script = bdk.Script(address_script(address, self.network))
        with bdk_errors("cannot pay"):
            builder = (bdk.TxBuilder().exclude_unconfirmed()
                       .coin_selection(bdk.CoinSelectionAlgorithm.LARGEST_FIRST)
                       .fee_rate(bdk.FeeRate.from_sat_per_vb(sat_per_vb)))
            builder = (builder.drain_wallet().drain_to(script) if sats is None
                       else builder.add_recipient(script, bdk.Amount.from_sat(sats)))
            try:
                psbt = builder.finish(self._wallet)
            except (bdk.CreateTxError.CoinSelection, bdk.CreateTxError.InsufficientFunds,
                    bdk.CreateTxError.NoUtxosSelected, bdk.CreateTxError.OutputBelowDustLimit
                    ) as exc:
                have = self.balance()
                raise InsufficientFunds(f"{have.confirmed} sat confirmed (and {have.pending} "
                                        f"pending) do not cover it: {exc}") from None
            if not self._wallet.sign(psbt):
                raise EscrowBitcoinError("the wallet could not sign its own payment")
            tx = psbt.extract_tx()
            change, change_at = 0, []
            for out in tx.output():
                mine = self._wallet.derivation_of_spk(out.script_pubkey)
                if mine is not None and mine.keychain == bdk.KeychainKind.INTERNAL:
                    change += out.value.to_sat()
                    change_at.append(mine.index)
            fee = psbt.fee()
            amount = sum(o.value.to_sat() for o in tx.output()) - change
            if preview:  # leave the change address unused: a preview pays nobody
                for index in change_at:
                    self._wallet.unmark_used(bdk.KeychainKind.INTERNAL, index)
            return PaymentPlan(str(tx.compute_txid()), amount, fee, change, tx.vsize(),
                               None if preview else bytes(tx.serialize()))

    def history(self) -> list[WalletTx]:
        """Every transaction that moved the wallet's coins, newest first (unconfirmed on top)."""
        out = []
        with bdk_errors("cannot read the wallet's history"):
            for canonical in self._wallet.transactions():
                d = self._wallet.tx_details(canonical.transaction.compute_txid())
                if d is None:
                    continue
                pos = d.chain_position
                if isinstance(pos, bdk.ChainPosition.CONFIRMED):
                    block = pos.confirmation_block_time
                    height, at = block.block_id.height, block.confirmation_time
                else:
                    height, at = None, getattr(pos, "timestamp", None)
                out.append(WalletTx(str(d.txid), d.sent.to_sat(), d.received.to_sat(),
                                    d.balance_delta, None if d.fee is None else d.fee.to_sat(),
                                    height, at))
        out.sort(key=lambda t: (t.height is not None, -(t.height or 0), -(t.time or 0), t.txid))
        return out

    def tip_height(self) -> int:
        """The height of the last block the wallet synced to."""
        return int(self._wallet.latest_checkpoint().height)

    def note_sent(self, raw_tx: bytes) -> None:
        """Record a transaction we broadcast, so the balance counts it before it confirms."""
        with bdk_errors("cannot record the transaction"):
            tx = bdk.Transaction(raw_tx)
            self._wallet.apply_unconfirmed_txs([bdk.UnconfirmedTx(tx=tx,
                                                                  last_seen=int(time.time()))])
        self._persist()
