"""Search terms of a listing, sans-IO: keyword tokens, category prefixes, geohash prefixes.

The same functions index a listing when it is published and parse a query when it is searched,
so both sides agree on every term.
"""

from __future__ import annotations

import re
import unicodedata

from p2pmarket.taxonomy import category_prefixes
from p2pmarket.wire.bodies import IndexScope, Listing

STOP_WORDS = frozenset("""
a an and are as at be but by for from has have in is it its of on or the this that to was were
will with very new used for sale sell selling buy only great good nice
der die das und mit für ein eine le la les et de des un une pour el los las y con para
""".split())
MAX_TOKENS = 16
GEO_PREFIXES = range(2, 6)
_WORD = re.compile(r"\w+", re.UNICODE)


def tokens(text: str, limit: int = MAX_TOKENS) -> list[str]:
    """Normalised keywords in order of first appearance: NFKC, casefold, no stop words."""
    out: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).casefold()):
        word = word.strip("_")
        if len(word) < 2 or word in STOP_WORDS or word.isdigit() and len(word) < 3:
            continue
        if word not in out:
            out.append(word[:64])
            if len(out) >= limit:
                break
    return out


def listing_terms(listing: Listing) -> list[tuple[IndexScope, str]]:
    """Every (scope, term) a listing is indexed under."""
    words = tokens(" ".join((listing.title, *listing.tags)))
    terms: list[tuple[IndexScope, str]] = [("kw", w) for w in words]
    terms += [("cat", p) for p in category_prefixes(listing.category)]
    gh = listing.location.geohash
    terms += [("geo", gh[:n]) for n in GEO_PREFIXES if len(gh) >= n]
    return terms
