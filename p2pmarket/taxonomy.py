"""The fixed category taxonomy of listings: top-level categories and their subcategories.

Paths are `top` or `top/sub`; every node ships the same table, so a path means the same everywhere.
"""

from __future__ import annotations

TAXONOMY: dict[str, tuple[str, ...]] = {
    "electronics": ("phones", "computers", "audio", "cameras", "gaming", "tv-video", "parts"),
    "fashion": ("women", "men", "kids", "shoes", "bags", "jewelry", "watches"),
    "home": ("furniture", "kitchen", "decor", "garden", "tools", "appliances"),
    "books": ("fiction", "non-fiction", "textbooks", "comics", "magazines"),
    "music": ("instruments", "vinyl", "cds", "equipment"),
    "movies": ("dvd-bluray", "collectibles"),
    "sports": ("bikes", "fitness", "outdoor", "water-sports", "winter-sports", "team-sports"),
    "toys": ("games", "puzzles", "models", "dolls", "baby"),
    "vehicles": ("cars", "motorcycles", "parts", "accessories"),
    "collectibles": ("coins", "stamps", "art", "antiques", "trading-cards"),
    "health-beauty": ("skincare", "makeup", "fragrance", "personal-care"),
    "pets": ("supplies", "aquarium", "accessories"),
    "crafts": ("supplies", "handmade", "sewing"),
    "services": ("repairs", "lessons", "design", "other"),
    "other": ("misc",),
}


def is_category(path: str) -> bool:
    """True for a known `top` or `top/sub` path."""
    top, _, sub = path.partition("/")
    if top not in TAXONOMY:
        return False
    return not sub or sub in TAXONOMY[top]


def category_prefixes(path: str) -> list[str]:
    """Every prefix of a category path, broadest first: `a/b` -> [`a`, `a/b`]."""
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def all_paths() -> list[str]:
    return [p for top, subs in TAXONOMY.items() for p in (top, *(f"{top}/{s}" for s in subs))]
