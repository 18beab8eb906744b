"""The SQLite store's rows read and written whole, to move a store (``tether store copy``).

What is copied, in which columns and order, is :mod:`tether.store.layout`'s; here is only
how SQLite lists its tables, streams a table's rows, and writes them all in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from tether.errors import Conflict, StoreCorrupt, UsageError
from tether.store import layout
from tether.store.layout import FRESH_META, LEASES, TABLES, RowStream, Table, in_batches
from tether.store.sqlite_base import SQLiteBase


class SQLiteCopy(SQLiteBase):
    """``table_columns``, ``export_rows`` and ``import_rows`` of the SQLite store."""

    def table_columns(self) -> dict[str, tuple[str, ...]]:
        """Every table of the file (SQLite's own ``sqlite_*`` aside) and its columns."""
        names = [r[0] for r in self._read(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]
        return {n: tuple(r[0] for r in self._read(
            "SELECT name FROM pragma_table_info(?) ORDER BY cid", (n,))) for n in names}

    def export_rows(self, table: str) -> RowStream:
        """Table ``table``'s rows (count now, rows as iterated): call both inside
        :meth:`snapshot` so they see one state of the store."""
        t = layout.table(table)
        total = int(self._read(f"SELECT count(*) FROM {t.name}")[0][0])  # our names
        return RowStream(t, total, self._stream(t))

    def _stream(self, t: Table) -> Iterator[list[tuple[Any, ...]]]:
        with self._guard():
            cur = self._conn().execute(
                f"SELECT {', '.join(t.columns)} FROM {t.name} ORDER BY {t.order}")
            yield from in_batches(cur)

    def import_rows(self, streams: Iterable[RowStream]) -> dict[str, int]:
        """Write every stream's rows into this store, which must be empty (no rows but the
        meta rows a new store is made with, replaced here), in one transaction: all of them
        or, on any error or a kill, none. Rows written per table.

        Raises:
            Conflict: the store holds rows already (named, with what to do instead).
        """
        written: dict[str, int] = {}
        with self._tx() as c:
            self._refuse_rows(c)
            c.execute("DELETE FROM meta")
            for s in streams:
                written[s.table.name] = self._insert(c, s)
        return written

    def _insert(self, c: sqlite3.Connection, s: RowStream) -> int:
        t = s.table
        if t.name == LEASES.name:
            raise UsageError("leases are not copied: a copy has no live owners")
        sql = (f"INSERT INTO {t.name}({', '.join(t.columns)}) "  # our names
               f"VALUES({', '.join('?' * len(t.columns))})")
        n = 0
        for batch in s.batches:
            try:
                c.executemany(sql, batch)
            except sqlite3.IntegrityError as exc:
                raise StoreCorrupt(f"copying table {t.name} into {self.path}: {exc}; the "
                                   "source holds rows its keys do not allow (check it with "
                                   "`tether audit verify`); nothing was written") from None
            n += len(batch)
        return n

    def _refuse_rows(self, c: sqlite3.Connection) -> None:
        full = [t.name for t in (*TABLES, LEASES) if t.name != "meta"
                and c.execute(f"SELECT 1 FROM {t.name} LIMIT 1").fetchone()]
        extra = sorted({r[0] for r in c.execute("SELECT key FROM meta")} - FRESH_META)
        if extra:
            full.append(f"meta ({', '.join(extra[:3])})")
        if full:
            raise Conflict(f"{self.path} already holds a tether store with rows (in "
                           f"{', '.join(full[:4])}{'...' if full[4:] else ''}); copy into a "
                           "new file (a path that does not exist yet), or remove this one "
                           "first if it is not needed")
