"""The PostgreSQL server the PostgreSQL section measures on: reachability, one schema per
store (dropped afterwards), the server's settings, and the CPU its backends spent.

The server is ``$TETHER_BENCH_PG`` or ``postgresql://postgres@127.0.0.1:5432/test`` (the
same default as the test suite's). Server CPU is read from ``/proc/<pid>/stat`` of the
backends whose ``application_name`` a store was given in its URL, so it counts only the
work done for that store, not other clients of a shared server, and only where the
server runs on this machine (otherwise it is reported as unknown).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

SERVER = os.environ.get("TETHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
SETTINGS = ("server_version", "fsync", "synchronous_commit", "wal_sync_method",
            "full_page_writes", "shared_buffers")


def unreachable() -> str | None:
    """Why the section cannot run (no driver, no server), or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[bench]')"
    try:
        psycopg.connect(SERVER, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"no PostgreSQL server at {SERVER} ({str(exc).strip().splitlines()[0][:160]})"
    return None


def settings() -> dict[str, str]:
    """The server settings that decide what a commit costs (durability, sync method)."""
    import psycopg

    with psycopg.connect(SERVER, autocommit=True) as c:
        return {k: str(c.execute(f"SHOW {k}").fetchone()[0]) for k in SETTINGS}  # type: ignore[index]


@dataclass(frozen=True, slots=True)
class Schema:
    """A fresh schema for one store: tether's URL for it, a libpq URL whose search_path is
    that schema (for LangGraph's saver), and the ``application_name`` its connections carry."""

    name: str

    @property
    def app(self) -> str:
        return f"bench_{self.name}"

    def store_url(self, app: str | None = None) -> str:
        """``open_store``'s URL: tether creates the schema's tables itself."""
        return f"{SERVER}?{urlencode({'schema': self.name, 'application_name': app or self.app})}"

    def conninfo(self) -> str:
        """A libpq URL that puts unqualified tables in this schema (LangGraph's ``setup``)."""
        return (f"{SERVER}?{urlencode({'options': f'-csearch_path={self.name}'})}"
                f"&{urlencode({'application_name': self.app})}")


@contextlib.contextmanager
def schema(prefix: str) -> Iterator[Schema]:
    """A new schema named ``prefix`` plus a random suffix, dropped with CASCADE at exit
    (also after a failure), so repeated runs never measure on a store left behind."""
    import psycopg

    s = Schema(f"{prefix}_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(SERVER, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{s.name}"')
    try:
        yield s
    finally:
        with psycopg.connect(SERVER, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{s.name}" CASCADE')


def backend_cpu(app: str) -> float | None:
    """CPU seconds (user + system) the live server backends named ``app`` have used since
    they started; None when their /proc entries cannot be read (a server elsewhere).

    Call it before the store closes: a backend's counters go with its process."""
    import psycopg

    with psycopg.connect(SERVER, autocommit=True) as c:
        pids = [r[0] for r in c.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))]
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
    return total
