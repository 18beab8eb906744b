"""The dashboard's guards that need no identities (pure).

- Where it may listen: loopback only, until access tokens exist (:func:`check_bind`).
- Which ``Host`` it answers: ``localhost``, ``127.0.0.1`` or ``[::1]`` (and the name or
  address it is bound to) with its own port, so a page on another site whose name an
  attacker points at 127.0.0.1 (DNS rebinding) is refused (:func:`allowed_hosts`).
- Where a sign-in may send the browser next: a path on this dashboard only
  (:func:`safe_next`: no open redirect).
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

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "CSRF_HEADER", "SESSION_COOKIE", "allowed_hosts",
           "check_bind", "csrf_ok", "csrf_token", "is_loopback", "is_wildcard", "origin_ok",
           "safe_next"]

CSRF_COOKIE = "tether_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_COOKIE = "tether_session"
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


def is_wildcard(host: str) -> bool:
    """Whether ``host`` listens on every address (``0.0.0.0``, ``::``)."""
    return host.strip("[]") in ("0.0.0.0", "::", "")  # noqa: S104 - naming it, not binding


def check_bind(host: str, *, tokens: bool = False) -> None:
    """Refuse to listen beyond loopback unless access tokens exist (then every request
    needs one: the loopback owner is never installed there).

    Raises:
        UsageError: naming the host and what to do instead.
    """
    if is_loopback(host) or tokens:
        return
    raise UsageError(f"refusing to serve on {host}: beyond loopback every request must "
                     "carry an access token, and this store has none; create one first "
                     "(`tether ui token create --name NAME --role admin`) and put a reverse "
                     "proxy with TLS in front, or serve on 127.0.0.1 and reach it through an "
                     "SSH tunnel (ssh -L 8765:127.0.0.1:8765 HOST)")


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` header values the dashboard answers, lower case: the loopback names
    with its port, and the bound name or address itself. None (any ``Host``) on a
    wildcard bind (``0.0.0.0``, ``::``), which needs tokens: there every request carries
    one, so a rebound name gains an attacker nothing."""
    if is_wildcard(host):
        return None
    bound = host.lower()
    if ":" in bound and not bound.startswith("["):
        bound = f"[{bound}]"  # an IPv6 address appears bracketed in a Host header
    return frozenset(f"{h}:{port}" for h in {*_LOOPBACK_NAMES, bound})


def origin_ok(origin: str | None, host: str) -> bool:
    """An ``Origin`` header is absent (not a browser's cross-site request), or names the
    dashboard as the browser addressed it (``host``: the request's ``Host``, already
    checked), over http or https (a TLS proxy in front)."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host


def safe_next(path: str | None, default: str = "/") -> str:
    """Where to send a browser after signing in: ``path`` when it is a path on this
    dashboard (query kept), else ``default``. Never another site: no scheme, no host, no
    ``//`` or backslash (browsers read ``/\\evil`` as ``//evil``), no control character."""
    if not path or len(path) > 2000 or not path.startswith("/") or path.startswith("//"):
        return default
    if "\\" in path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return default
    try:
        parts = urlsplit(path)
    except ValueError:
        return default
    if parts.scheme or parts.netloc or parts.path.startswith(("/signin", "/signout")):
        return default
    return path


def csrf_token(secret: bytes, seed: str) -> str:
    """The token a browser holding cookie ``seed`` must send back with a change."""
    return hmac.new(secret, seed.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, seed: str | None, given: str | None) -> bool:
    """Whether ``given`` is the token of ``seed`` (compared in constant time)."""
    if not seed or not given:
        return False
    return hmac.compare_digest(csrf_token(secret, seed), given)
