"""The local control socket: wire protocol, server, and the API methods behind it.

`protocol` is pure; `server` is the trio driver; `api`/`jobs_api` are the method tables.
"""
