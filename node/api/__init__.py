"""node/api package of p2pmarket."""
