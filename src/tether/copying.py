"""Moving a store: copy every row of one store into a new one, then prove the copy.

Users start on the embedded SQLite store and move to PostgreSQL when they outgrow it (or
back, or between files or schemas). Both backends hold the same tables, columns and
encodings (:mod:`tether.store.layout` lists them), so a copy is rows moved as they are,
whatever the backends, through the store protocol (``export_rows`` / ``import_rows``):

* faithful: every table but the leases, every value as stored, the commit order (``rowid``)
  and every number kept, the store's meta (its fingerprint key) included, so every hash
  chain, the batch chain and the signed checkpoints hold on the copy. A table this code
  does not know stops the copy, named (a newer schema's would be dropped otherwise);
* consistent: the source is read in one snapshot, the destination written in one
  transaction, so a copy killed half-way leaves the destination as empty as it found it;
* safe: refused while a worker holds a run of the source (its next steps would be missing
  from the copy), into a store that holds rows, or across schema versions;
* verified: the copy's chains are walked (:func:`tether.audit.verify_store`) and its rows
  counted against the source's, table by table.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tether.audit import VerifyReport, verify_store
from tether.core.clock import WallClock
from tether.core.note import Verifier
from tether.errors import StoreMissing, UsageError
from tether.store import open_store, sqlite_target
from tether.store.layout import FRESH_META, LEASES, TABLES, RowStream, check_columns
from tether.store.protocol import Store
from tether.store.schema import VERSION
from tether.store.sqlite_open import check_path
from tether.store.urls import is_postgres, parse_url, without_password
from tether.system_clock import SYSTEM_CLOCK

Progress = Callable[[str, int, int], None]
"""``progress(what, done, total)``: a table's rows copied so far (``what`` is its name), or
the runs verified (``what`` is ``"verify"``, first with ``total`` 0 as soon as the copy is
committed)."""


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What :func:`copy_store` did, and what it found on the copy."""

    source: str
    """The source store's URL (never a password)."""
    destination: str
    """The destination store's URL (never a password)."""
    rows: dict[str, tuple[int, int]]
    """Per table: (rows in the source, rows in the copy), in the order they were copied."""
    verify: VerifyReport
    """The audit of the copy: its chains, projections and signed checkpoints."""
    copy_seconds: float
    """Time to read, write and commit every row."""
    verify_seconds: float
    """Time to verify the copy."""
    skipped_leases: int = 0
    """Lease rows of the source not copied (none live: released or expired)."""
    mismatched: list[str] = field(default_factory=list)
    """Tables whose counts differ (empty when every table matches)."""

    @property
    def ok(self) -> bool:
        """Every row counted on the copy and its audit passed."""
        return self.verify.ok and not self.mismatched

    @property
    def total(self) -> int:
        """Rows copied."""
        return sum(src for src, _ in self.rows.values())

    @property
    def undo(self) -> str:
        """The shell command that removes the copy, as :func:`undo_command` gives it."""
        return undo_command(self.destination)

    def to_json(self) -> dict[str, Any]:
        """The form ``tether store copy --json`` prints; when the copy does not check out,
        with ``undo``: the command that removes it (a copy again is refused until then)."""
        out = {"ok": self.ok, "source": self.source, "destination": self.destination,
               "rows": {t: {"source": s, "destination": d} for t, (s, d) in self.rows.items()},
               "mismatched": self.mismatched, "skipped_leases": self.skipped_leases,
               "copy_seconds": round(self.copy_seconds, 3),
               "verify_seconds": round(self.verify_seconds, 3), "verify": self.verify.to_json()}
        return out if self.ok else out | {"undo": self.undo}


def undo_command(url: str) -> str:
    """The shell command that removes the store at ``url``, a copy that must not stay (it
    holds rows, so a copy into it again is refused): ``rm`` of the SQLite file, or psql
    dropping the PostgreSQL schema. Never shows a password: psql asks for it, or reads
    PGPASSWORD or ~/.pgpass."""
    if is_postgres(url):
        conninfo, schema, _ = parse_url(url)
        drop = f"DROP SCHEMA {schema} CASCADE"  # a plain identifier: parse_url checked it
        return f"psql {shlex.quote(without_password(conninfo))} -c {shlex.quote(drop)}"
    return f"rm {shlex.quote(str(sqlite_target(url)[0]))}"


def copy_store(source: str, destination: str, *, key: Verifier | None = None,
               progress: Progress | None = None, helper: Sequence[str] = (),
               clock: WallClock = SYSTEM_CLOCK) -> CopyReport:
    """Copy the store at ``source`` into the empty (or new) store at ``destination`` (each
    a SQLite path, ``sqlite:///path`` or ``postgresql://...?schema=NAME``), then verify the
    copy (signatures too with ``key``; ``helper``: see :func:`tether.audit.verify_store`).

    Raises:
        UsageError: a worker holds a run of the source; the destination holds rows, or is
            the source; the schema versions differ; a table this code does not know.
        StoreError: a store cannot be opened or written (nothing of the copy is written).
    """
    src = _open(source, "SRC", create=False, readonly=True)
    try:
        with src.snapshot():
            meta = _meta(src)
            _check_source(src, meta)
            skipped = _check_leases(src, clock)
            dst = _open(destination, "DST", create=True)
            try:
                _check_destination(dst, meta)
                started = clock.monotonic()
                totals: dict[str, int] = {}
                written = dst.import_rows(_streams(src, totals, progress, lambda: _unmoved(
                    source, totals, clock)))
                copied = clock.monotonic() - started
                if progress:
                    progress("verify", 0, 0)  # committed: say so before anything else
            except BaseException:
                dst.close()
                raise
    finally:
        src.close()
    try:
        return _prove(src.url, dst, totals, written, copied, skipped, key, progress, helper,
                      clock)
    finally:
        dst.close()


def _open(url: str, arg: str, *, create: bool, readonly: bool = False) -> Store:
    """The store at ``url``; a SQLite path that cannot be one is refused naming ``arg`` (the
    command's SRC or DST), not the --store option the copy does not take."""
    if not is_postgres(url):
        check_path(sqlite_target(url)[0], create=create, readonly=readonly, arg=arg)
        return open_store(url, create=create, readonly=readonly)
    try:
        return open_store(url, create=create, readonly=readonly)
    except StoreMissing:
        schema = parse_url(url)[1]
        raise StoreMissing(f"no tether store in schema {schema} of {without_password(url)}; "
                           f"fix {arg}: its ?schema= names an existing store") from None


def _prove(source: str, dst: Store, totals: dict[str, int], written: dict[str, int],
           copied: float, skipped: int, key: Verifier | None, progress: Progress | None,
           helper: Sequence[str], clock: WallClock) -> CopyReport:
    """Count the copy's rows against the source's and verify it."""
    with dst.snapshot():
        rows = {t.name: (totals[t.name], dst.export_rows(t.name).total) for t in TABLES}
    mismatched = [t for t, (s, d) in rows.items() if s != d or written.get(t) != s]
    started = clock.monotonic()
    tick = (lambda d, n: progress("verify", d, n)) if progress else None
    rep = verify_store(dst, key=key, helper=helper, progress=tick)
    return CopyReport(source, dst.url, rows, rep, copied, clock.monotonic() - started,
                      skipped, mismatched)


def _meta(s: Store) -> dict[str, str]:
    return {str(k): str(v) for batch in s.export_rows("meta").batches for k, v in batch}


def _version(s: Store, meta: dict[str, str]) -> None:
    version = meta.get("schema_version", "0")
    if version != str(VERSION):
        newer = version.isdigit() and int(version) > VERSION
        raise UsageError(
            f"store {s.url} has schema version {version}; this tether copies stores of "
            f"version {VERSION}: " + (
                "upgrade tether (or copy with the tether that wrote it)" if newer else
                "open it once with this tether, as its owner, to migrate it (`tether "
                f"--store {s.url} runs` does for a SQLite file, any command that writes for "
                "either), then copy"))


def _check_source(src: Store, meta: dict[str, str]) -> None:
    _version(src, meta)
    check_columns(f"source store {src.url}", src.table_columns())


def _check_leases(src: Store, clock: WallClock, *, during: bool = False) -> int:
    """Refuse while a worker holds a run of the source (``during``: one took it while the
    copy read the source); the lease rows not copied."""
    now = clock.now()
    rows = [r for batch in src.export_rows(LEASES.name).batches for r in batch]
    live = sorted((str(r[0]), str(r[1]), float(r[3])) for r in rows if float(r[3]) > now)
    if live:
        named = []
        for run, _owner, _ in live[:5]:
            row = src.get_run(run)
            named.append(f"{row.name} ({run})" if row else run)
        more = f" and {len(live) - 5} more" if len(live) > 5 else ""
        raise UsageError(
            f"source store {src.url}: a worker "
            + ("took, while the copy read the source, " if during else "holds ")
            + f"{len(live)} run(s): "
            f"{', '.join(named)}{more}, held by {live[0][1]}; a copy now would miss what "
            "they do next. Stop the workers of this store first (SIGTERM each `tether "
            "worker`: it releases its runs as it exits), or wait until their leases expire "
            f"(by {_utc(max(t for _, _, t in live))}), then copy"
            + ("; nothing was copied" if during else ""))
    return len(rows)


def _unmoved(source: str, totals: dict[str, int], clock: WallClock) -> None:
    """Refuse the copy, before the destination commits, if the source moved on while it was
    read: its snapshot is consistent but old, so a worker started on the copy would do again
    what one did on the source meanwhile (an irreversible effect twice). Read afresh: no
    live lease (a worker that started mid-copy) and every table's rows as many as copied (a
    worker, or a command, that wrote and stopped)."""
    fresh = open_store(source, create=False, readonly=True)
    try:
        with fresh.snapshot():
            _check_leases(fresh, clock, during=True)
            moved = [t.name for t in TABLES if fresh.export_rows(t.name).total != totals[t.name]]
    finally:
        fresh.close()
    if moved:
        raise UsageError(
            f"source store {fresh.url} changed while it was copied (rows of "
            f"{', '.join(moved[:4])}{'...' if moved[4:] else ''} added or removed): a worker "
            "or a command wrote to it, and a copy missing that would do it again; nothing was "
            "copied. Stop every worker of this store (SIGTERM each `tether worker`), then copy")


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _check_destination(dst: Store, meta: dict[str, str]) -> None:
    with dst.snapshot():
        dmeta = _meta(dst)
        full = [t.name for t in (*TABLES, LEASES) if t.name != "meta"
                and dst.export_rows(t.name).total]
    mine = meta.get("x.fingerprint_key")
    same = mine is not None and dmeta.get("x.fingerprint_key") == mine
    _version(dst, dmeta)
    check_columns(f"destination store {dst.url}", dst.table_columns())
    extra = sorted(set(dmeta) - FRESH_META)
    full += [f"meta ({', '.join(extra[:3])})"] if extra else []
    if full or same:
        held = (f"already holds a tether store with rows (in {', '.join(full[:4])}"
                f"{'...' if full[4:] else ''})" if full else "is the source store")
        raise UsageError(f"destination {dst.url} {held}"
                         + ("; it is the source store itself, or a copy of it" if full and same
                            else "")
                         + "; copy into a new SQLite path (one that does not exist yet) or an "
                         "empty PostgreSQL schema (?schema=NEW_NAME: the copy creates it)")


def _streams(src: Store, totals: dict[str, int], progress: Progress | None,
             unmoved: Callable[[], None]) -> Iterator[RowStream]:
    """Every copied table of ``src`` in turn, each counted into ``totals`` as it is opened,
    reporting its progress batch by batch; then ``unmoved()``, which raises to undo the copy
    (the destination has not committed yet)."""
    for t in TABLES:
        stream = src.export_rows(t.name)
        totals[t.name] = stream.total
        if progress is None:
            yield stream
            continue
        yield RowStream(t, stream.total, _counted(t.name, stream, progress))
    unmoved()


def _counted(name: str, stream: RowStream, progress: Progress
             ) -> Iterator[list[tuple[Any, ...]]]:
    done = 0
    progress(name, done, stream.total)
    for batch in stream.batches:
        yield batch
        done += len(batch)
        progress(name, done, stream.total)
