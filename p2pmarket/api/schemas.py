"""Wire schemas of the local HTTP API (node, listings, search, images, profiles, moderation).

Server and client share these msgspec structs; the OpenAPI document is generated from them.
Conventions: a node is named by its peer id (`12D3KooW...`), hashes and keys that name no node
are lowercase hex, amounts are integers in minor units (cents, or sats for BTC).
"""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from p2pmarket.taxonomy import all_paths
from p2pmarket.wire.bodies import (
    MAX_IMAGE_BYTES,
    Amount,
    Condition,
    Currency,
    EscrowTerms,
    Location,
    Mime,
    ObjectId,
    Price,
    ReportReason,
    ShippingOption,
    Tag,
)

PEER_ID_PATTERN = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"
Category = Annotated[str, Meta(
    min_length=1, max_length=64, extra_json_schema={"enum": all_paths()},
    description="A category path of the fixed taxonomy: `top` or `top/sub`.")]
PeerId = Annotated[str, Meta(
    pattern=PEER_ID_PATTERN,
    description="A node's libp2p peer id: base58 of its Ed25519 public key (always 12D3KooW...)."
                " Every field that names a node (publisher, seller, buyer, sender, recipient,"
                " arbiter, blocked peer) uses this form.",
    examples=["12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"])]
Hex32 = Annotated[str, Meta(
    pattern=r"^[0-9a-f]{64}$",
    description="32 bytes as lowercase hex (content hashes, and keys that name no node).")]
PageSize = Annotated[int, Meta(ge=1, le=500, description="Items per page (1..500).")]
PageToken = Annotated[str, Meta(max_length=200, description=(
    "Opaque cursor: the `next_page_token` of the previous page."))]
Reason = Annotated[str, Meta(max_length=1000)]
T = TypeVar("T")


class Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of request and response bodies: unknown fields are refused (422)."""


class Page(Wire, Generic[T], frozen=True):
    """One page of a list; pass `next_page_token` back as `page_token` for the next one."""

    items: list[T]
    next_page_token: str | None = None


class Paging(Wire, frozen=True):
    """Query parameters of every list endpoint."""

    page_size: PageSize = 50
    page_token: PageToken | None = None


class Empty(Wire, frozen=True):
    """A JSON object with no fields: the body of an action that needs no arguments."""


class ReasonBody(Wire, frozen=True):
    reason: Reason = ""


# -- node ----------------------------------------------------------------------------------------


class Version(Wire, frozen=True):
    name: str
    version: str
    api: str


class DhtStatusOut(Wire, frozen=True):
    listening: str | None  # "host:port" of the UDP socket
    contacts: int
    records_held: int
    bootstrapped: bool
    bootstrap_addrs: int = 0  # bootstrap nodes configured
    next_bootstrap_retry: float | None = None  # seconds until the next try, while not joined


class ChainStatusOut(Wire, frozen=True):
    """The escrow's chain backend as this node last saw it (read at most every few seconds)."""

    network: str
    backend: str  # the Esplora URL
    tip_height: int | None  # None: the backend did not answer (see `error`)
    error: str = ""


class NodeStatus(Wire, frozen=True):
    peer_id: PeerId | None
    version: str
    state: Literal["starting", "running", "stopping"]
    uptime: float  # seconds since the API started
    last_event_id: int  # stream events from here (`Last-Event-ID`) to miss nothing after this
    starting: list[str] = msgspec.field(default_factory=list)  # parts not yet up
    dht: DhtStatusOut | None = None
    listen_addrs: list[str] = msgspec.field(default_factory=list)
    connected_peers: int = 0
    my_listings: int = 0
    cached_listings: int = 0
    offers: int = 0
    orders: int = 0
    escrow: bool = False  # escrow and wallet endpoints are available
    chain: ChainStatusOut | None = None  # with escrow on


class Stopping(Wire, frozen=True):
    state: Literal["stopping"] = "stopping"


class PeerOut(Wire, frozen=True):
    peer: PeerId
    connected: bool


class PeerInfo(Wire, frozen=True):
    peer: PeerId
    connected: bool
    addrs: list[str]  # from the peer's signed record in the DHT; empty if none was found
    banned: bool
    blocked: bool
    misbehaviour: int


# -- listings ------------------------------------------------------------------------------------


class ImageRef(Wire, frozen=True):
    sha256: Hex32
    mime: Mime
    size: Annotated[int, Meta(ge=1, le=MAX_IMAGE_BYTES)]


class ImageUpload(Wire, frozen=True):
    mime: Mime
    data: Annotated[bytes, Meta(min_length=1, max_length=MAX_IMAGE_BYTES,
                                description="The image bytes, base64.")]


class ListingFields(Wire, frozen=True):
    """A new listing. `id` is chosen by the node when left out."""

    title: Annotated[str, Meta(min_length=1, max_length=120)]
    price: Price
    category: Category
    condition: Condition
    location: Location
    quantity: Annotated[int, Meta(ge=0, le=1_000_000)] = 1
    description: Annotated[str, Meta(max_length=4000)] = ""
    shipping: Annotated[list[ShippingOption], Meta(max_length=10)] = []
    images: Annotated[list[ImageRef], Meta(max_length=8)] = []
    tags: Annotated[list[Tag], Meta(max_length=10)] = []
    arbiters: Annotated[list[PeerId], Meta(max_length=8)] = []
    escrow: EscrowTerms | None = None
    id: ObjectId | None = None


class ListingPatch(Wire, frozen=True):
    """Changes to one of my listings; fields left out stay as they are."""

    title: Annotated[str, Meta(min_length=1, max_length=120)] | UnsetType = UNSET
    price: Price | UnsetType = UNSET
    category: Category | UnsetType = UNSET
    condition: Condition | UnsetType = UNSET
    location: Location | UnsetType = UNSET
    quantity: Annotated[int, Meta(ge=0, le=1_000_000)] | UnsetType = UNSET
    description: Annotated[str, Meta(max_length=4000)] | UnsetType = UNSET
    shipping: Annotated[list[ShippingOption], Meta(max_length=10)] | UnsetType = UNSET
    images: Annotated[list[ImageRef], Meta(max_length=8)] | UnsetType = UNSET
    tags: Annotated[list[Tag], Meta(max_length=10)] | UnsetType = UNSET
    arbiters: Annotated[list[PeerId], Meta(max_length=8)] | UnsetType = UNSET
    escrow: EscrowTerms | UnsetType = UNSET


class ListingOut(Wire, frozen=True):
    """A signed listing: its content and record metadata (`hash` binds offers to a version)."""

    publisher: PeerId
    id: str
    seq: int
    created: int  # unix seconds
    expires: int
    hash: Hex32
    mine: bool
    title: str
    description: str
    price: Price
    category: str
    condition: Condition
    quantity: int
    location: Location
    shipping: list[ShippingOption]
    images: list[ImageRef]
    tags: list[str]
    arbiters: list[PeerId]
    escrow: EscrowTerms
    # mine: when a DHT node last stored this version; null while no peer has stored it (the
    # node keeps trying). Always null for others' listings.
    published_at: float | None = None


class ListingQuery(Paging, frozen=True):
    refresh: bool = False  # ask the DHT for a newer version than the cached one


SortOrder = Literal["relevance", "price", "newest", "distance"]


class SearchQuery(Paging, frozen=True):
    """Market filters. `near` is "lat,lon"; `mode`: `network` asks the DHT then answers,
    `cache` answers from cached listings only, `background` answers from the cache now and
    sends `listing.found` events as the network answers. Later pages read the cache."""

    q: Annotated[str, Meta(max_length=200)] = ""
    category: Category | None = None
    price_min: Amount | None = None
    price_max: Amount | None = None
    currency: Currency | None = None
    condition: list[Condition] = []
    near: Annotated[str, Meta(pattern=r"^-?\d+(\.\d+)?,-?\d+(\.\d+)?$")] | None = None
    radius_km: Annotated[float, Meta(gt=0, le=20_000)] | None = None
    seller: PeerId | None = None
    include_sold_out: bool = False
    sort: SortOrder = "relevance"
    mode: Literal["network", "cache", "background"] = "network"


class SearchHit(Wire, frozen=True):
    listing: ListingOut
    distance_km: float | None
    rank: float


class SearchPage(Page[SearchHit], frozen=True):
    total: int = 0  # at least this many matches (exact when `next_page_token` is null)


class ImageQuery(Wire, frozen=True):
    peer: PeerId | None = None  # who to fetch it from when this node does not have it


# -- profiles and reviews ------------------------------------------------------------------------


class ProfileFields(Wire, frozen=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    bio: Annotated[str, Meta(max_length=1000)] = ""
    avatar: ImageRef | None = None
    location: Location | None = None


class ProfileOut(Wire, frozen=True):
    peer: PeerId
    found: bool  # false: no profile record in the DHT (name and bio are empty)
    name: str = ""
    bio: str = ""
    avatar: ImageRef | None = None
    location: Location | None = None
    seq: int = 0
    reviews: int = 0
    rating: float | None = None  # mean stars, when there are reviews


class ReviewOut(Wire, frozen=True):
    seller: PeerId
    order_id: str
    rating: int
    text: str
    created: int
    rating_key: Hex32  # the buyer's per-order review key (it names no node)


# -- moderation, arbiters ------------------------------------------------------------------------


class BlockPeer(Wire, frozen=True):
    peer: PeerId
    reason: Reason = ""


class BlockListing(Wire, frozen=True):
    publisher: PeerId
    listing_id: ObjectId
    reason: Reason = ""


class BlockedPeer(Wire, frozen=True):
    peer: PeerId
    reason: str
    created: float


class BlockedListing(Wire, frozen=True):
    publisher: PeerId
    listing_id: str
    reason: str
    created: float


class Blocklist(Wire, frozen=True):
    peers: list[BlockedPeer]
    listings: list[BlockedListing]


class ReportFields(Wire, frozen=True):
    publisher: PeerId
    listing_id: ObjectId
    reason: ReportReason
    text: Annotated[str, Meta(max_length=1000)] = ""


class ReportOut(Wire, frozen=True):
    publisher: PeerId
    listing_id: str
    reports: int  # distinct reporters found in the DHT
    # when a DHT node stored my report (POST); null: stored nowhere yet (the node keeps trying)
    published_at: float | None = None


class ArbiterOut(Wire, frozen=True):
    peer: PeerId
    name: str
    description: str
    fee_percent_bp: int  # basis points of the escrowed amount
    fee_fixed_sat: int
    expires: int


# -- my records in the DHT ---------------------------------------------------------------------


class OwnRecordOut(Wire, frozen=True):
    """One record this node signed and keeps alive in the DHT (renewed before it expires)."""

    kind: str  # listing, profile, arbiter, peer, review, report
    id: str  # listing id, order id (review), PEER_ID/LISTING_ID (report); "" for one per node
    key: str  # the DHT key, hex
    seq: int
    expires: int  # unix time; renewed RENEW_BEFORE (7 days) ahead while the node runs
    published_at: float | None  # when a DHT node last stored this version; null: not yet
    error: str | None = None  # why it is stored nowhere (null when published)
