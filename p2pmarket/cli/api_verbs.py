"""CLI verbs that talk to a running node through its HTTP API: status, search, listing, offer,
orders. Each prints a short human answer, or the API's JSON with `--json`.

The client (and aiohttp) load only when one of these verbs runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from p2pmarket.cli.common import CliError
from p2pmarket.datadir import resolve_datadir
from p2pmarket.wire.bodies import Mime

if TYPE_CHECKING:
    from p2pmarket.api.schemas import ListingOut
    from p2pmarket.api.schemas_trade import OrderOut
    from p2pmarket.client import Client

T = TypeVar("T")
DECIMALS = {"BTC": 8, "JPY": 0}
MIMES: dict[str, Mime] = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".webp": "image/webp", ".gif": "image/gif"}


# -- helpers -------------------------------------------------------------------------------------


def to_minor(text: str, currency: str) -> int:
    """`12.50` EUR -> 1250; `0.001` BTC -> 100000 sats."""
    try:
        value = Decimal(text) * (10 ** DECIMALS.get(currency, 2))
    except InvalidOperation:
        raise CliError(f"{text!r} is not an amount") from None
    if value != value.to_integral_value() or value < 0:
        raise CliError(f"{text} {currency} has too many decimals (or is negative)")
    return int(value)


def money(amount: int, currency: str) -> str:
    places = DECIMALS.get(currency, 2)
    return f"{Decimal(amount).scaleb(-places):.{places}f} {currency}"


def out(value: object) -> None:
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def run(args: argparse.Namespace, action: Callable[[Client], Awaitable[T]]) -> T:
    """Run `action` against the node on `--datadir`; client errors become CLI errors."""
    from p2pmarket.client import ApiError, Client, ClientError

    async def main() -> T:
        async with Client.from_datadir(resolve_datadir(args.datadir)) as client:
            return await action(client)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        fields = "; ".join(f"{e.get('pointer') or e.get('parameter') or ''}: {e['detail']}"
                           for e in exc.errors)
        raise CliError(f"{exc.title}: {exc.detail}" + (f" ({fields})" if fields else "")) \
            from None
    except ClientError as exc:
        raise CliError(str(exc)) from None


# -- status --------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, _h: object) -> int:
    status = run(args, lambda c: c.get_status())
    if args.json:
        out(status)
        return 0
    up = int(status.uptime)
    rows = [("peer id", status.peer_id or "?"),
            ("state", f"{status.state} (up {up // 3600}h {up // 60 % 60}m {up % 60}s)"
             + (f", starting: {', '.join(status.starting)}" if status.starting else ""))]
    if status.dht is not None:
        rows.append(("dht", f"{status.dht.listening or '-'}, {status.dht.contacts} contacts, "
                            f"{'joined' if status.dht.bootstrapped else 'not joined yet'}"))
    rows += [("p2p", " ".join(status.listen_addrs) or "-"),
             ("peers", f"{status.connected_peers} connected"),
             ("listings", f"{status.my_listings} mine, {status.cached_listings} cached"),
             ("trade", f"{status.offers} offers, {status.orders} orders"),
             ("escrow", "available" if status.escrow else "not available")]
    for name, value in rows:
        print(f"{name:<9} {value}")
    return 0


# -- search and listings -------------------------------------------------------------------------


def listing_line(item: ListingOut) -> str:
    return (f"{money(item.price.amount, item.price.currency):>16}  {item.title[:40]:<40}  "
            f"{item.condition:<9} {item.quantity:>3}x  {item.publisher} {item.id}")


def cmd_search(args: argparse.Namespace, _h: object) -> int:
    currency = args.currency
    near = None
    if args.near:
        try:
            lat, lon = (float(x) for x in args.near.split(","))
        except ValueError:
            raise CliError("--near takes LAT,LON (e.g. 52.52,13.40)") from None
        near = (lat, lon)
    price_min, price_max = (None if v is None else to_minor(v, currency or "EUR")
                            for v in (args.min, args.max))
    result = run(args, lambda c: c.search(
        " ".join(args.words), category=args.category, currency=currency,
        condition=args.condition or None, near=near, radius_km=args.radius, seller=args.seller,
        sort=args.sort, mode="cache" if args.cached else "network", page_size=args.limit,
        price_min=price_min, price_max=price_max))
    if args.json:
        out(result)
        return 0
    for hit in result.items:
        distance = f" {hit.distance_km:.0f} km" if hit.distance_km is not None else ""
        print(listing_line(hit.listing) + distance)
    more = " (more: raise --limit)" if result.next_page_token else ""
    print(f"{len(result.items)} of {result.total}+ found{more}" if more
          else f"{len(result.items)} found", file=sys.stderr)
    return 0


def _listing_fields(args: argparse.Namespace, images: list[Any]) -> dict[str, Any]:
    if args.at:
        from p2pmarket import geohash

        try:
            lat, lon = (float(x) for x in args.at.split(","))
        except ValueError:
            raise CliError("--at takes LAT,LON") from None
        where = geohash.encode(lat, lon, 6)
    elif args.geohash:
        where = args.geohash
    else:
        raise CliError("say where the item is: --at LAT,LON or --geohash G")
    fields: dict[str, Any] = {
        "title": args.title, "description": args.description,
        "price": {"amount": to_minor(args.price, args.currency), "currency": args.currency},
        "category": args.category, "condition": args.condition, "quantity": args.quantity,
        "location": {"country": args.country.upper(), "geohash": where}, "tags": args.tag,
        "images": images}
    if args.id:
        fields["id"] = args.id
    return fields


def cmd_listing_create(args: argparse.Namespace, _h: object) -> int:
    files = [Path(p) for p in args.image]
    for path in files:
        if path.suffix.lower() not in MIMES:
            raise CliError(f"{path}: not a png, jpeg, webp or gif file name")

    async def create(c: Client) -> ListingOut:
        images = [await c.upload_image(p.read_bytes(), MIMES[p.suffix.lower()]) for p in files]
        return await c.create_listing(_listing_fields(args, images))

    listing = run(args, create)
    if args.json:
        out(listing)
    else:
        print(listing.id)
        if listing.published_at is None:
            print(f"saved, NOT published yet: no DHT peer stored it; the node keeps trying "
                  f"(see `p2pmarket listing list`): {listing_line(listing)}", file=sys.stderr)
        else:
            print(f"published: {listing_line(listing)}", file=sys.stderr)
    return 0


def cmd_listing_list(args: argparse.Namespace, _h: object) -> int:
    async def everything(c: Client) -> list[ListingOut]:
        return [x async for x in c.pages(c.list_my_listings, page_size=200)]

    listings = run(args, everything)
    if args.json:
        out(listings)
        return 0
    for item in listings:
        pending = "" if item.published_at is not None else "  (not published yet)"
        print(f"{item.id:<24} {money(item.price.amount, item.price.currency):>16}  "
              f"{item.quantity:>3}x  {item.title}{pending}")
    if not listings:
        print("no listings yet (p2pmarket listing create ...)", file=sys.stderr)
    return 0


def cmd_listing_rm(args: argparse.Namespace, _h: object) -> int:
    async def remove(c: Client) -> None:
        for listing_id in args.ids:
            await c.delete_listing(listing_id)

    run(args, remove)
    if args.json:
        out({"deleted": args.ids})
    else:
        print(f"deleted {', '.join(args.ids)}", file=sys.stderr)
    return 0


# -- offers and orders ---------------------------------------------------------------------------


def cmd_offer(args: argparse.Namespace, _h: object) -> int:
    async def offer(c: Client) -> Any:
        listing = await c.get_listing(args.seller, args.listing_id, refresh=True)
        amount = to_minor(args.price, listing.price.currency)
        return await c.make_offer(args.seller, args.listing_id, amount,
                                  quantity=args.quantity, note=args.note)

    made = run(args, offer)
    if args.json:
        out(made)
    else:
        last = made.proposals[-1]
        print(made.id)
        print(f"offered {money(last.price.amount, last.price.currency)} for {last.quantity} x "
              f"{made.title or made.listing.id}; state: {made.state}", file=sys.stderr)
    return 0


def order_line(o: OrderOut) -> str:
    return (f"{o.id:<24} {o.state:<16} {o.role:<6} {money(o.price.amount, o.price.currency):>16}"
            f"  {o.quantity}x {o.title}")


def cmd_orders(args: argparse.Namespace, _h: object) -> int:
    if args.order_id:
        order = run(args, lambda c: c.get_order(args.order_id))
        if args.json:
            out(order)
            return 0
        print(order_line(order))
        print(f"  can now: {', '.join(order.can) or 'nothing'}")
        if order.shipment:
            print(f"  shipped: {order.shipment.carrier} {order.shipment.tracking}")
        for step in order.log:
            detail = {k: v for k, v in msgspec.to_builtins(step.action).items() if k != "kind"}
            print(f"  {step.index:>2} {step.by:<6} {type(step.action).__name__:<13} "
                  f"{'' if not detail else msgspec.json.encode(detail).decode()[:80]}")
        return 0

    async def everything(c: Client) -> list[OrderOut]:
        return [x async for x in c.pages(c.list_orders, page_size=200)]

    orders = run(args, everything)
    if args.json:
        out(orders)
        return 0
    for o in orders:
        print(order_line(o))
    if not orders:
        print("no orders yet", file=sys.stderr)
    return 0


# -- parser --------------------------------------------------------------------------------------


def add_verbs(verbs: Any, add_datadir: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the API verbs on the `p2pmarket` sub-command parser."""

    def verb(name: str, help: str, func: Callable[..., int],
             parent: Any = verbs) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help)
        add_datadir(p)
        p.add_argument("--json", action="store_true", help="print the API's JSON answer")
        p.set_defaults(func=func)
        return p

    verb("status", "show the running node's status", cmd_status)

    s = verb("search", "search the market", cmd_search)
    s.add_argument("words", nargs="*", help="words to look for")
    s.add_argument("--category", help="e.g. sports or sports/bikes")
    s.add_argument("--min", help="lowest price (e.g. 10 or 9.99)")
    s.add_argument("--max", help="highest price")
    s.add_argument("--currency", help="EUR, USD, BTC, ...")
    s.add_argument("--condition", action="append",
                   choices=["new", "like-new", "good", "fair", "for-parts"])
    s.add_argument("--near", metavar="LAT,LON", help="around this place")
    s.add_argument("--radius", type=float, metavar="KM", help="with --near: within KM")
    s.add_argument("--seller", metavar="PEER_ID")
    s.add_argument("--sort", default="relevance",
                   choices=["relevance", "price", "newest", "distance"])
    s.add_argument("--limit", type=int, default=20, help="results to show (default 20)")
    s.add_argument("--cached", action="store_true", help="only listings this node has seen")

    listing = verbs.add_parser("listing", help="my listings: create, list, rm")
    lverbs = listing.add_subparsers(dest="listing_command", metavar="ACTION", required=True)
    c = verb("create", "publish a listing", cmd_listing_create, lverbs)
    c.add_argument("--title", required=True)
    c.add_argument("--price", required=True, help="in the currency's units, e.g. 12.50")
    c.add_argument("--currency", default="EUR")
    c.add_argument("--category", required=True, help="e.g. sports/bikes")
    c.add_argument("--condition", default="good",
                   choices=["new", "like-new", "good", "fair", "for-parts"])
    c.add_argument("--quantity", type=int, default=1)
    c.add_argument("--description", default="")
    c.add_argument("--country", required=True, help="two letters, e.g. DE")
    c.add_argument("--at", metavar="LAT,LON", help="where the item is")
    c.add_argument("--geohash", help="instead of --at")
    c.add_argument("--tag", action="append", default=[])
    c.add_argument("--image", action="append", default=[], metavar="FILE")
    c.add_argument("--id", help="choose the listing id (default: a random one)")
    verb("list", "list my listings", cmd_listing_list, lverbs)
    rm = verb("rm", "delete listings", cmd_listing_rm, lverbs)
    rm.add_argument("ids", nargs="+", metavar="LISTING_ID")

    o = verb("offer", "make an offer on a listing", cmd_offer)
    o.add_argument("seller", metavar="SELLER_PEER_ID")
    o.add_argument("listing_id", metavar="LISTING_ID")
    o.add_argument("--price", required=True, help="total offered, e.g. 90 or 89.50")
    o.add_argument("--quantity", type=int, default=1)
    o.add_argument("--note", default="")

    orders = verb("orders", "list my orders, or show one with its log", cmd_orders)
    orders.add_argument("order_id", nargs="?", metavar="ORDER_ID")
