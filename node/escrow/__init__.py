"""The node's escrow shell: the driver and its collaborators (steps, reconciler, intake) sharing
one escrow book, the escrow store, the arbiter advert (adverts) and arbitration (arbiters).
"""
