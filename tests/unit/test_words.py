"""The 24 recovery words: checks with a reason, SLIP-0010 ed25519, the identity they stand for."""

from __future__ import annotations

from pathlib import Path

import pytest
from mnemonic import Mnemonic

from p2pmarket.identity import Identity
from p2pmarket.keystore import TEST_KDF, create_keystore, open_keystore
from p2pmarket.words import (
    IDENTITY_PATH,
    BadWords,
    check_words,
    identity_from_words,
    new_words,
    seed_of,
    slip10_ed25519,
)

VECTOR_SEED = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


@pytest.mark.parametrize(("path", "key"), [
    ((), "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7"),
    ((0,), "68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3"),
    ((0, 1), "b1d0bad404bf35da785a64ca1ac54b2617211d2777696fbffaf208f746ae84f2"),
    ((0, 1, 2), "92a5b23c0b8a99e37d07df3fb9966917f5d06e02ddbd909c7e184371463e9fc9"),
    ((0, 1, 2, 2), "30d1dc7e5fc04c31219ab25a27ae00b50f6fd66622f6e9c913253d6511d1e662"),
])
def test_slip10_ed25519_matches_the_published_vectors(path: tuple[int, ...], key: str) -> None:
    assert slip10_ed25519(VECTOR_SEED, path).hex() == key


def test_identity_is_the_slip10_key_at_the_documented_path() -> None:
    words = new_words()
    expected = Identity.from_seed(slip10_ed25519(seed_of(words), IDENTITY_PATH))
    assert identity_from_words(words).public == expected.public
    assert identity_from_words(words.upper().replace(" ", "   ")).public == expected.public
    assert identity_from_words(new_words()).public != expected.public


@pytest.mark.parametrize(("phrase", "reason"), [
    ("abandon " * 23, "has 23 words; it needs 24"),
    ("abandon " * 23 + "bitcoinx", "word 24 ('bitcoinx') is not a BIP-39"),
    ("abandon " * 24, "bad checksum"),
    ("", "has 0 words"),
])
def test_bad_phrases_say_what_is_wrong(phrase: str, reason: str) -> None:
    with pytest.raises(BadWords, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_words(phrase)


def test_new_keystore_derives_its_identity_from_the_words(tmp_path: Path) -> None:
    ks = create_keystore(tmp_path / "keystore", "pw", kdf_params=TEST_KDF)
    assert ks.words_restore_identity
    assert ks.identity.public == identity_from_words(ks.mnemonic).public
    again = create_keystore(tmp_path / "again", "other", kdf_params=TEST_KDF, mnemonic=ks.mnemonic)
    assert again.identity.peer_id == ks.identity.peer_id


def test_an_older_keystore_keeps_its_random_identity(tmp_path: Path) -> None:
    # keystores written before the derivation held a random identity next to the words
    old = Identity.generate()
    words = Mnemonic("english").generate(strength=256)
    create_keystore(tmp_path / "keystore", "pw", kdf_params=TEST_KDF, identity=old,
                    mnemonic=words)
    opened = open_keystore(tmp_path / "keystore", "pw")
    assert opened.identity.public == old.public
    assert not opened.words_restore_identity
