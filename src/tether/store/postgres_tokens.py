"""The PostgreSQL store's API tokens: the ``tokens`` rows, projection of the store
chain's ``token.created`` and ``token.revoked`` events (core/identity.py).

The port of :mod:`tether.store.sqlite_tokens`. The rows are written only by
:meth:`PGTokens._project_token`, inside the transaction that appends the event
(``PGSettings.append_store_event``), so a token never exists without its event nor
the reverse. The checks that depend on the rows (a name already taken, a token
revoked twice) run there too, under the store's write lock, so two operators
creating the same name at once get one token and one clear error.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tether.core.identity import TokenInfo, token_created
from tether.errors import NotFound, UsageError
from tether.store.postgres_base import PGBase
from tether.store.sqlite_tokens import _COLS, _row


class PGTokens(PGBase):
    """Reading the ``tokens`` rows, and writing them with their store events."""

    def _project_token(self, c: psycopg.Connection[Any], kind: str, payload: Any, *,
                       time: str, actor: str) -> None:
        """Apply one ``token.*`` event to the rows (inside the event's transaction).

        Raises:
            UsageError: a valid token has the name already; a token revoked already.
            NotFound: a revocation naming no token.
        """
        if kind == "token.created":
            t = token_created(payload, time=time, actor=actor)
            taken = c.execute("SELECT id FROM tokens WHERE name = %s AND revoked IS NULL",
                              (t.name,)).fetchone()
            if taken is not None:
                raise UsageError(f"a token named {t.name!r} exists already (id {taken[0]}); "
                                 f"revoke it first (`tether ui token revoke {t.name}`) or "
                                 "choose another name")
            c.execute(f"INSERT INTO tokens({_COLS}) VALUES(%s,%s,%s,%s,%s,%s,NULL,NULL)",
                      (t.id, t.name, t.role.label, bytes.fromhex(t.hash), t.created,
                       t.created_by))
            return
        tid = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(tid, str):
            # SQLite compares any value with the text ids and finds none; PostgreSQL would
            # refuse to compare a number with text: the same answer, said before asking.
            raise NotFound(f"no token with id {tid!r}; `tether ui token list` shows them")
        row = c.execute("SELECT name, revoked FROM tokens WHERE id = %s", (tid,)).fetchone()
        if row is None:
            raise NotFound(f"no token with id {tid!r}; `tether ui token list` shows them")
        if row[1] is not None:
            raise UsageError(f"token {row[0]!r} ({tid}) was revoked already at {row[1]}")
        c.execute("UPDATE tokens SET revoked = %s, revoked_by = %s WHERE id = %s",
                  (time, actor, tid))

    def tokens(self, *, active: bool = False, limit: int | None = None) -> list[TokenInfo]:
        """Every token, valid or revoked (only the valid ones with ``active``), oldest
        first, at most ``limit``."""
        where = " WHERE revoked IS NULL" if active else ""
        # A negative limit is none, as in SQLite (PostgreSQL refuses LIMIT -1).
        lim = "" if limit is None or limit < 0 else f" LIMIT {int(limit)}"
        return [_row(r) for r in self._read(
            f"SELECT {_COLS} FROM tokens{where} ORDER BY id{lim}")]  # ids are ULIDs: by time

    def token_by_hash(self, digest: str) -> TokenInfo | None:
        """The token whose secret hashes to ``digest`` (hex), valid or revoked."""
        try:
            key = bytes.fromhex(digest)
        except ValueError:
            return None
        rows = self._read(f"SELECT {_COLS} FROM tokens WHERE hash = %s", (key,))
        return _row(rows[0]) if rows else None
