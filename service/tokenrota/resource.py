"""A resource server's identity: its URI (RFC 8707) and its metadata (RFC 9728).

A resource URI is the audience a resource server accepts and the `resource` clients ask the
token service for. Grammar (checked by `resource_uri`): an absolute `https` or `http` URL with a
host, no user or password, no query, no fragment, at most 2048 characters; a path is allowed
(`https://api.example/orders`). RFC 8707 §2 forbids the fragment and discourages the query; RFC
9728 §1.2 forbids both for a protected resource's identifier.

The metadata is served at the URL RFC 9728 §3.1 derives from the URI: `/.well-known/oauth-
protected-resource` inserted between the host and the path, so `https://api.example` is
described at `https://api.example/.well-known/oauth-protected-resource` and
`https://api.example/orders` at `https://api.example/.well-known/oauth-protected-resource/orders`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

WELL_KNOWN = "/.well-known/oauth-protected-resource"
MAX_URI_LENGTH = 2048


def resource_uri(value: object) -> str:
    """`value` if it is a resource URI by the grammar above; raise `ValueError` saying why not."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"a resource URI is a non-empty string: {value!r}")
    if len(value) > MAX_URI_LENGTH or not value.isascii() or not value.isprintable():
        raise ValueError(
            f"a resource URI is printable ASCII of at most {MAX_URI_LENGTH} characters"
        )
    parts = _split(value)
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"a resource URI is an absolute https or http URL: {value!r}")
    if "#" in value or "?" in value:
        raise ValueError(f"a resource URI has no query and no fragment: {value!r}")
    if "@" in parts.netloc or " " in value:
        raise ValueError(f"a resource URI names no user and has no spaces: {value!r}")
    return value


def _split(value: str) -> SplitResult | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError:
        return None
    return parts


@dataclass(frozen=True)
class ResourceMetadata:
    """What a resource server publishes about itself (RFC 9728 §2)."""

    resource: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """The path the metadata is served at, on the resource's own host."""
        return WELL_KNOWN + urlsplit(self.resource).path.rstrip("/")

    @property
    def url(self) -> str:
        """The metadata's URL: what `WWW-Authenticate`'s `resource_metadata` names."""
        parts = urlsplit(self.resource)
        return f"{parts.scheme}://{parts.netloc}{self.path}"

    def document(self) -> dict[str, object]:
        """The JSON document: RFC 9728 §2's names; bearer tokens go in the header only."""
        document: dict[str, object] = {
            "resource": self.resource,
            "authorization_servers": list(self.authorization_servers),
            "bearer_methods_supported": ["header"],
        }
        if self.scopes_supported:
            document["scopes_supported"] = list(self.scopes_supported)
        return document
