"""Who is asking: the dashboard's authentication seam (pure: no web framework here).

A request's credentials (:class:`Credentials`: a Bearer header, a session cookie, the
peer's address) go to a chain of resolvers; the first that knows them names a
:class:`Principal` (a name the journal records as ``human:NAME``, and a role). No
resolver knowing them is a 401. What a role may do is :func:`permits`.

Today one resolver exists, :class:`LoopbackOwner`: on loopback, while the store has no
access tokens, every request acts as the OS user who started the server, with the
admin role, as the CLI acts as the OS user who runs it. Token authentication is added
as resolvers in front of it, with nothing else changed:

- a Bearer resolver for ``/api/`` clients (``Authorization: Bearer TOKEN``);
- a session resolver for browsers, whose sign-in form trades a token for a session
  cookie (``HttpOnly``, ``SameSite=Strict``), because ``EventSource`` cannot send a
  header;

and :class:`LoopbackOwner` is given ``tokens_exist`` so it steps aside as soon as a
token is created (every request then needs one).
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["ACTIONS", "ROLES", "Auth", "Credentials", "LoopbackOwner", "Principal", "Resolver",
           "Role", "permits"]

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
"""From least to most: each role may do what the ones before it may."""

ACTIONS: dict[str, Role] = {
    "view": "viewer",
    "approve": "operator", "deny": "operator", "pause": "operator", "resume": "operator",
    "stop": "operator", "resolve": "operator", "ack": "operator", "verify": "operator",
    "rollback": "admin", "cascade": "admin", "fork": "admin", "quarantine": "admin",
    "release": "admin", "budget": "admin", "settle_undo": "admin",
}
"""Each action the dashboard offers, and the least role that may take it (the issue's
table: operators decide and steer, admins undo, fork, contain and change budgets)."""


def permits(role: Role, action: str) -> bool:
    """Whether ``role`` may take ``action`` (an unknown action: nobody may)."""
    need = ACTIONS.get(action)
    return need is not None and ROLES.index(role) >= ROLES.index(need)


@dataclass(frozen=True, slots=True)
class Principal:
    """Someone acting through the dashboard."""

    name: str
    """Recorded in the journal as ``human:NAME``."""
    role: Role
    via: str = "loopback"
    """How they were recognised: ``loopback``, ``bearer`` or ``session``. A request
    authenticated by a Bearer header needs no CSRF token (a browser never adds one on its
    own); every other mutating request does."""

    @property
    def who(self) -> str:
        """The actor the operations façade journals."""
        return f"human:{self.name}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request brings to be recognised by (no framework type: resolvers are pure)."""

    bearer: str | None = None
    """The token of an ``Authorization: Bearer`` header."""
    session: str | None = None
    """The session cookie's value."""
    peer: str | None = None
    """The client's address, as the server saw it."""


class Resolver(Protocol):
    """Names the principal behind ``creds``, or None when it does not know them."""

    def __call__(self, creds: Credentials) -> Principal | None: ...


class LoopbackOwner:
    """The OS user who started the server, as admin, while the store has no tokens.

    Only ever installed on a loopback bind (``tether ui serve`` refuses any other
    without tokens): anyone who can reach the port can already read and write the store
    with the CLI as themselves."""

    def __init__(self, name: str | None = None, *,
                 tokens_exist: Callable[[], bool] = lambda: False) -> None:
        self.name = name or getpass.getuser()
        self.tokens_exist = tokens_exist

    def __call__(self, creds: Credentials) -> Principal | None:
        if creds.bearer is not None or creds.session is not None or self.tokens_exist():
            return None  # credentials were given (or are required): others judge them
        return Principal(self.name, "admin", "loopback")


class Auth:
    """The resolver chain: the first resolver that names a principal wins."""

    def __init__(self, resolvers: Sequence[Resolver]) -> None:
        self.resolvers = list(resolvers)

    def resolve(self, creds: Credentials) -> Principal | None:
        for r in self.resolvers:
            p = r(creds)
            if p is not None:
                return p
        return None
