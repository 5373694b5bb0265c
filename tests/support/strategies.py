"""Hypothesis strategies for every record body kind, within the schemas' constraints."""

from __future__ import annotations

from hypothesis import strategies as st

from p2pmarket.geohash import ALPHABET
from p2pmarket.taxonomy import all_paths
from p2pmarket.wire import bodies as b

key32 = st.binary(min_size=32, max_size=32)
object_id = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
                    min_size=8, max_size=64)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
nonblank = text.filter(lambda s: bool(s.strip())).map(lambda s: s[:64])
amount = st.integers(0, 2**53)
price = st.builds(b.Price, amount, st.sampled_from(["BTC", "USD", "EUR", "GBP"]))
geohash = st.text(alphabet=ALPHABET, min_size=1, max_size=12)
location = st.builds(b.Location, st.sampled_from(["DE", "FR", "US", "JP"]), geohash)
image = st.builds(b.ImageRef, key32, st.sampled_from(["image/jpeg", "image/png"]),
                  st.integers(1, b.MAX_IMAGE_BYTES))
category = st.sampled_from(all_paths())


@st.composite
def shipping(draw: st.DrawFn) -> b.ShippingOption:
    lo = draw(st.integers(0, 365))
    return b.ShippingOption(draw(st.sampled_from(["DE", "worldwide"])), draw(amount), lo,
                            draw(st.integers(lo, 365)))


listing = st.builds(
    b.Listing,
    id=object_id, title=nonblank, description=text, price=price, category=category,
    condition=st.sampled_from(["new", "like-new", "good", "fair", "for-parts"]),
    quantity=st.integers(0, 1_000_000), location=location,
    shipping=st.lists(shipping(), max_size=3).map(tuple),
    images=st.lists(image, max_size=3).map(tuple),
    tags=st.lists(text.filter(bool).map(lambda s: s[:32]), max_size=4).map(tuple),
    arbiters=st.lists(key32, max_size=2).map(tuple),
)
profile = st.builds(b.Profile, name=nonblank, bio=text, avatar=st.none() | image,
                    location=st.none() | location)
peer = st.builds(b.Peer, addrs=st.lists(st.just("/ip4/127.0.0.1/tcp/4001"), min_size=1,
                                        max_size=3).map(tuple), enc_key=key32)
index = st.builds(b.IndexEntry, scope=st.sampled_from(["kw", "cat", "geo"]), term=nonblank,
                  listing_id=object_id, listing_seq=st.integers(0, 2**63 - 1), title=nonblank,
                  price=price, category=category)
review = st.builds(b.Review, seller=key32, order_id=object_id, rating=st.integers(1, 5),
                   text=text, grant=st.binary(min_size=64, max_size=64))
arbiter = st.builds(b.Arbiter, name=nonblank, description=text,
                    fee_percent_bp=st.integers(0, 2000), fee_fixed_sat=st.integers(0, 10_000_000))
mail = st.builds(b.Mail, id=object_id, recipient=key32, ephemeral=key32,
                 nonce=st.binary(min_size=12, max_size=12),
                 ciphertext=st.binary(min_size=16, max_size=200))
tombstone = st.builds(b.Tombstone, target_kind=st.sampled_from(["listing", "profile", "arbiter"]),
                      target_id=object_id) | st.builds(
    b.Tombstone, target_kind=st.just("mail"), target_id=object_id, recipient=key32)

report = st.builds(b.Report, listing_publisher=key32, listing_id=object_id,
                   reason=st.sampled_from(["scam", "spam", "other"]), text=text)
holder = st.builds(b.Holder, sha256=key32)
keeper = st.builds(b.Keeper, budget=st.integers(1, 2**50), per_publisher=st.integers(1, 2**50))

BY_KIND = {
    "listing": listing, "profile": profile, "peer": peer, "index": index, "review": review,
    "arbiter": arbiter, "mail": mail, "tombstone": tombstone, "report": report,
    "holder": holder, "keeper": keeper,
}
