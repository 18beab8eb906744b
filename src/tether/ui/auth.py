"""Who is asking: the dashboard's authentication (no web framework here).

A request's credentials (:class:`Credentials`: a Bearer header, a session cookie, whether
a proxy forwarded it) go to a chain of resolvers; the first that knows them names a
:class:`Caller`: a :class:`~tether.identity.Principal` (a name the journal records as
``human:NAME``, and a role from :data:`tether.identity.PERMISSIONS`) and how it was
recognised. No resolver knowing them is a 401. What a role may do is
:func:`tether.identity.permits`: this module keeps no role table of its own.

The chain ``tether ui serve`` builds, in order:

- :class:`BearerToken`: ``Authorization: Bearer TOKEN`` (API clients), checked with
  :func:`tether.identity.authenticate` on every request.
- :class:`SessionCookie`: a browser's session (:class:`Sessions`), started by signing in
  with a token (``EventSource`` cannot send a header). A session maps to its token's id
  and hash; every request reads the token's row again by that hash (one indexed read),
  so a revoked token ends its sessions at once and a changed role applies at once.
- :class:`LoopbackOwner`, on a loopback bind only: while the store has no valid token,
  every request without credentials is the OS user who started the server, as admin
  (as the CLI acts as the OS user who runs it). It asks ``tokens_exist`` on each request,
  so the first token created, even while the server runs, closes this door.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from tether.identity import Principal, Role, TokenInfo, os_user, tokens_exist
from tether.identity import authenticate as authenticate_token
from tether.store.protocol import Store
from tether.system_clock import SYSTEM_CLOCK

__all__ = ["Auth", "BearerToken", "Caller", "Credentials", "LoopbackOwner", "Resolver",
           "SessionCookie", "Sessions", "Via"]

Via = Literal["loopback", "bearer", "session"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Someone acting through the dashboard, and how they were recognised."""

    principal: Principal
    via: Via
    """``loopback`` (the OS user, no token exists), ``bearer`` (an Authorization header:
    needs no CSRF token, since a browser never adds one by itself) or ``session`` (a
    browser's cookie: every change needs the CSRF token)."""
    session: str | None = None
    """The session id, for signing out."""

    @property
    def name(self) -> str:
        return self.principal.name

    @property
    def role(self) -> Role:
        return self.principal.role

    @property
    def actor(self) -> str:
        """Who the journal records: :attr:`Principal.actor` (``human:NAME``)."""
        return self.principal.actor

    def can(self, action: str) -> bool:
        """:func:`tether.identity.permits` for this caller's role."""
        return self.principal.can(action)

    def to_json(self) -> dict[str, object]:
        """``GET /api/session``'s who-you-are part."""
        return {**self.principal.to_json(), "via": self.via, "actor": self.actor}


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request brings to be recognised by (no framework type: resolvers are plain)."""

    bearer: str | None = None
    """The token of an ``Authorization: Bearer`` header."""
    session: str | None = None
    """The session cookie's value."""
    forwarded: bool = False
    """A proxy's header (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) is present: the
    request may come from beyond loopback, so the loopback owner does not answer it."""


class Resolver(Protocol):
    """Names the caller behind ``creds``, or None when it does not know them."""

    def __call__(self, creds: Credentials) -> Caller | None: ...


class BearerToken:
    """``Authorization: Bearer TOKEN``: the valid token's name and role."""

    def __init__(self, authenticate: Callable[[str], Principal | None]) -> None:
        self.authenticate = authenticate

    def __call__(self, creds: Credentials) -> Caller | None:
        if creds.bearer is None:
            return None
        p = self.authenticate(creds.bearer)
        return Caller(p, "bearer") if p is not None else None


@dataclass(frozen=True, slots=True)
class _Session:
    token: str
    """The token's id."""
    hash: str
    """Its secret's hash: how its row is read again on each request."""
    started: float


class Sessions:
    """Browser sessions, in this server's memory: a random id (the cookie) mapped to the
    token it was started with. A restart signs everyone out; a revoked token's sessions
    end at its next request (:class:`SessionCookie` reads the token's row each time).

    Args:
        lookup: the token with this secret hash (``Store.token_by_hash``), or None.
        max_age: seconds a session lasts from sign-in, however active.
        limit: sessions kept at most; the oldest goes first (a bound on memory, since
            every sign-in with a valid token starts one).
        clock: monotonic seconds (injected for tests).
    """

    def __init__(self, lookup: Callable[[str], TokenInfo | None], *,
                 max_age: float = 12 * 3600, limit: int = 10_000,
                 clock: Callable[[], float] = SYSTEM_CLOCK.monotonic) -> None:
        self.lookup = lookup
        self.max_age = max_age
        self.limit = limit
        self.clock = clock
        self._live: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()  # sync routes run in a thread pool

    def __len__(self) -> int:
        return len(self._live)

    def start(self, token: TokenInfo) -> str:
        """A new session for ``token``; returns its id (256 random bits), for the cookie."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._live[sid] = _Session(token.id, token.hash, self.clock())
            while len(self._live) > self.limit:
                self._live.popitem(last=False)
        return sid

    def end(self, sid: str) -> bool:
        """Sign out: forget the session. Returns whether it existed."""
        with self._lock:
            return self._live.pop(sid, None) is not None

    def principal(self, sid: str) -> Principal | None:
        """Who session ``sid`` is now: its token's current name and role; None (and the
        session forgotten) when it is unknown, too old, or its token is revoked."""
        s = self._live.get(sid)
        if s is None:
            return None
        t = self.lookup(s.hash) if self.clock() - s.started < self.max_age else None
        if t is None or not t.active or t.id != s.token:
            with self._lock:
                self._live.pop(sid, None)
            return None
        return Principal(t.name, t.role, "token")


class SessionCookie:
    """A browser's session cookie (:class:`Sessions`)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def __call__(self, creds: Credentials) -> Caller | None:
        if creds.session is None or creds.bearer is not None:
            return None  # a Bearer header is judged alone: a bad one is never rescued
        p = self.sessions.principal(creds.session)
        return Caller(p, "session", creds.session) if p is not None else None


class LoopbackOwner:
    """The OS user who started the server, as admin, while the store has no valid token.

    Installed on a loopback bind only: anyone who can reach the port can already read
    and write the store with the CLI as themselves. A request with a Bearer header or a
    proxy's header is not its to answer; a stale session cookie is ignored (a browser
    signed in before the last token was revoked)."""

    def __init__(self, name: str | None = None, *,
                 tokens_exist: Callable[[], bool] = lambda: False) -> None:
        self.name = name or os_user()
        self.tokens_exist = tokens_exist

    def __call__(self, creds: Credentials) -> Caller | None:
        if creds.bearer is not None or creds.forwarded or self.tokens_exist():
            return None  # credentials were given (or are required): others judge them
        return Caller(Principal(self.name, Role.ADMIN, "os"), "loopback")


class Auth:
    """The resolver chain: the first resolver that names a caller wins."""

    def __init__(self, resolvers: Sequence[Resolver], sessions: Sessions | None = None) -> None:
        self.resolvers = list(resolvers)
        self.sessions = sessions
        """Where sign-in starts sessions; None: this dashboard has no sign-in."""

    def resolve(self, creds: Credentials) -> Caller | None:
        for r in self.resolvers:
            c = r(creds)
            if c is not None:
                return c
        return None

    @classmethod
    def for_store(cls, store: Store, *, loopback: bool) -> Auth:
        """The chain ``tether ui serve`` uses over ``store``: Bearer tokens, sessions, and
        (on a loopback bind) the OS user while no token exists."""
        sessions = Sessions(store.token_by_hash)
        chain: list[Resolver] = [BearerToken(lambda s: authenticate_token(store, s)),
                                 SessionCookie(sessions)]
        if loopback:
            chain.append(LoopbackOwner(tokens_exist=lambda: tokens_exist(store)))
        return cls(chain, sessions)
