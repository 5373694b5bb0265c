"""Everything signed that leaves a node: the envelope codec, record bodies, DHT keys,
peer messages (market and escrow) and the hash-chained order steps.
"""
