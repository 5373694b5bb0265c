"""dht package of p2pmarket."""
