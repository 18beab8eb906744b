"""The floor: what a bare SQLite WAL commit costs on this disk at ``synchronous=FULL``.

No framework code runs here: ``BEGIN IMMEDIATE``, insert 200-byte rows,
``COMMIT``. One row per commit is the price of one durable step with no
batching; 100 rows per commit shows what group commit can reach.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bench.workload import MESSAGE_BYTES, fresh_db, remove_db


@dataclass(frozen=True, slots=True)
class CommitSample:
    rows_per_commit: int
    seconds_per_commit: float

    @property
    def seconds_per_row(self) -> float:
        return self.seconds_per_commit / self.rows_per_commit


def run_commits(rows_per_commit: int, commits: int, workdir: Path) -> CommitSample:
    """``commits`` transactions of ``rows_per_commit`` rows each, on a fresh WAL file."""
    path = fresh_db(workdir, "sqlite-baseline")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        rows = [(bytes(MESSAGE_BYTES),)] * rows_per_commit
        t0 = time.perf_counter()
        for _ in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO t(body) VALUES(?)", rows)
            conn.execute("COMMIT")
        return CommitSample(rows_per_commit, (time.perf_counter() - t0) / commits)
    finally:
        conn.close()
        remove_db(path)
