"""tokenrota: check, fetch and test against the tokens of a tokenrota server.

The library other projects import (light: starlette, python-jose, httpx):
`tokenrota.verify` for resource servers (with `tokenrota.revocations` to follow the revocation
feed), `tokenrota.httpx_auth` for calling services,
`tokenrota.testing` for pytest. The server itself is `tokenrota_server` (the `server` extra).
"""
