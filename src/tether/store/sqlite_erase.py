"""The SQLite store's share of an erasure: the rows that copied an erased payload, read
and written on the erasure's connection (what changes: :mod:`tether.store.erase_rows`).

Called inside the erasure's transaction (``SQLiteSettings.erase``), with
``secure_delete`` on, so the replaced bytes are overwritten in the file's pages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from tether.core.ids import ulid_bytes
from tether.store.erase_rows import ErasureRows, Where

_WHERE: Final[dict[Where, str]] = {
    "id": "id = ?",
    "board": "event = ? AND ns LIKE 'board:%'",
    "step": "run = ? AND epoch = ? AND step = ? AND idx = ?",
    "edited": "id = ? AND edited_arguments IS NOT NULL",
}


def _holding(column: str, n: int) -> str:
    """A condition true of a row whose ``column`` contains one of ``n`` byte patterns
    (``instr`` on blobs: a byte search in C, no JSON decoded)."""
    return "(" + " OR ".join(f"instr({column}, ?) > 0" for _ in range(n)) + ")"


class SQLiteErasure(ErasureRows):
    """An erasure's rows on SQLite connection ``c``, inside its transaction."""

    def __init__(self, c: sqlite3.Connection) -> None:
        self.c = c

    def _one(self, sql: str, args: Sequence[Any]) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self.c.execute(sql, args).fetchone()
        return row

    def event_row(self, key: bytes) -> Sequence[Any] | None:
        return self._one("SELECT rk, kind, payload, causes, epoch, step FROM events "
                         "WHERE id = ?", (key,))

    def drop_payload(self, key: bytes, digest: bytes) -> None:
        self.c.execute("UPDATE events SET payload_hash = ?, payload = NULL WHERE id = ?",
                       (digest, key))

    def run_position(self, run: str) -> Sequence[Any] | None:
        return self._one("SELECT epoch, step, status FROM runs WHERE id = ?", (run,))

    def blank(self, table: str, column: str, where: Where, value: bytes,
              key: tuple[Any, ...]) -> int:
        return self.c.execute(f"UPDATE {table} SET {column} = ? WHERE {_WHERE[where]}",
                              (value, *key)).rowcount

    def undo_of(self, effect: str) -> Any:
        row = self._one("SELECT undo FROM effects WHERE id = ? AND undo IS NOT NULL", (effect,))
        return None if row is None else row[0]

    def set_undo(self, effect: str, undo: bytes) -> None:
        self.c.execute("UPDATE effects SET undo = ? WHERE id = ?", (undo, effect))

    def outbox_holding(self, pats: list[bytes]) -> list[tuple[Any, ...]]:
        return self.c.execute(f"SELECT id, body FROM outbox WHERE "
                              f"{_holding('body', len(pats))}", pats).fetchall()

    def set_outbox(self, note: str, body: bytes) -> None:
        self.c.execute("UPDATE outbox SET body = ? WHERE id = ?", (body, note))

    def reason_of(self, run: str) -> Sequence[Any] | None:
        return self._one("SELECT reason FROM runs WHERE id = ?", (run,))

    def set_reason(self, run: str, reason: str) -> None:
        self.c.execute("UPDATE runs SET reason = ? WHERE id = ?", (reason, run))

    def events_holding(self, pats: list[bytes], ev: str, limit: int) -> list[bytes]:
        return [r[0] for r in self.c.execute(
            f"SELECT id FROM events WHERE payload IS NOT NULL AND id != ? AND "
            f"{_holding('payload', len(pats))} ORDER BY rowid LIMIT {int(limit)}",
            [ulid_bytes(ev), *pats]).fetchall()]

    def chunks_holding(self, pats: list[bytes]) -> list[tuple[Any, ...]]:
        return self.c.execute(f"SELECT hash, body FROM chunks WHERE "
                              f"{_holding('body', len(pats))}", pats).fetchall()

    def count_chunks_holding(self, pats: list[bytes]) -> int:
        return int(self.c.execute(f"SELECT count(*) FROM chunks WHERE "
                                  f"{_holding('body', len(pats))}", pats).fetchone()[0])

    def is_state_chunk(self, name: str) -> bool:
        h = name.encode()
        c = self.c
        return (c.execute("SELECT 1 FROM checkpoints WHERE kind = 'key' AND instr(body, ?) > 0 "
                          "LIMIT 1", (h,)).fetchone() is not None
                and c.execute("SELECT 1 FROM effects WHERE instr(undo, ?) > 0 LIMIT 1",
                              (h,)).fetchone() is None
                and c.execute("SELECT 1 FROM events WHERE instr(payload, ?) > 0 LIMIT 1",
                              (h,)).fetchone() is None)

    def add_chunk(self, name: str, body: bytes) -> None:
        self.c.execute("INSERT OR IGNORE INTO chunks(hash, body) VALUES(?,?)", (name, body))

    def drop_chunks(self, names: list[str]) -> None:
        self.c.executemany("DELETE FROM chunks WHERE hash = ?", [(h,) for h in names])

    def checkpoints_holding(self, pats: list[bytes]) -> list[tuple[Any, ...]]:
        return self.c.execute("SELECT rowid, rk, epoch, step, kind, body FROM checkpoints "
                              f"WHERE {_holding('body', len(pats))} ORDER BY rk, epoch, step",
                              pats).fetchall()

    def set_checkpoint(self, rowid: int, body: bytes) -> None:
        self.c.execute("UPDATE checkpoints SET body = ? WHERE rowid = ?", (body, rowid))

    def lease_live(self, run: str, now: float) -> bool:
        return self.c.execute("SELECT 1 FROM leases WHERE run = ? AND expires > ?",
                              (run, now)).fetchone() is not None

    def expire_leases(self, runs: list[str]) -> None:
        self.c.executemany("UPDATE leases SET token = token + 1, expires = 0 WHERE run = ?",
                           [(r,) for r in runs])
