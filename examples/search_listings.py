"""Search the market through a running node's API and print what is found.

    python examples/search_listings.py --datadir ~/.local/share/p2pmarket road bike --max 300

With `--watch`, it answers from the cache at once and then prints listings as the network
finds them (the `listing.found` events), for `--watch` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from decimal import Decimal

from p2pmarket.client import Client
from p2pmarket.client import schemas as s


def show(listing: s.ListingOut) -> str:
    price = Decimal(listing.price.amount).scaleb(-2)
    return (f"{price:>10} {listing.price.currency}  {listing.title:<40} "
            f"{listing.publisher} {listing.id}")


async def main(args: argparse.Namespace) -> None:
    async with Client.from_datadir(args.datadir) as api:
        status = await api.get_status()
        print(f"node {status.peer_id}: {status.dht.contacts if status.dht else 0} DHT contacts")
        words = " ".join(args.words)
        price_max = int(Decimal(args.max) * 100) if args.max else None
        if not args.watch:
            page = await api.search(words, category=args.category, price_max=price_max,
                                    sort="price")
            for hit in page.items:
                print(show(hit.listing))
            print(f"{len(page.items)} listings")
            return
        page = await api.search(words, category=args.category, price_max=price_max,
                                mode="background")
        for hit in page.items:
            print("cached ", show(hit.listing))
        # from the id in the status read before the search: no event is missed
        events = api.events(types=["listing.found"], last_event_id=status.last_event_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.watch), contextlib.aclosing(events):
                async for event in events:
                    found = event.data
                    listing = await api.get_listing(found["publisher"], found["listing_id"])
                    print("found  ", show(listing))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datadir", required=True, help="the running node's data dir")
    parser.add_argument("words", nargs="*")
    parser.add_argument("--category")
    parser.add_argument("--max", help="highest price, e.g. 300")
    parser.add_argument("--watch", type=float, default=0, metavar="SECONDS",
                        help="keep printing listings the network finds")
    asyncio.run(main(parser.parse_args()))
