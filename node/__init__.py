"""node package of p2pmarket."""
