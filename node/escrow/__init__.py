"""The node's escrow shell: the driver and its collaborators (steps, reconciler, intake), the
escrow book and store, and the arbiter service.
"""
