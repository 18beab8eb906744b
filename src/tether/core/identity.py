"""Who may do what: roles, the permissions table, principals and API tokens' records.

Pure: no I/O, no randomness, no clock. A token's secret is made at the edge
(:mod:`tether.identity`); here a secret is only checked for its form and hashed.
Only the hash is kept: a token's secret is 256 random bits, so an unsalted SHA-256
of it cannot be reversed or guessed, and the hash may sit in the store chain (which
must name it, or a row's hash could be swapped for one whose secret someone knows).

A token's life is two store-chain events (core/settings.py): ``token.created``
(payload :func:`created_payload`) and ``token.revoked`` (``{"token": ID, "name":
NAME}``). The ``tokens`` rows are their projection, written in the same
transaction; :func:`fold_tokens` is that projection from the chain, which the
audit holds the rows to.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, Final, Literal

from tether.errors import UsageError


class Role(IntEnum):
    """A principal's role; each includes every lower one (viewer < operator < admin)."""

    VIEWER = 1
    """Reads everything, changes nothing."""
    OPERATOR = 2
    """Also answers runs: approve, deny, pause, resume, stop, resolve, acknowledge."""
    ADMIN = 3
    """Also changes history and rules: rollback, cascade, fork, quarantine, budgets,
    policies, tokens, store settings."""

    @property
    def label(self) -> str:
        """The role's name as written on the command line and in JSON (``operator``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role named ``text`` (``viewer``, ``operator`` or ``admin``).

        Raises:
            UsageError: another name.
        """
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise UsageError(f"role {text!r}: use one of {', '.join(ROLE_NAMES)}") from None


ROLE_NAMES: Final = tuple(r.label for r in Role)
"""Every role's name, lowest first."""

PERMISSIONS: Final[dict[str, Role]] = {
    "read": Role.VIEWER,
    "approve": Role.OPERATOR,
    "deny": Role.OPERATOR,
    "pause": Role.OPERATOR,
    "resume": Role.OPERATOR,
    "stop": Role.OPERATOR,
    "resolve": Role.OPERATOR,
    "acknowledge": Role.OPERATOR,
    "rollback": Role.ADMIN,
    "cascade": Role.ADMIN,
    "fork": Role.ADMIN,
    "quarantine": Role.ADMIN,
    "release": Role.ADMIN,
    "budget": Role.ADMIN,
    "policy_apply": Role.ADMIN,
    "tokens": Role.ADMIN,
    "settings": Role.ADMIN,
    "erase": Role.ADMIN,
}
"""Each operator action and the least role that may take it. ``release`` ends a
quarantine, so it needs the role that quarantines; ``tokens`` is creating, listing and
revoking tokens; ``settings`` is the store's settings (``allow-as``); ``erase`` is
``tether audit erase``."""


def permits(role: Role, action: str) -> bool:
    """Whether ``role`` may take ``action`` (a key of :data:`PERMISSIONS`).

    Raises:
        ValueError: an action the table does not know (a caller's mistake: an unknown
            action is never silently allowed nor silently refused).
    """
    least = PERMISSIONS.get(action)
    if least is None:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(PERMISSIONS)}")
    return role >= least


Source = Literal["token", "os", "as"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking, and by what right."""

    name: str
    """The token's name, the OS user, or the name claimed with ``--as`` / ``TETHER_USER``."""
    role: Role
    source: Source
    """``token`` (an API token), ``os`` (the OS user running the process), ``as`` (a name
    claimed where the store allows it)."""

    @property
    def actor(self) -> str:
        """How the journal records this principal acting: ``human:NAME``."""
        return f"human:{self.name}"

    def can(self, action: str) -> bool:
        """:func:`permits` for this principal's role."""
        return permits(self.role, action)

    def to_json(self) -> dict[str, Any]:
        """The public JSON form."""
        return {"name": self.name, "role": self.role.label, "source": self.source}


TOKEN_PREFIX: Final = "tth_"  # noqa: S105 - a marker every secret starts with, not a secret
"""Every secret starts with it, so a leaked one is recognisable (secret scanners, logs)."""
SECRET_CHARS: Final = 43
"""Characters after the prefix: 32 random bytes in URL-safe base64 without padding."""
_SECRET = re.compile(rf"{TOKEN_PREFIX}[A-Za-z0-9_-]{{{SECRET_CHARS}}}")
NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""What a person may be called: a token's name, a claimed ``--as`` name, an approver."""
TOKEN_KINDS: Final = ("token.created", "token.revoked")
"""The store-chain event kinds of a token's life."""


def check_token_name(name: str) -> str:
    """``name`` if it can name a token (and so an approver); UsageError otherwise."""
    if not NAME.fullmatch(name):
        raise UsageError(f"token name {name[:40]!r}: use 1 to 64 letters, digits, '.', '_', "
                         "'@' or '-', starting with a letter or digit, e.g. --name ada")
    return name


def well_formed(secret: object) -> bool:
    """Whether ``secret`` has a token's form (:data:`TOKEN_PREFIX` and 43 URL-safe
    characters); anything else is refused before a hash is computed or a row read."""
    return isinstance(secret, str) and _SECRET.fullmatch(secret) is not None


def hash_secret(secret: str) -> str:
    """The SHA-256 (hex) of a token's secret: all that is kept of it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """One API token as stored: never its secret."""

    id: str
    """The id of its ``token.created`` store event."""
    name: str
    """Who acts with it: the journal records ``human:NAME``; policies' approvers name it."""
    role: Role
    hash: str
    """SHA-256 (hex) of the secret."""
    created: str
    """ISO-8601 UTC time of its creation."""
    created_by: str
    """The actor who created it."""
    revoked: str | None = None
    """When it was revoked; None while it is valid."""
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        """Whether it still authenticates."""
        return self.revoked is None

    def to_json(self) -> dict[str, Any]:
        """The public JSON form (``tether ui token list --json``): no secret, no hash."""
        return {"id": self.id, "name": self.name, "role": self.role.label,
                "created": self.created, "created_by": self.created_by,
                "revoked": self.revoked, "revoked_by": self.revoked_by}


def created_payload(token_id: str, name: str, role: Role, digest: str) -> dict[str, Any]:
    """The payload of a ``token.created`` store event."""
    return {"token": token_id, "name": name, "role": role.label, "hash": digest}


def token_created(payload: Any, *, time: str, actor: str) -> TokenInfo:
    """The token a ``token.created`` event makes.

    Raises:
        ValueError: a payload that is not :func:`created_payload`'s form.
    """
    if not isinstance(payload, dict) or not all(isinstance(payload.get(k), str) for k in
                                                ("token", "name", "role", "hash")):
        raise ValueError(f"token.created needs a payload {{token, name, role, hash}}, got "
                         f"{payload!r}")
    return TokenInfo(id=payload["token"], name=payload["name"],
                     role=Role[payload["role"].upper()], hash=payload["hash"], created=time,
                     created_by=actor)


def fold_tokens(events: Iterable[Any]) -> dict[str, TokenInfo]:
    """Every token the store chain's ``token.*`` events made, by id, as its rows should be.

    ``events`` are :class:`~tether.core.settings.StoreEvent` (any object with ``kind``,
    ``payload``, ``time`` and ``actor``); an event of another kind is skipped, and so is
    one whose payload does not read (the chain's own check names that).
    """
    out: dict[str, TokenInfo] = {}
    for e in events:
        try:
            if e.kind == "token.created":
                t = token_created(e.payload, time=e.time, actor=e.actor)
                out[t.id] = t
            elif e.kind == "token.revoked":
                tid = e.payload.get("token") if isinstance(e.payload, dict) else None
                if tid in out and out[tid].active:
                    out[tid] = replace(out[tid], revoked=e.time, revoked_by=e.actor)
        except (ValueError, KeyError):
            continue
    return out
