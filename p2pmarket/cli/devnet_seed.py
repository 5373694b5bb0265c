"""Sample listings for `p2pmarket devnet`: realistic items across the taxonomy, each with a tiny
generated PNG and a location; the BTC ones name the devnet's arbiter (so escrow works)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

from p2pmarket.geohash import encode

# (name, country, latitude, longitude)
PLACES: tuple[tuple[str, str, float, float], ...] = (
    ("Berlin", "DE", 52.52, 13.405),
    ("Munich", "DE", 48.137, 11.575),
    ("Hamburg", "DE", 53.551, 9.993),
    ("Vienna", "AT", 48.208, 16.373),
    ("Zurich", "CH", 47.377, 8.541),
    ("Paris", "FR", 48.857, 2.352),
    ("Lyon", "FR", 45.764, 4.836),
    ("Amsterdam", "NL", 52.370, 4.895),
    ("London", "GB", 51.507, -0.128),
    ("Manchester", "GB", 53.481, -2.243),
    ("Madrid", "ES", 40.417, -3.704),
    ("Milan", "IT", 45.464, 9.190),
    ("New York", "US", 40.713, -74.006),
    ("San Francisco", "US", 37.775, -122.419),
    ("Toronto", "CA", 43.653, -79.383),
    ("Tokyo", "JP", 35.676, 139.650),
    ("Sydney", "AU", -33.869, 151.209),
)


@dataclass(frozen=True)
class Sample:
    title: str
    description: str
    category: str
    condition: str
    amount: int  # minor units: cents, or sats for BTC
    currency: str
    tags: tuple[str, ...]
    color: tuple[int, int, int]
    quantity: int = 1


SAMPLES: tuple[Sample, ...] = (
    Sample("iPhone 13, 128 GB, midnight", "Battery health 89%, always in a case, original box.",
           "electronics/phones", "good", 420_00, "EUR", ("iphone", "apple"), (30, 30, 40)),
    Sample("ThinkPad X1 Carbon Gen 9", "i7, 16 GB RAM, 512 GB SSD, new keyboard. Runs Linux.",
           "electronics/computers", "like-new", 2_100_000, "BTC", ("laptop", "thinkpad"),
           (20, 20, 20)),
    Sample("Sony WH-1000XM4 headphones", "Noise cancelling, with case and cable.",
           "electronics/audio", "like-new", 180_00, "EUR", ("headphones", "sony"), (10, 10, 10)),
    Sample("Fujifilm X-T3 body", "23k shutter count, two batteries, no scratches on the screen.",
           "electronics/cameras", "good", 1_600_000, "BTC", ("camera", "fujifilm"),
           (90, 90, 95)),
    Sample("Nintendo Switch OLED + 2 games", "Zelda and Mario Kart included, white Joy-Cons.",
           "electronics/gaming", "like-new", 260_00, "GBP", ("switch", "nintendo"),
           (230, 40, 40)),
    Sample("Raspberry Pi 4 (4 GB) with case", "Official PSU, 32 GB SD card with Raspberry Pi OS.",
           "electronics/parts", "good", 95_000, "BTC", ("raspberry-pi", "sbc"), (190, 30, 70),
           quantity=3),
    Sample("Vintage denim jacket, size M", "Levi's trucker jacket from the 90s, light wash.",
           "fashion/men", "good", 65_00, "EUR", ("denim", "vintage"), (70, 100, 160)),
    Sample("Leather ankle boots, EU 39", "Worn twice, dark brown, resoled.",
           "fashion/shoes", "like-new", 70_00, "EUR", ("boots", "leather"), (100, 60, 30)),
    Sample("Seiko 5 automatic watch", "SNK809, new NATO strap, keeps good time.",
           "fashion/watches", "good", 140_000, "BTC", ("watch", "seiko"), (60, 70, 50)),
    Sample("Canvas tote bag, handmade", "Screen printed, heavy cotton, inner pocket.",
           "fashion/bags", "new", 25_00, "CHF", ("tote", "handmade"), (220, 210, 180),
           quantity=10),
    Sample("Oak dining table, 6 seats", "Solid oak, 180 x 90 cm. Pick-up only.",
           "home/furniture", "good", 350_00, "EUR", ("table", "oak"), (160, 120, 70)),
    Sample("Cast iron teapot, 1 l", "Japanese tetsubin style with strainer.",
           "home/kitchen", "like-new", 45_00, "EUR", ("teapot", "cast-iron"), (40, 45, 40)),
    Sample("Bosch cordless drill 18 V", "Two batteries, charger and bit set in the case.",
           "home/tools", "good", 300_000, "BTC", ("drill", "bosch"), (20, 120, 90)),
    Sample("Monstera deliciosa, 80 cm", "Healthy plant in a ceramic pot.",
           "home/garden", "new", 30_00, "EUR", ("plant", "monstera"), (40, 140, 60)),
    Sample("Espresso machine Gaggia Classic", "Descaled last month, OPV mod, steam wand works.",
           "home/appliances", "good", 220_00, "EUR", ("espresso", "coffee"), (180, 180, 190)),
    Sample("Dune - first paperback edition", "Some shelf wear, pages intact.",
           "books/fiction", "fair", 35_00, "USD", ("dune", "sci-fi"), (200, 150, 60)),
    Sample("SICP, 2nd edition", "Structure and Interpretation of Computer Programs, hardcover.",
           "books/textbooks", "good", 40_000, "BTC", ("programming", "mit"), (120, 40, 120)),
    Sample("Watchmen graphic novel", "Deluxe hardcover, read once.",
           "books/comics", "like-new", 28_00, "GBP", ("comics", "alan-moore"), (230, 200, 40)),
    Sample("Fender Player Stratocaster", "Sunburst, new strings, gig bag included.",
           "music/instruments", "good", 900_000, "BTC", ("guitar", "fender"), (200, 90, 30)),
    Sample("Pink Floyd - The Dark Side of the Moon (LP)", "2016 remaster, played a few times.",
           "music/vinyl", "like-new", 25_00, "EUR", ("vinyl", "pink-floyd"), (15, 15, 15)),
    Sample("Behringer X32 mixer", "Digital mixer, road case, all faders work.",
           "music/equipment", "good", 1_100_00, "EUR", ("mixer", "live"), (50, 50, 60)),
    Sample("Blade Runner 4K collector's box", "Sealed, includes the final cut.",
           "movies/collectibles", "new", 60_00, "USD", ("blade-runner", "4k"), (240, 90, 40)),
    Sample("Road bike, 56 cm steel frame", "Shimano 105, new tyres, serviced in spring.",
           "sports/bikes", "good", 450_000, "BTC", ("bike", "road"), (200, 30, 30)),
    Sample("Adjustable dumbbells 2 x 24 kg", "Quick-change dial, with stand.",
           "sports/fitness", "like-new", 250_00, "EUR", ("dumbbells", "gym"), (60, 60, 60)),
    Sample("2-person tent, 1.6 kg", "Freestanding, used on three trips, no holes.",
           "sports/outdoor", "good", 120_00, "CHF", ("tent", "camping"), (240, 140, 20)),
    Sample("Snowboard 156 cm + bindings", "Burton Custom, waxed and edges sharpened.",
           "sports/winter-sports", "good", 280_00, "CAD", ("snowboard", "burton"), (30, 60, 160)),
    Sample("LEGO Millennium Falcon 75257", "Complete with manual and box.",
           "toys/models", "like-new", 110_00, "EUR", ("lego", "star-wars"), (150, 150, 150)),
    Sample("Catan board game", "German edition, all pieces, seafarers expansion too.",
           "toys/games", "good", 35_00, "EUR", ("catan", "board-game"), (220, 120, 40)),
    Sample("Wooden baby rocker", "Beech wood, for babies up to 9 kg.",
           "toys/baby", "good", 55_00, "EUR", ("baby", "wood"), (230, 200, 160)),
    Sample("VW Golf IV roof rack", "Thule bars with locks and keys.",
           "vehicles/accessories", "good", 75_00, "EUR", ("roof-rack", "thule"), (30, 30, 30)),
    Sample("Honda CB500 front brake caliper", "Used, works, pads at 60%.",
           "vehicles/parts", "fair", 40_000, "BTC", ("honda", "brake"), (120, 120, 110)),
    Sample("Silver Britannia 1 oz coin (2021)", "In capsule, no marks.",
           "collectibles/coins", "new", 45_000, "BTC", ("silver", "bullion"), (200, 200, 210),
           quantity=5),
    Sample("Original watercolour: Alpine lake", "30 x 40 cm, signed, unframed.",
           "collectibles/art", "new", 150_00, "EUR", ("art", "watercolour"), (80, 160, 200)),
    Sample("Pokemon base set Charizard", "Unlimited edition, light play.",
           "collectibles/trading-cards", "fair", 2_000_000, "BTC", ("pokemon", "tcg"),
           (240, 120, 30)),
    Sample("Unopened perfume, 50 ml", "Gift, not my style. Sealed box.",
           "health-beauty/fragrance", "new", 50_00, "GBP", ("perfume", "gift"), (230, 180, 200)),
    Sample("Aquarium 60 l with filter", "Glass tank, filter, heater, LED lid.",
           "pets/aquarium", "good", 60_00, "EUR", ("aquarium", "fish"), (40, 120, 200)),
    Sample("Hand-knitted wool scarf", "Merino, 180 cm, made to order in your colour.",
           "crafts/handmade", "new", 30_000, "BTC", ("knitting", "wool"), (150, 30, 60),
           quantity=4),
    Sample("Bike repair at your place", "Brakes, gears, tyres. Price per hour, parts extra.",
           "services/repairs", "new", 35_00, "EUR", ("bike", "repair"), (60, 140, 60),
           quantity=20),
    Sample("Guitar lessons (online, 45 min)", "Beginners and intermediate, any style.",
           "services/lessons", "new", 60_000, "BTC", ("guitar", "lessons"), (120, 80, 40),
           quantity=50),
    Sample("Box of assorted cables", "HDMI, USB-C, Lightning, power. Take them all.",
           "other/misc", "fair", 5_00, "EUR", ("cables", "bundle"), (90, 90, 90)),
)


def png(color: tuple[int, int, int], size: int = 16) -> bytes:
    """A tiny solid-colour PNG with a lighter diagonal stripe (a valid image, ~100 bytes)."""
    light = tuple(min(255, c + 60) for c in color)
    rows = b"".join(
        b"\x00" + b"".join(bytes(light if abs(x - y) <= 1 else color) for x in range(size))
        for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def listing_fields(index: int, sample: Sample, image: dict[str, Any] | None,
                   arbiter: str | None) -> dict[str, Any]:
    """The API body of sample `index` (its place and shipping follow from the index)."""
    _, country, lat, lon = PLACES[index % len(PLACES)]
    btc = sample.currency == "BTC"
    shipping_price = 2_000 if btc else 5_90
    fields: dict[str, Any] = {
        "title": sample.title, "description": sample.description,
        "price": {"amount": sample.amount, "currency": sample.currency},
        "category": sample.category, "condition": sample.condition,
        "quantity": sample.quantity, "tags": list(sample.tags),
        "location": {"country": country, "geohash": encode(lat, lon, 6)},
        "shipping": [{"region": country, "price": shipping_price, "days_min": 1, "days_max": 4},
                     {"region": "worldwide", "price": shipping_price * 3, "days_min": 5,
                      "days_max": 14}],
        "images": [image] if image else [],
    }
    if btc and arbiter:
        fields["arbiters"] = [arbiter]
    return fields
