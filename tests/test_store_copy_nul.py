"""``tether store copy`` of a SQLite store holding a NUL in a text column, to PostgreSQL.

SQLite's text keeps NUL; PostgreSQL's cannot. tether refuses NUL in names now
(tests/test_nul_text.py), but a store an older tether wrote may hold one (written here
with raw SQL, as that older code path would have left it). The server refused the whole
COPY with "invalid byte sequence for encoding UTF8: 0x00", naming no table, row or column;
the copy now names them and says what to do, and writes nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests import pg_agents
from tests.pgworkers import cli
from tether import start_run
from tether.store import open_store
from tether.testing import allow_tools


@pytest.mark.raw_rows
def test_a_nul_in_a_sqlite_text_column_is_named_and_nothing_is_written(
        pg_url: str, tmp_path: Path) -> None:
    src = tmp_path / "old.db"
    s = open_store(str(src))
    allow_tools(s)
    run = start_run(s, pg_agents.dwelling, agent_ref="tests.pg_agents:dwelling", goal="x")
    s.close()
    with sqlite3.connect(src) as c:
        c.execute("UPDATE runs SET name = 'old' || char(0) || 'name' WHERE id = ?", (run,))
    c.close()
    res = cli("store", "copy", str(src), pg_url)
    assert res.returncode == 2, res.stdout + res.stderr
    text = " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr, res.stderr
    assert f"table runs, row 1 (id '{run}'), column name" in text, text
    assert "NUL character" in text and "keep this store on SQLite" in text, text
    assert "nothing was written" in text, text
    d = open_store(pg_url, create=False, readonly=True)
    try:
        assert d.list_runs() == []
    finally:
        d.close()
