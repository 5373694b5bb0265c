"""The local HTTP API's contract, shared by the node's server (node/api) and the client:
request/response structs and the live events.
"""
