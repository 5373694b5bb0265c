"""The TUI's screens: market, listing, orders, inbox, sell and network."""
