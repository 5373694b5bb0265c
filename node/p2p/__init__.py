"""node/p2p package of p2pmarket."""
