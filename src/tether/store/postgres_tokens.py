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
from tether.store.postgres_base import PGBase
from tether.store.tokens import (
    TOKEN_COLS,
    check_name_free,
    check_revocable,
    revoked_id,
    row_token,
    token_values,
)


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
            check_name_free(t, taken)
            c.execute(f"INSERT INTO tokens({TOKEN_COLS}) VALUES(%s,%s,%s,%s,%s,%s,NULL,NULL)",
                      token_values(t))
            return
        tid = revoked_id(payload)
        # SQLite compares any value with the text ids and finds none; PostgreSQL would
        # refuse to compare a number with text: the same answer, said before asking.
        row = c.execute("SELECT name, revoked FROM tokens WHERE id = %s",
                        (tid,)).fetchone() if isinstance(tid, str) else None
        check_revocable(tid, row)
        c.execute("UPDATE tokens SET revoked = %s, revoked_by = %s WHERE id = %s",
                  (time, actor, tid))

    def tokens(self, *, active: bool = False, limit: int | None = None) -> list[TokenInfo]:
        """Every token, valid or revoked (only the valid ones with ``active``), oldest
        first, at most ``limit``."""
        where = " WHERE revoked IS NULL" if active else ""
        # A negative limit is none, as in SQLite (PostgreSQL refuses LIMIT -1).
        lim = "" if limit is None or limit < 0 else f" LIMIT {int(limit)}"
        return [row_token(r) for r in self._read(
            f"SELECT {TOKEN_COLS} FROM tokens{where} ORDER BY id{lim}")]  # ids are ULIDs: by time

    def token_by_hash(self, digest: str) -> TokenInfo | None:
        """The token whose secret hashes to ``digest`` (hex), valid or revoked."""
        try:
            key = bytes.fromhex(digest)
        except ValueError:
            return None
        rows = self._read(f"SELECT {TOKEN_COLS} FROM tokens WHERE hash = %s", (key,))
        return row_token(rows[0]) if rows else None
