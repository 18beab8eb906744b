"""The dashboard's guards that need no identities (pure).

- Where it may listen: loopback only, until access tokens exist (:func:`check_bind`).
- Which ``Host`` it answers: on loopback, only ``localhost``, ``127.0.0.1`` or ``[::1]``
  (or the literal address it is bound to) with its own port, so a page on another
  site whose name an attacker points at 127.0.0.1 (DNS rebinding) is refused
  (:func:`allowed_hosts`).
- Cross-site requests: a mutating request from a browser carries a CSRF token, an
  HMAC of a per-browser random seed (an ``HttpOnly``, ``SameSite=Strict`` cookie) under
  a per-server secret, rendered into each page's forms and never into a URL
  (:func:`csrf_token`, :func:`csrf_ok`); an ``Origin`` header, when sent, must be the
  dashboard's own (:func:`origin_ok`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from tether.errors import UsageError

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "CSRF_HEADER", "allowed_hosts", "check_bind",
           "csrf_ok", "csrf_token", "is_loopback", "origin_ok"]

CSRF_COOKIE = "tether_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 bare or in brackets) is this machine
    only."""
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, tokens: bool = False) -> None:
    """Refuse to listen beyond loopback unless access tokens exist.

    Raises:
        UsageError: naming the host and what to do instead.
    """
    if is_loopback(host) or tokens:
        return
    raise UsageError(f"refusing to serve on {host}: beyond loopback every request must "
                     "carry an access token, and this store has none (the token feature, "
                     "`tether ui token create`, is not in this build); serve on 127.0.0.1 "
                     "and reach it through an SSH tunnel (ssh -L 8765:127.0.0.1:8765 HOST)")


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values the dashboard answers, lower case: the loopback names
    with its port (and the bound address itself when it is another one)."""
    bound = host.lower()
    if ":" in bound and not bound.startswith("["):
        bound = f"[{bound}]"  # an IPv6 address appears bracketed in a Host header
    return frozenset(f"{h}:{port}" for h in {*_LOOPBACK_NAMES, bound})


def origin_ok(origin: str | None, hosts: frozenset[str]) -> bool:
    """An ``Origin`` header is absent (not a browser's cross-site request), or names the
    dashboard itself over http."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme == "http" and parts.netloc.lower() in hosts


def csrf_token(secret: bytes, seed: str) -> str:
    """The token a browser holding cookie ``seed`` must send back with a change."""
    return hmac.new(secret, seed.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, seed: str | None, given: str | None) -> bool:
    """Whether ``given`` is the token of ``seed`` (compared in constant time)."""
    if not seed or not given:
        return False
    return hmac.compare_digest(csrf_token(secret, seed), given)
