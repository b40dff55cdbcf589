"""Which ``Host`` and ``Origin`` headers the server answers: the defence against DNS rebinding.

A page on ``attacker.example`` whose name is rebound to 127.0.0.1 reaches a local server
with ``Host: attacker.example`` (and, on a WebSocket, ``Origin: http://attacker.example``):
the browser thinks it is same-origin, so only the server can refuse. ``app.TrustedHosts``
refuses every HTTP request (421) and WebSocket handshake (403, closed before accept) whose
``Host`` is not one of ``settings.trusted_hosts``; the hub then admits a browser's socket only
when its ``Origin`` is one of ``allowed_origins`` or is this very server (an allowed host,
and the ``Host`` the browser connected to).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from playground_rt.config import Settings


def host_name(value: str) -> str | None:
    """The name in a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lowercased
    and without a trailing dot; ``None`` when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, port = value[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
    else:
        name, colon, port = value.partition(":")
        if colon and not port.isdigit():
            return None
    return name.rstrip(".") or None


def _entry(value: str) -> str:
    """A configured host as :func:`host_name` would give it (``[::1]``, ``::1``, ``x:80``)."""
    value = value.strip().lower()
    if value.count(":") > 1 and not value.startswith("["):
        return value  # a bare IPv6 address
    return host_name(value) or value


class HostPolicy:
    def __init__(self, hosts: Iterable[str], origins: Iterable[str] = ()) -> None:
        entries = {_entry(h) for h in hosts if h.strip()}
        self.any_host = "*" in entries
        self.suffixes = tuple(h[1:] for h in entries if h.startswith("*."))
        self.names = frozenset(h for h in entries if not h.startswith("*"))
        self.origins = frozenset(o.strip().rstrip("/").lower() for o in origins)

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        return cls(settings.trusted_hosts, settings.allowed_origins)

    def allows_name(self, name: str | None) -> bool:
        if self.any_host:
            return True
        return name is not None and (name in self.names or name.endswith(self.suffixes))

    def allows_host(self, host: str | None) -> bool:
        """Whether a ``Host`` header (any port) names this server."""
        return self.any_host or (host is not None and self.allows_name(host_name(host)))

    def allows_origin(self, origin: str | None, host: str | None) -> bool:
        """Whether a socket opened by a page of ``origin`` (``None``: not a browser, which
        carries no ambient credentials) may connect to ``host``."""
        if origin is None:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins or "*" in self.origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        same = host is not None and parts.netloc == host.strip().lower()
        return same and parts.scheme in ("http", "https") and self.allows_name(parts.hostname)
