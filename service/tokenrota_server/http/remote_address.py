"""A request's remote address: the direct peer, or what trusted proxies say in X-Forwarded-For.

Anyone can send an X-Forwarded-For header, so it is believed only when the direct peer is one of
`TRUSTED_PROXIES`, and then read from the right: each trusted proxy appends the address it saw,
and the first address that is not itself a trusted proxy is the caller's. Whatever lies left of
it was written by the caller and is ignored.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.requests import Request

from tokenrota_server.config import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def remote_address(request: Request[Any], settings: Settings) -> str | None:
    """The address the throttle counts and a session records; None if the server has none."""
    peer = request.client.host if request.client else None
    # No trusted proxies (the default): the peer, without parsing it, on every request's log line.
    if peer is None or not settings.trusted_proxies:
        return peer
    if not _is_trusted(peer, settings.trusted_proxies):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
    ]
    address = peer
    for hop in reversed(hops):
        try:
            parsed = ipaddress.ip_address(hop)
        except ValueError:
            # Not an address: it cannot have come from a proxy we trust; stop at the last hop.
            break
        address = str(parsed)
        if not _is_trusted(address, settings.trusted_proxies):
            break
    return address


def _is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)
