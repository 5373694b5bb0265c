"""Market services: listings, search, profiles, negotiation, orders, reviews, moderation."""
