"""The PostgreSQL store's rows read and written whole, to move a store (``tether store
copy``).

What is copied, in which columns and order, is :mod:`tether.store.layout`'s; here is only
how PostgreSQL lists a schema's tables, streams a table's rows (a server-side cursor, so a
large table is never held whole), and writes them all in one transaction (``COPY ... FROM
STDIN`` in binary, the fastest way in). Values are written as the column's type wants
them: a row read from SQLite may hold text where PostgreSQL keeps bytes (SQLite stores
what it is given), and binary COPY takes no guesses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from psycopg import sql as pg_sql

from tether.errors import Conflict, StoreCorrupt, UsageError
from tether.store import layout
from tether.store.layout import FRESH_META, LEASES, TABLES, RowStream, Table, in_batches
from tether.store.postgres_base import Conn, PGBase

_TYPES = {"bigint": "int8", "double precision": "float8", "bytea": "bytea", "text": "text"}
"""The column types of a store (postgres_schema), as psycopg names them for COPY."""


def _as_bytes(v: Any) -> Any:
    return v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v


def _as_text(v: Any) -> Any:
    text = bytes(v).decode("utf-8") if isinstance(v, (bytes, bytearray, memoryview)) else v
    if isinstance(text, str) and "\x00" in text:
        # The server would refuse the whole COPY, naming neither table nor row.
        raise ValueError("it holds a NUL character (\\x00), which PostgreSQL text cannot "
                         "keep (a SQLite store of an older tether took one); keep this store "
                         "on SQLite, or remove the NUL from that row first")
    return text


def _as_float(v: Any) -> Any:
    return float(v) if isinstance(v, int) else v


_FIX: dict[str, Callable[[Any], Any]] = {"bytea": _as_bytes, "text": _as_text,
                                         "float8": _as_float}


class PGCopy(PGBase):
    """``table_columns``, ``export_rows`` and ``import_rows`` of the PostgreSQL store."""

    def table_columns(self) -> dict[str, tuple[str, ...]]:
        """Every table of the store's schema and its columns, in their order."""
        out: dict[str, list[str]] = {}
        for name, col, _ in self._catalog():
            out.setdefault(name, []).append(col)
        return {k: tuple(v) for k, v in out.items()}

    def _catalog(self) -> list[tuple[str, str, str]]:
        """(table, column, type) of every column of every table of the schema."""
        return [(str(r[0]), str(r[1]), str(r[2])) for r in self._read(
            "SELECT c.relname, a.attname, format_type(a.atttypid, NULL) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY c.relname, a.attnum", (self.schema,))]

    def export_rows(self, table: str) -> RowStream:
        """Table ``table``'s rows (count now, rows as iterated): call both inside
        :meth:`snapshot` (a server-side cursor needs its transaction, and both then see one
        state of the store)."""
        t = layout.table(table)
        total = int(self._read(f"SELECT count(*) FROM {t.name}")[0][0])  # our names
        return RowStream(t, total, self._stream(t))

    def _stream(self, t: Table) -> Iterator[list[tuple[Any, ...]]]:
        query = f"SELECT {', '.join(t.columns)} FROM {t.name} ORDER BY {t.order}"
        # A server-side cursor lives in a transaction: the caller's snapshot, or its own.
        with self._guard(), self.snapshot(), \
                self._conn().cursor(name=f"tether_copy_{t.name}") as cur:
            cur.execute(query)
            yield from in_batches(cur)

    def import_rows(self, streams: Iterable[RowStream]) -> dict[str, int]:
        """Write every stream's rows into this store, which must be empty (no rows but the
        meta rows a new store is made with, replaced here), in one transaction: all of them
        or, on any error or a kill, none. Identity columns then go on from the largest
        number copied. Rows written per table.

        Raises:
            Conflict: the store holds rows already (named, with what to do instead).
        """
        written: dict[str, int] = {}
        types = {(t, c): _TYPES.get(ty, ty) for t, c, ty in self._catalog()}
        with self._tx() as c:
            self._refuse_rows(c)
            c.execute("DELETE FROM meta")
            for s in streams:
                written[s.table.name] = self._copy_in(c, s, [types[s.table.name, col]
                                                             for col in s.table.columns])
            self._advance_identities(c)
        return written

    def _copy_in(self, c: Conn, s: RowStream, types: list[str]) -> int:
        t = s.table
        if t.name == LEASES.name:
            raise UsageError("leases are not copied: a copy has no live owners")
        fix = [(i, _FIX[ty]) for i, ty in enumerate(types) if ty in _FIX]
        stmt = pg_sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            pg_sql.Identifier(t.name), pg_sql.SQL(", ").join(map(pg_sql.Identifier, t.columns)))
        n = 0
        with c.cursor() as cur, cur.copy(stmt) as cp:
            cp.set_types(types)
            for batch in s.batches:
                for row in batch:
                    vals, col = list(row), "?"
                    try:
                        for i, f in fix:
                            col = t.columns[i]
                            vals[i] = f(vals[i])
                        col = "?"
                        cp.write_row(vals)
                    except (UnicodeError, ValueError, TypeError) as exc:
                        at = f", column {col}" if col != "?" else ""
                        raise StoreCorrupt(f"table {t.name}, row {n + 1} ({t.columns[0]} "
                                           f"{row[0]!r}){at} of the source cannot be written "
                                           f"to {self.url}: {exc}; check the source with "
                                           "`tether audit verify`; nothing was written"
                                           ) from None
                    n += 1
        return n

    def _advance_identities(self, c: Conn) -> None:
        """Each identity column's next number after the largest copied (the copy wrote
        them as values, which leaves the sequences where a new store starts them)."""
        for table, col in c.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND is_identity = 'YES'", (self.schema,)).fetchall():
            qualified = pg_sql.SQL("{}.{}").format(pg_sql.Identifier(self.schema),
                                                   pg_sql.Identifier(table)).as_string(c)
            c.execute(pg_sql.SQL("SELECT setval(pg_get_serial_sequence(%s, %s), "
                                 "coalesce(max({}), 0) + 1, false) FROM {}").format(
                pg_sql.Identifier(col), pg_sql.Identifier(table)), (qualified, col))

    def _refuse_rows(self, c: Conn) -> None:
        full = [t.name for t in (*TABLES, LEASES) if t.name != "meta" and c.execute(
            pg_sql.SQL("SELECT 1 FROM {} LIMIT 1").format(pg_sql.Identifier(t.name))
        ).fetchone()]
        extra = sorted({str(r[0]) for r in c.execute("SELECT key FROM meta")} - FRESH_META)
        if extra:
            full.append(f"meta ({', '.join(extra[:3])})")
        if full:
            raise Conflict(f"schema {self.schema} of {self.url} already holds a tether store "
                           f"with rows (in {', '.join(full[:4])}{'...' if full[4:] else ''}); "
                           "copy into an empty schema: give ?schema=NEW_NAME (one that does "
                           "not exist yet; the copy creates it)")
