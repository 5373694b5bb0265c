"""tui package of p2pmarket."""
