"""`python -m p2pmarket`: the same as the `p2pmarket` console script."""

from __future__ import annotations

from p2pmarket.cli.main import main

raise SystemExit(main())
