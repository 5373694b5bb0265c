"""SQLite persistence of the devchain (component "devchain"): raw blocks by height, the mempool in
arrival order, and a small key/value table (the faucet key). Blocking: call from a worker thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from escrow.devchain.primitives import Block, Tx
from p2pmarket.storage import Database

log = logging.getLogger(__name__)

COMPONENT = "devchain"
MIGRATIONS = [
    """
    CREATE TABLE devchain_blocks (
        height INTEGER PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        raw BLOB NOT NULL
    );
    CREATE TABLE devchain_mempool (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        txid BLOB NOT NULL UNIQUE,
        raw BLOB NOT NULL
    );
    CREATE TABLE devchain_meta (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    """,
]


class DevchainStore:
    """Blocks and mempool on disk; the chain state is rebuilt from them at start."""

    def __init__(self, db: Database, owns_db: bool = False) -> None:
        self.db = db
        self._owns_db = owns_db
        db.migrate(COMPONENT, MIGRATIONS)

    @classmethod
    def open(cls, path: Path | str | Database) -> DevchainStore:
        if isinstance(path, Database):
            return cls(path)
        return cls(Database.open(path), owns_db=True)

    def load_blocks(self) -> list[bytes]:
        rows = self.db.query("SELECT height, raw FROM devchain_blocks ORDER BY height")
        for expected, row in enumerate(rows):
            if row["height"] != expected:
                raise ValueError(f"devchain database misses block {expected}")
        return [bytes(row["raw"]) for row in rows]

    def load_mempool(self) -> list[bytes]:
        rows = self.db.query("SELECT raw FROM devchain_mempool ORDER BY seq")
        return [bytes(row["raw"]) for row in rows]

    def add_block(self, height: int, block: Block) -> None:
        """The block, and its transactions leave the stored mempool, in one transaction."""
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO devchain_blocks(height, hash, raw) VALUES (?, ?, ?)",
                (height, block.hash, block.serialize()),
            )
            self.db.executemany(
                "DELETE FROM devchain_mempool WHERE txid = ?", [(tx.txid,) for tx in block.txs]
            )

    def add_blocks(self, first_height: int, blocks: list[Block]) -> None:
        with self.db.transaction():
            for offset, block in enumerate(blocks):
                self.add_block(first_height + offset, block)

    def add_mempool(self, tx: Tx) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO devchain_mempool(txid, raw) VALUES (?, ?)", (tx.txid, tx.raw)
        )

    def drop_mempool(self, txids: list[bytes]) -> None:
        self.db.executemany("DELETE FROM devchain_mempool WHERE txid = ?", [(t,) for t in txids])

    def change_mempool(self, added: list[Tx], removed: list[bytes]) -> None:
        """Removals, then additions, in one transaction."""
        with self.db.transaction():
            self.drop_mempool(removed)
            for tx in added:
                self.add_mempool(tx)

    def rewind(self, height: int, mempool: list[Tx]) -> None:
        """After a reorg: blocks above `height` go and the mempool is `mempool`, in order."""
        with self.db.transaction():
            self.db.execute("DELETE FROM devchain_blocks WHERE height > ?", (height,))
            self.db.execute("DELETE FROM devchain_mempool")
            for tx in mempool:
                self.add_mempool(tx)

    def get_meta(self, key: str) -> bytes | None:
        row = self.db.query_one("SELECT value FROM devchain_meta WHERE key = ?", (key,))
        return None if row is None else bytes(row["value"])

    def set_meta(self, key: str, value: bytes) -> None:
        self.db.execute(
            "INSERT INTO devchain_meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def close(self) -> None:
        if self._owns_db:
            self.db.close()
