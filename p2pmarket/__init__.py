"""p2pmarket core: identity, keystore, signed records, codec, config, storage and the CLI."""

from __future__ import annotations

__version__ = "0.1.0"
