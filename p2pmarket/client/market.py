"""Client methods for the node, listings, search, images, profiles and moderation endpoints.

Each method is the snake_case form of its endpoint's operationId in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

from p2pmarket.api import schemas as s
from p2pmarket.client.transport import Transport, as_struct
from p2pmarket.wire.bodies import Condition, Currency, Mime, ReportReason


def seg(part: str) -> str:
    """One path segment, quoted."""
    return quote(part, safe="")


class MarketMethods(Transport):
    # -- node ----------------------------------------------------------------------------------

    async def get_version(self) -> s.Version:
        return await self.call("GET", "/version", s.Version)

    async def get_status(self) -> s.NodeStatus:
        return await self.call("GET", "/node", s.NodeStatus)

    async def shutdown(self) -> s.Stopping:
        return await self.call("POST", "/node/shutdown", s.Stopping)

    async def list_peers(self, *, page_size: int = 50, page_token: str | None = None
                         ) -> s.Page[s.PeerOut]:
        return await self.call("GET", "/peers", s.Page[s.PeerOut],
                               query=s.Paging(page_size=page_size, page_token=page_token))

    async def get_peer(self, peer_id: str) -> s.PeerInfo:
        return await self.call("GET", f"/peers/{seg(peer_id)}", s.PeerInfo)

    async def list_categories(self) -> list[str]:
        return await self.call("GET", "/categories", list[str])

    async def get_openapi(self) -> dict[str, Any]:
        return await self.call("GET", "/openapi.json", dict[str, Any])

    # -- my listings ---------------------------------------------------------------------------

    async def list_my_listings(self, *, page_size: int = 50, page_token: str | None = None
                               ) -> s.Page[s.ListingOut]:
        return await self.call("GET", "/listings", s.Page[s.ListingOut],
                               query=s.Paging(page_size=page_size, page_token=page_token))

    async def create_listing(self, fields: s.ListingFields | Mapping[str, Any]) -> s.ListingOut:
        return await self.call("POST", "/listings", s.ListingOut,
                               body=as_struct(fields, s.ListingFields))

    async def get_my_listing(self, listing_id: str) -> s.ListingOut:
        return await self.call("GET", f"/listings/{seg(listing_id)}", s.ListingOut)

    async def edit_listing(self, listing_id: str, changes: s.ListingPatch | Mapping[str, Any]
                           ) -> s.ListingOut:
        return await self.call("PATCH", f"/listings/{seg(listing_id)}", s.ListingOut,
                               body=as_struct(changes, s.ListingPatch))

    async def delete_listing(self, listing_id: str) -> None:
        await self.call_empty("DELETE", f"/listings/{seg(listing_id)}")

    async def list_my_records(self, *, page_size: int = 50, page_token: str | None = None
                              ) -> s.Page[s.OwnRecordOut]:
        """My records in the DHT with their expiry and last publication (or error)."""
        return await self.call("GET", "/records", s.Page[s.OwnRecordOut],
                               query=s.Paging(page_size=page_size, page_token=page_token))

    # -- anyone's listings, search ---------------------------------------------------------------

    async def get_listing(self, peer_id: str, listing_id: str, *, refresh: bool = False
                          ) -> s.ListingOut:
        return await self.call("GET", f"/sellers/{seg(peer_id)}/listings/{seg(listing_id)}",
                               s.ListingOut, query=s.ListingQuery(refresh=refresh))

    async def search(self, q: str = "", *, category: str | None = None,
                     price_min: int | None = None, price_max: int | None = None,
                     currency: Currency | None = None, condition: list[Condition] | None = None,
                     near: tuple[float, float] | None = None, radius_km: float | None = None,
                     seller: str | None = None, include_sold_out: bool = False,
                     sort: s.SortOrder = "relevance",
                     mode: Literal["network", "cache", "background"] = "network",
                     page_size: int = 50, page_token: str | None = None) -> s.SearchPage:
        """Words in `q`, filters by keyword (see `SearchQuery`)."""
        query = s.SearchQuery(
            q=q, category=category, price_min=price_min, price_max=price_max, currency=currency,
            condition=list(condition or []), near=f"{near[0]},{near[1]}" if near else None,
            radius_km=radius_km, seller=seller, include_sold_out=include_sold_out, sort=sort,
            mode=mode, page_size=page_size, page_token=page_token)
        return await self.call("GET", "/search", s.SearchPage, query=query)

    # -- images --------------------------------------------------------------------------------

    async def upload_image(self, data: bytes, mime: Mime) -> s.ImageRef:
        return await self.call("POST", "/images", s.ImageRef,
                               body=s.ImageUpload(mime=mime, data=data))

    async def get_image(self, sha256: str, *, peer: str | None = None) -> bytes:
        _, raw, _ = await self.request("GET", f"/images/{seg(sha256)}",
                                       query=s.ImageQuery(peer=peer))
        return raw

    # -- profiles and reviews ------------------------------------------------------------------

    async def get_my_profile(self) -> s.ProfileOut:
        return await self.call("GET", "/profile", s.ProfileOut)

    async def put_my_profile(self, fields: s.ProfileFields | Mapping[str, Any]) -> s.ProfileOut:
        return await self.call("PUT", "/profile", s.ProfileOut,
                               body=as_struct(fields, s.ProfileFields))

    async def get_profile(self, peer_id: str) -> s.ProfileOut:
        return await self.call("GET", f"/profiles/{seg(peer_id)}", s.ProfileOut)

    async def list_reviews(self, peer_id: str, *, page_size: int = 50,
                           page_token: str | None = None) -> s.Page[s.ReviewOut]:
        return await self.call("GET", f"/profiles/{seg(peer_id)}/reviews", s.Page[s.ReviewOut],
                               query=s.Paging(page_size=page_size, page_token=page_token))

    # -- moderation, arbiters ------------------------------------------------------------------

    async def get_blocklist(self) -> s.Blocklist:
        return await self.call("GET", "/blocklist", s.Blocklist)

    async def block_peer(self, peer_id: str, reason: str = "") -> s.BlockPeer:
        return await self.call("POST", "/blocklist/peers", s.BlockPeer,
                               body=s.BlockPeer(peer=peer_id, reason=reason))

    async def unblock_peer(self, peer_id: str) -> None:
        await self.call_empty("DELETE", f"/blocklist/peers/{seg(peer_id)}")

    async def block_listing(self, publisher: str, listing_id: str, reason: str = ""
                            ) -> s.BlockListing:
        return await self.call("POST", "/blocklist/listings", s.BlockListing, body=s.BlockListing(
            publisher=publisher, listing_id=listing_id, reason=reason))

    async def unblock_listing(self, publisher: str, listing_id: str) -> None:
        await self.call_empty("DELETE", f"/blocklist/listings/{seg(publisher)}/{seg(listing_id)}")

    async def report_listing(self, publisher: str, listing_id: str, reason: ReportReason,
                             text: str = "") -> s.ReportOut:
        return await self.call("POST", "/reports", s.ReportOut, body=s.ReportFields(
            publisher=publisher, listing_id=listing_id, reason=reason, text=text))

    async def get_reports(self, peer_id: str, listing_id: str) -> s.ReportOut:
        return await self.call("GET", f"/sellers/{seg(peer_id)}/listings/{seg(listing_id)}/reports",
                               s.ReportOut)

    async def list_arbiters(self, *, page_size: int = 50, page_token: str | None = None
                            ) -> s.Page[s.ArbiterOut]:
        return await self.call("GET", "/arbiters", s.Page[s.ArbiterOut],
                               query=s.Paging(page_size=page_size, page_token=page_token))
