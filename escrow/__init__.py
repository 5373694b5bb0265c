"""escrow package of p2pmarket."""
