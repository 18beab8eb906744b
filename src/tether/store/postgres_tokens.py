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

from collections.abc import Sequence
from typing import Any

import psycopg

from tether.core.identity import TokenInfo
from tether.store.postgres_base import PGBase
from tether.store.tokens import (
    TOKEN_COLS,
    TokenRows,
    row_token,
    token_values,
)


class PGTokens(PGBase, TokenRows):
    """Reading the ``tokens`` rows, and writing them with their store events."""

    def _valid_token_named(self, c: psycopg.Connection[Any], name: str
                           ) -> Sequence[Any] | None:
        return c.execute("SELECT id FROM tokens WHERE name = %s AND revoked IS NULL",
                         (name,)).fetchone()

    def _insert_token(self, c: psycopg.Connection[Any], t: TokenInfo) -> None:
        c.execute(f"INSERT INTO tokens({TOKEN_COLS}) VALUES(%s,%s,%s,%s,%s,%s,NULL,NULL)",
                  token_values(t))

    def _token_state(self, c: psycopg.Connection[Any], tid: Any) -> Sequence[Any] | None:
        if not isinstance(tid, str):
            # SQLite compares any value with the text ids and finds none; PostgreSQL would
            # refuse to compare a number with text: the same answer, said before asking.
            return None
        return c.execute("SELECT name, revoked FROM tokens WHERE id = %s", (tid,)).fetchone()

    def _revoke_token(self, c: psycopg.Connection[Any], tid: str, *, time: str, actor: str) -> None:
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
