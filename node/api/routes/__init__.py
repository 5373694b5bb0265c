"""The API's routes, one module per resource, each a `registry.Routes` table.
"""
