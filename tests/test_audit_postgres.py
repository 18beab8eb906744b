"""The audit over a real PostgreSQL store: a tampered row is named by its event, a bulk
read streams through a server-side cursor, the helper process reads verify's own
snapshot (exported, then imported), and an erasure leaves the row versions vacuumed.

Every test builds its store in a fresh schema of the server at 127.0.0.1:5432 (database
``test``, user ``postgres``; ``TETHER_TEST_PG`` overrides) as tether builds it
(start_run, fenced RunJournal commits), tampers with it through a plain psycopg
connection as an intruder would, and drops the schema afterwards.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import pgkit
from tether.audit import verify_store
from tether.audit.share import SPLIT
from tether.cli.verify_helper import COMMAND
from tether.core.clock import FixedClock
from tether.core.ids import UlidSource, iso
from tether.runtime.agent import StepAgent
from tether.runtime.journal import RunJournal
from tether.runtime.runs import start_run
from tether.store import postgres_seals
from tether.store.postgres import PostgresStore

RUNS = 6


@dataclass(frozen=True)
class PG:
    """A fresh schema: the store's URL, and a raw connection to it (the intruder's)."""

    url: str
    schema: str
    raw: psycopg.Connection[tuple[Any, ...]]

    def store(self, *, readonly: bool = False) -> PostgresStore:
        return PostgresStore(self.url, readonly=readonly)

    def rk(self, run: str) -> int:
        row = self.raw.execute("SELECT rk FROM run_keys WHERE id = %s", (run,)).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def pg() -> Iterator[PG]:
    with pgkit.fresh_store_url("audit") as url, pgkit.connect(autocommit=True) as raw:
        schema = pgkit.schema_of(url)
        raw.execute(f'SET search_path TO "{schema}"')  # the store creates it on first open
        yield PG(url, schema, raw)


def _build(pg: PG) -> list[str]:
    """Six runs of four steps, each citing the run before it (a link across runs);
    the runs in creation order."""
    clock = FixedClock(1_700_000_000.0)
    rng = random.Random(5)
    ids = UlidSource(clock.now, lambda: rng.getrandbits(80))
    agent = StepAgent(lambda ctx, state: None, name="pgaudit")
    store = pg.store()
    runs = []
    try:
        journals = []
        for i in range(RUNS):
            rid = start_run(store, agent, agent_ref="tests:pgaudit", goal=f"goal {i}",
                            clock=clock, ids=ids, state={"n": i, "note": f"secret-{i:08d}"})
            runs.append(rid)
            row = store.get_run(rid)
            assert row is not None
            token = store.acquire(rid, "w1", 600, time.time())
            assert token is not None
            journals.append(RunJournal(store, row, token, ids, clock.now))
        last: dict[int, str] = {}
        for step in range(1, 5):
            for i, j in enumerate(journals):
                started = j.append("step.started", {"step": step}, step=step)
                cited = (started.id, last[i - 1]) if i and i - 1 in last else (started.id,)
                called = j.append("tool.called", {"text": f"run {i} step {step}"}, step=step,
                                  actor="agent:pgaudit", causes=cited)
                last[i] = called.id
                j.append("step.finished", {"ok": True}, step=step, causes=(started.id,))
                j.flush_sync()
    finally:
        store.close()
    return runs


def _forge(pg: PG, run: str, seq: int) -> None:
    done = pg.raw.execute("UPDATE events SET payload = convert_to('{\"text\":\"forged\"}', "
                          "'UTF8') WHERE rk = %s AND seq = %s", (pg.rk(run), seq)).rowcount
    assert done == 1


def test_an_untouched_store_verifies_and_a_changed_payload_is_named(pg: PG) -> None:
    runs = _build(pg)
    store = pg.store(readonly=True)
    try:
        rep = verify_store(store)
        assert rep.ok, rep.problems
        assert rep.runs == RUNS and rep.events > RUNS * 12
        _forge(pg, runs[2], 3)
        rep = verify_store(store)
    finally:
        store.close()
    assert not rep.ok
    assert rep.first_bad is not None and rep.first_bad.startswith(f"run {runs[2]} event #3 ")
    assert "hash mismatch" in rep.first_bad


def test_chain_rows_stream_through_a_server_side_cursor(pg: PG) -> None:
    _build(pg)
    store = pg.store(readonly=True)
    try:
        rows = store.chain_rows()
        first = next(rows)
        # The generator holds its snapshot and a named cursor open on this connection.
        open_cursors = store._read("SELECT count(*) FROM pg_cursors")[0][0]
        rest = list(rows)
        after = store._read("SELECT count(*) FROM pg_cursors")[0][0]
        assert first[1] == 1
        assert open_cursors == 1 and after == 0
        assert len(rest) + 1 == store.chain_size()
        assert all(isinstance(r[5], str) and isinstance(r[7], str) and r[13] is None
                   for r in rest)
    finally:
        store.close()


def test_the_helper_reads_verify_s_snapshot_though_a_commit_landed_between(pg: PG) -> None:
    """The helper starts by committing a new run, after verify's snapshot was exported:
    it imports that snapshot, so its part still counts (with SQLite it would be walked
    again here) and the report is of the store as verify began."""
    _build(pg)
    store = pg.store(readonly=True)
    try:
        its = [r[0] for r in store.chain_rows(part=(SPLIT, 1.0)) if r[1] == 1]
        assert its, "the split gives the helper runs"
        alone = verify_store(store)
    finally:
        store.close()
    writer = (
        "from tether.runtime.agent import StepAgent\n"
        "from tether.runtime.runs import start_run\n"
        "from tether.store.postgres import PostgresStore\n"
        f"s = PostgresStore({pg.url!r})\n"
        "start_run(s, StepAgent(lambda c, st: None, name='late'), agent_ref='tests:late', "
        "goal='late')\n"
        "s.close()\n"
        "from tether.cli.verify_helper import main\n"
        "main()\n")
    store = pg.store(readonly=True)
    try:
        before = store.chain_size()
        rep = verify_store(store, helper=(sys.executable, "-c", writer), parallel_from=0)
        after = store.chain_size()
    finally:
        store.close()
    assert after > before, "the helper's commit landed"
    assert rep.ok, rep.problems
    assert rep.helped == len(its), "the helper walked its part in verify's snapshot"
    assert rep.to_json() == alone.to_json()


def test_a_tamper_in_the_helper_s_runs_is_named_as_an_unsplit_walk_names_it(pg: PG) -> None:
    _build(pg)
    store = pg.store(readonly=True)
    try:
        its = [r[0] for r in store.chain_rows(part=(SPLIT, 1.0)) if r[1] == 1]
        _forge(pg, its[-1], 3)
        alone = verify_store(store)
        split = verify_store(store, helper=COMMAND, parallel_from=0)
    finally:
        store.close()
    assert split.helped == len(its)
    assert split.problems == alone.problems and split.first_bad == alone.first_bad
    assert split.first_bad is not None and split.first_bad.startswith(f"run {its[-1]} event #3 ")


def test_an_erasure_rewrites_the_rows_in_one_transaction_and_still_verifies(pg: PG) -> None:
    runs = _build(pg)
    store = pg.store()
    try:
        called = next(e for e in store.events(runs[1]) if e.kind == "tool.called")
        assert called.payload == {"text": "run 1 step 1"}
        e = store.erase(called.id, reason="test", actor="tester", time=iso(time.time()),
                        id=UlidSource(time.time).new())
        assert e.kind == "payload.erased" and e.payload["event"] == called.id
        erased = store.event(called.id)
        assert erased is not None and erased.payload is None
        rep = verify_store(store)
        assert rep.ok, rep.problems
        assert [x["event"] for x in rep.erasures] == [called.id]
        held = pg.raw.execute("SELECT count(*) FROM events WHERE position(%s IN payload) > 0",
                              (b"run 1 step 1",)).fetchone()
        assert held == (0,)
    finally:
        store.close()


def test_tether_audit_verify_names_the_changed_event_of_a_postgresql_store(pg: PG) -> None:
    runs = _build(pg)

    def verify() -> subprocess.CompletedProcess[str]:
        # A real process, as an operator runs it (the CLI leaves closing to its exit).
        return subprocess.run([str(Path(sys.executable).with_name("tether")), "--store",
                               pg.url, "audit", "verify"], capture_output=True, text=True,
                              timeout=60, check=False)

    ok = verify()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{RUNS} runs" in ok.stdout
    pg.raw.execute("UPDATE events SET actor = 'agent:forger' WHERE rk = %s AND seq = 5",
                   (pg.rk(runs[4]),))
    bad = verify()
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"run {runs[4]} event #5" in bad.stdout, bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


@pytest.mark.parametrize("seq", [10, 11, 12])
def test_tampers_at_the_cursor_s_page_boundaries_are_named_alone(
        pg: PG, monkeypatch: pytest.MonkeyPatch, seq: int) -> None:
    """Pages of 11 rows: the changed event is the last of a page, the first of the next,
    or inside one; a deleted event is named by the one after it."""
    monkeypatch.setattr(postgres_seals, "_PAGE", 11)
    runs = _build(pg)
    _forge(pg, runs[3], seq)
    pg.raw.execute("DELETE FROM events WHERE rk = %s AND seq = 7", (pg.rk(runs[5]),))
    store = pg.store(readonly=True)
    try:
        rep = verify_store(store)
    finally:
        store.close()
    assert [p.split(" (")[0] for p in rep.problems[:2]] == [
        f"run {runs[3]} event #{seq}", f"run {runs[5]} event #8"], rep.problems
    assert "hash mismatch" in rep.problems[0] and "seq 8 follows #6" in rep.problems[1]


def test_a_batch_row_that_is_not_one_is_named_not_raised(pg: PG) -> None:
    """As on SQLite (tests/test_audit_tamper.py): a forged batch row is a problem in the
    report, not a traceback."""
    _build(pg)
    pg.raw.execute("INSERT INTO batches(n, hash, entries) "
                   "SELECT max(n) + 1, '\\x00'::bytea, '\\x00'::bytea FROM batches")
    store = pg.store(readonly=True)
    try:
        rep = verify_store(store)
    finally:
        store.close()
    assert not rep.ok
    assert any("batch" in p and "cannot be decoded" in p for p in rep.problems), rep.problems


def test_the_helper_gets_a_password_given_only_in_the_url(pg: PG) -> None:
    """A password in the URL alone (no PGPASSWORD, no ~/.pgpass) reaches verify's helper,
    over its pipe: without it, the helper could not connect where the server asks for one
    and verify would walk everything in one process."""
    _build(pg)
    with_password = pg.url.replace("://postgres@", "://postgres:S3CRET-pw@", 1)
    assert with_password != pg.url
    store = PostgresStore(with_password, readonly=True)
    try:
        assert "S3CRET-pw" in (store.reader_url() or "")
        assert "S3CRET-pw" not in store.url
        its = [r[0] for r in store.chain_rows(part=(SPLIT, 1.0)) if r[1] == 1]
        rep = verify_store(store, helper=COMMAND, parallel_from=0)
    finally:
        store.close()
    assert rep.ok and rep.helped == len(its)
    assert "S3CRET-pw" not in "\n".join(rep.problems)
