"""bench/pg_cost.py, the benchmark's PostgreSQL section, end to end at a tiny size.

On the real local server (``$TETHER_BENCH_PG``, by default the test suite's
127.0.0.1:5432, database ``test``), real SQLite files and real worker processes: every
measurement runs, every store's schema is gone afterwards and the report section names
what it measured. Where no server answers the test skips, except under CI. Nothing
here asserts a timing: the figures are the benchmark's, not the tests'.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import psycopg
import pytest
from bench import pg_server
from bench.config import QUICK
from bench.pg_cost import run_pg
from bench.pg_report import section

from tests import pgkit

TINY = dataclasses.replace(QUICK, pg_n=12, pg_repeats=1, pg_runs=4, pg_steps=5,
                           pg_workers=(1, 2), pg_rounds=1)
# find_spec of a submodule imports its parents, and raises when they are missing: the
# dev extra (make test) has no LangGraph, only the bench extra does.
HAS_LANGGRAPH = (importlib.util.find_spec("langgraph") is not None
                 and importlib.util.find_spec("langgraph.checkpoint.postgres") is not None)


def _bench_schemas() -> set[str]:
    with psycopg.connect(pg_server.SERVER, autocommit=True) as c:
        return {r[0] for r in c.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tbench\\_%'")}


@pytest.fixture
def server() -> None:
    pgkit.require(pg_server.unreachable(), env="TETHER_BENCH_PG")


@pytest.mark.workers
@pytest.mark.usefixtures("server")
def test_the_section_measures_every_store_and_drops_their_schemas(tmp_path: Path) -> None:
    before = _bench_schemas()
    said: list[str] = []
    res = run_pg(TINY, tmp_path, said.append)

    assert res.skipped is None
    assert res.settings["fsync"] in ("on", "off")
    assert set(res.floors) == {"sqlite", "postgres"}
    systems = {("tether", "sqlite"), ("tether", "postgres")}
    if HAS_LANGGRAPH:
        systems |= {("langgraph", "sqlite"), ("langgraph", "postgres")}
    else:
        assert any("not installed" in m for m in res.missing)
    assert {(s.system, s.backend) for s in res.loops} == systems
    for s in res.loops:
        # Every step made durable: tether commits each step's write, LangGraph puts a
        # checkpoint (and its writes) per step.
        assert s.n == 12 and s.writes >= s.n and s.commits, s
        assert s.wall > 0 and s.cpu > 0
        if s.backend == "postgres" and pg_server.SERVER.startswith("postgresql://postgres@127."):
            assert s.server_cpu is not None, s  # the backends' /proc entries are readable
    assert [(t.backend, t.workers) for t in res.throughput] == [
        ("sqlite", 1), ("postgres", 1), ("sqlite", 2), ("postgres", 2)]
    for t in res.throughput:
        assert sum(t.finished) == 4 and len(t.finished) == t.workers, t
    assert _bench_schemas() <= before, "a store's schema was left behind"
    assert len(said) == 1 + len(res.loops) + len(res.throughput)

    text = section(res, TINY)
    assert "Skipped" not in text
    assert "tether, `PostgresStore`" in text and "| 2 |" in text
    assert ("LangGraph, `PostgresSaver`" in text) == HAS_LANGGRAPH
    assert not re.search(r"\bnan\b", text), "a figure is missing"


def test_an_unreachable_server_skips_the_section_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_server, "SERVER", "postgresql://postgres@127.0.0.1:1/test")
    said: list[str] = []
    res = run_pg(TINY, tmp_path, said.append)

    assert res.skipped is not None and "no PostgreSQL server at" in res.skipped
    assert not res.loops and not res.throughput and not list(tmp_path.iterdir())
    head, body = section(res, TINY).strip().split("\n\n")
    assert head == "## 12. The PostgreSQL store"
    assert body.startswith("Skipped: no PostgreSQL server at postgresql://postgres@127.0.0.1:1/")
    assert "\n" not in body
    assert said == [f"postgres: skipped: {res.skipped}"]
