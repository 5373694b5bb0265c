"""The 24 recovery words (BIP-39, English) and the keys derived from them.

Everything a node owns that is worth restoring comes from one phrase:

- the **identity** (Ed25519, the peer id): SLIP-0010 ed25519 from the BIP-39 seed (no BIP-39
  passphrase), path ``m/696'/0'/0'`` ("p2pmarket", account 0, key 0); the 32-byte private
  key is the Ed25519 seed;
- the **wallet**: BIP-84 ``m/84'/coin'/0'`` of the same seed (`escrow.bitcoin.HotWallet`);
- the **per-order escrow keys**: see `escrow.bitcoin.derive_order_key`.

Keystores written before the identity was derived keep a random identity; for them the words
bring back the wallet and escrow keys only, and a backup file is the way to keep the peer id.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

from mnemonic import Mnemonic

from p2pmarket.identity import Identity

WORD_COUNT = 24
IDENTITY_PATH = (696, 0, 0)  # all hardened: m/696'/0'/0'
_HARDENED = 0x8000_0000
_wordlist = Mnemonic("english")
_known = frozenset(_wordlist.wordlist)


class BadWords(ValueError):
    """The phrase is not 24 valid English BIP-39 words; the message says what is wrong."""


def check_words(phrase: str) -> str:
    """The phrase normalised (NFKD, lower case, single spaces), or BadWords saying why not."""
    words = unicodedata.normalize("NFKD", phrase).lower().split()
    if len(words) != WORD_COUNT:
        raise BadWords(f"the recovery phrase has {len(words)} words; it needs {WORD_COUNT}")
    for position, word in enumerate(words, 1):
        if word not in _known:
            raise BadWords(f"word {position} ({word!r}) is not a BIP-39 English word")
    joined = " ".join(words)
    if not _wordlist.check(joined):
        raise BadWords("the recovery phrase has a bad checksum: a word is wrong or out of order")
    return joined


def new_words() -> str:
    """A fresh phrase from 256 bits of the OS's randomness."""
    words: str = _wordlist.generate(strength=256)
    return words


def seed_of(phrase: str) -> bytes:
    """The 64-byte BIP-39 seed (empty BIP-39 passphrase)."""
    seed: bytes = _wordlist.to_seed(phrase)
    return seed


def slip10_ed25519(seed: bytes, path: tuple[int, ...]) -> bytes:
    """SLIP-0010 ed25519 private key at `path` (every index hardened, as ed25519 requires)."""
    digest = hmac.new(b"ed25519 seed", seed, hashlib.sha512).digest()
    key, chain = digest[:32], digest[32:]
    for index in path:
        data = b"\x00" + key + (index | _HARDENED).to_bytes(4, "big")
        digest = hmac.new(chain, data, hashlib.sha512).digest()
        key, chain = digest[:32], digest[32:]
    return key


def identity_from_words(phrase: str) -> Identity:
    """The node identity the phrase stands for (see the module doc for the path)."""
    return Identity.from_seed(slip10_ed25519(seed_of(check_words(phrase)), IDENTITY_PATH))
