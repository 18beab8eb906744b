"""API tokens as rows, the same on every backend: the ``tokens`` rows, projection of the
store chain's ``token.created`` and ``token.revoked`` events (core/identity.py).

Each backend writes the rows inside the transaction that appends the event, under its
write lock, so the checks that depend on the rows (a name already taken, a token revoked
twice) see every earlier token; what they refuse, and in which words, is here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from tether.core.identity import Role, TokenInfo, token_created
from tether.errors import NotFound, StoreCorrupt, UsageError

TOKEN_COLS = "id, name, role, hash, created, created_by, revoked, revoked_by"  # noqa: S105  # column names, no secret


def row_token(r: Sequence[Any]) -> TokenInfo:
    try:
        role = Role[str(r[2]).upper()]
    except KeyError:  # changed outside tether: no role to act with; the audit names it
        raise StoreCorrupt(f"token {r[1]!r} ({r[0]}): its row's role {r[2]!r} is none of "
                           "viewer, operator, admin (changed outside tether); revoke it "
                           f"with `tether ui token revoke {r[0]}`") from None
    return TokenInfo(id=r[0], name=r[1], role=role, hash=bytes(r[3]).hex(), created=r[4],
                     created_by=r[5], revoked=r[6], revoked_by=r[7])


def token_values(t: TokenInfo) -> tuple[Any, ...]:
    """A new (valid) token as the values of :data:`TOKEN_COLS` but the revocation's two."""
    return (t.id, t.name, t.role.label, bytes.fromhex(t.hash), t.created, t.created_by)


def revoked_id(payload: Any) -> Any:
    """The id a ``token.revoked`` event's payload names (None: none)."""
    return payload.get("token") if isinstance(payload, dict) else None


def check_name_free(t: TokenInfo, taken: Sequence[Any] | None) -> None:
    """UsageError if a valid token (its row's ``(id,)``: ``taken``) has ``t``'s name."""
    if taken is not None:
        raise UsageError(f"a token named {t.name!r} exists already (id {taken[0]}); "
                         f"revoke it first (`tether ui token revoke {t.name}`) or "
                         "choose another name")


def check_revocable(tid: Any, row: Sequence[Any] | None) -> None:
    """NotFound if no token has id ``tid`` (``row``: its ``(name, revoked)``, None when
    there is none); UsageError if it was revoked already."""
    if row is None:
        raise NotFound(f"no token with id {tid!r}; `tether ui token list` shows them")
    if row[1] is not None:
        raise UsageError(f"token {row[0]!r} ({tid}) was revoked already at {row[1]}")


class TokenRows(ABC):
    """Applying a ``token.*`` event to the rows, inside the event's transaction on
    connection ``c``; a backend's subclass reads and writes each row with its SQL."""

    def _project_token(self, c: Any, kind: str, payload: Any, *, time: str,
                       actor: str) -> None:
        """Apply one ``token.*`` event to the rows (inside the event's transaction).

        Raises:
            UsageError: a valid token has the name already; a token revoked already.
            NotFound: a revocation naming no token.
        """
        if kind == "token.created":
            t = token_created(payload, time=time, actor=actor)
            check_name_free(t, self._valid_token_named(c, t.name))
            self._insert_token(c, t)
            return
        tid = revoked_id(payload)
        check_revocable(tid, self._token_state(c, tid))
        self._revoke_token(c, tid, time=time, actor=actor)

    @abstractmethod
    def _valid_token_named(self, c: Any, name: str) -> Sequence[Any] | None:
        """The ``(id,)`` of the valid token named ``name``, if any."""

    @abstractmethod
    def _insert_token(self, c: Any, t: TokenInfo) -> None: ...

    @abstractmethod
    def _token_state(self, c: Any, tid: Any) -> Sequence[Any] | None:
        """The ``(name, revoked)`` of the token with id ``tid``, if any."""

    @abstractmethod
    def _revoke_token(self, c: Any, tid: str, *, time: str, actor: str) -> None: ...
