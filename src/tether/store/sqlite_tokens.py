"""The SQLite store's API tokens: the ``tokens`` rows, projection of the store chain's
``token.created`` and ``token.revoked`` events (core/identity.py).

The rows are written only by :meth:`SQLiteTokens._project_token`, inside the
transaction that appends the event (``SQLiteSettings.append_store_event``), so a
token never exists without its event nor the reverse. The checks that depend on
the rows (a name already taken, a token revoked twice) run there too, under the
write lock, so two operators creating the same name at once get one token and one
clear error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from tether.core.identity import TokenInfo
from tether.store.sqlite_base import SQLiteBase
from tether.store.tokens import (
    TOKEN_COLS,
    TokenRows,
    row_token,
    token_values,
)


class SQLiteTokens(SQLiteBase, TokenRows):
    """Reading the ``tokens`` rows, and writing them with their store events."""

    def _valid_token_named(self, c: sqlite3.Connection, name: str) -> Sequence[Any] | None:
        row: Sequence[Any] | None = c.execute(
            "SELECT id FROM tokens WHERE name = ? AND revoked IS NULL", (name,)).fetchone()
        return row

    def _insert_token(self, c: sqlite3.Connection, t: TokenInfo) -> None:
        c.execute(f"INSERT INTO tokens({TOKEN_COLS}) VALUES(?,?,?,?,?,?,NULL,NULL)",
                  token_values(t))

    def _token_state(self, c: sqlite3.Connection, tid: Any) -> Sequence[Any] | None:
        row: Sequence[Any] | None = c.execute("SELECT name, revoked FROM tokens WHERE id = ?",
                                              (tid,)).fetchone()
        return row

    def _revoke_token(self, c: sqlite3.Connection, tid: str, *, time: str, actor: str) -> None:
        c.execute("UPDATE tokens SET revoked = ?, revoked_by = ? WHERE id = ?",
                  (time, actor, tid))

    def tokens(self, *, active: bool = False, limit: int | None = None) -> list[TokenInfo]:
        """Every token, valid or revoked (only the valid ones with ``active``), oldest
        first, at most ``limit``."""
        where = " WHERE revoked IS NULL" if active else ""
        lim = "" if limit is None else f" LIMIT {int(limit)}"
        return [row_token(r) for r in self._read(
            f"SELECT {TOKEN_COLS} FROM tokens{where} ORDER BY id{lim}")]  # ids are ULIDs: by time

    def token_by_hash(self, digest: str) -> TokenInfo | None:
        """The token whose secret hashes to ``digest`` (hex), valid or revoked."""
        try:
            key = bytes.fromhex(digest)
        except ValueError:
            return None
        rows = self._read(f"SELECT {TOKEN_COLS} FROM tokens WHERE hash = ?", (key,))
        return row_token(rows[0]) if rows else None
