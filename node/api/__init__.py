"""The node's local HTTP API (`/api/v1` on 127.0.0.1): server, routes, schemas, OpenAPI, events.

`server.ApiServer` runs it and writes `<datadir>/api.cookie` (the bearer token, 0600) and
`<datadir>/api.url` (the base URL, so `--api-port 0` is discoverable). Routes live in
`routes/`, one module per resource, declared once in a `registry.Routes` table that also
validates requests against the wire structs (`p2pmarket.api.schemas*`, shared with the
client) and feeds `openapi.py`. `hub.py` numbers
and buffers the events `/api/v1/events` streams. Errors are problem+json (`problems.py`); the
guards (Host, Origin, token, JSON bodies) are in `guard.py`. `p2pmarket.client` is the client.
"""
