"""verify_store with its helper process (tether.audit.share): the later runs walked in a
second, real process give the report an unsplit walk gives, problem for problem and in
the same order; a store written between the two processes' snapshots gives no false
result (the helper's part is walked again here).

The store is built as tether builds it (start_run, RunJournal commits), with events that
cite other runs' events (provenance links across the split), and tampered with through a
plain sqlite3 connection as an intruder would.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tether.audit import VerifyReport, verify_store
from tether.audit.share import SPLIT
from tether.cli.verify_helper import COMMAND
from tether.core.clock import FixedClock
from tether.core.ids import UlidSource
from tether.runtime.agent import StepAgent
from tether.runtime.journal import RunJournal
from tether.runtime.runs import start_run
from tether.store.sqlite import SQLiteStore

RUNS = 6


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six runs of four steps, each citing the run before it (a file link)."""
    path = tmp_path_factory.mktemp("par") / "tether.db"
    clock = FixedClock(1_700_000_000.0)
    rng = random.Random(5)
    ids = UlidSource(clock.now, lambda: rng.getrandbits(80))
    agent = StepAgent(lambda ctx, state: None, name="par")
    store = SQLiteStore(path)
    try:
        journals = []
        for i in range(RUNS):
            rid = start_run(store, agent, agent_ref="tests:par", goal=f"goal {i}", clock=clock,
                            ids=ids, state={"n": i})
            row = store.get_run(rid)
            assert row is not None
            journals.append(RunJournal(store, row, store.acquire(rid, "w1", 600, time.time()),
                                       ids, clock.now))
        last: dict[int, str] = {}
        for step in range(1, 5):
            for i, j in enumerate(journals):
                started = j.append("step.started", {"step": step}, step=step)
                cited = (started.id, last[i - 1]) if i and i - 1 in last else (started.id,)
                called = j.append("tool.called", {"text": f"run {i} step {step}"}, step=step,
                                  actor="agent:par", causes=cited)
                last[i] = called.id
                j.append("step.finished", {"ok": True}, step=step, causes=(started.id,))
                j.flush_sync()
    finally:
        store.close()
    return path


def _copy(base: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tether.db"
    shutil.copy(base, path)
    return path


def _both(path: Path, tamper: Callable[[sqlite3.Connection], None] | None = None
          ) -> tuple[VerifyReport, VerifyReport]:
    """verify_store unsplit, then with a helper from the first event on."""
    if tamper is not None:
        raw = sqlite3.connect(path)
        with raw:
            tamper(raw)
        raw.close()
    out = []
    for helper in ((), COMMAND):
        store = SQLiteStore(path, readonly=True)
        try:
            out.append(verify_store(store, helper=helper, parallel_from=0))
        finally:
            store.close()
    return out[0], out[1]


def _parts(path: Path) -> tuple[list[str], list[str]]:
    """The runs walked here and the runs the helper walks, in walking order."""
    store = SQLiteStore(path, readonly=True)
    try:
        return ([r[0] for r in store.chain_rows(part=(0.0, SPLIT)) if r[1] == 1],
                [r[0] for r in store.chain_rows(part=(SPLIT, 1.0)) if r[1] == 1])
    finally:
        store.close()


def _change_payload(run: str, seq: int) -> Callable[[sqlite3.Connection], None]:
    def tamper(raw: sqlite3.Connection) -> None:
        rk = raw.execute("SELECT rk FROM run_keys WHERE id = ?", (run,)).fetchone()
        assert rk is not None
        done = raw.execute("UPDATE events SET payload = CAST('{\"text\":\"forged\"}' AS BLOB) "
                           "WHERE rk = ? AND seq = ?", (rk[0], seq)).rowcount
        assert done == 1
    return tamper


def test_the_helper_walks_the_later_runs_and_the_report_is_the_same(base: Path) -> None:
    mine, its = _parts(base)
    assert mine and its, "the split puts runs on both sides"
    alone, split = _both(base)
    assert alone.ok and split.ok
    assert split.helped == len(its) and alone.helped == 0
    assert split.to_json() == alone.to_json()
    assert (split.runs, split.events, split.batches) == (alone.runs, alone.events,
                                                         alone.batches)


@pytest.mark.parametrize("where", ["helper", "here", "both"])
def test_a_tamper_is_named_exactly_and_in_order_whichever_process_walks_it(
        base: Path, tmp_path: Path, where: str) -> None:
    path = _copy(base, tmp_path)
    mine, its = _parts(path)
    targets = {"helper": [its[-1]], "here": [mine[0]], "both": [its[0], mine[-1]]}[where]

    def tamper(raw: sqlite3.Connection) -> None:
        for run in targets:
            _change_payload(run, 3)(raw)

    alone, split = _both(path, tamper)
    assert split.helped == len(its)
    assert split.problems == alone.problems
    assert split.first_bad == alone.first_bad
    assert len([p for p in split.problems if "event #3" in p]) == len(targets)
    first = sorted(targets)[0]
    assert split.first_bad is not None and split.first_bad.startswith(f"run {first} event #3 ")


def test_a_truncated_run_and_a_removed_link_in_the_helper_s_runs_are_named(
        base: Path, tmp_path: Path) -> None:
    """The batch chain is checked here against the hashes the helper read."""
    path = _copy(base, tmp_path)
    _, its = _parts(path)

    def tamper(raw: sqlite3.Connection) -> None:
        rk = raw.execute("SELECT rk FROM run_keys WHERE id = ?", (its[-1],)).fetchone()[0]
        assert raw.execute("DELETE FROM events WHERE rk = ? AND seq = (SELECT max(seq) FROM "
                           "events WHERE rk = ?)", (rk, rk)).rowcount == 1
        assert raw.execute("DELETE FROM links WHERE rowid = (SELECT max(rowid) FROM links)"
                           ).rowcount == 1

    alone, split = _both(path, tamper)
    assert not split.ok and split.helped == len(its)
    assert split.problems == alone.problems
    assert any(f"names event {its[-1]}#" in p and "(the run was truncated)" in p
               for p in split.problems)
    assert any(p.startswith("provenance index: 1 link(s) missing") for p in split.problems)


def test_a_commit_between_the_two_snapshots_gives_no_false_result(
        base: Path, tmp_path: Path) -> None:
    """The helper here starts by committing a new run, so its snapshot is newer than the
    one verify holds: it must give its part back, and verify walks it itself and reports
    the store as it was when verify began (an intact store)."""
    path = _copy(base, tmp_path)
    writer = tmp_path / "write_then_help.py"
    writer.write_text(
        "import sys, time\n"
        "from tether.runtime.agent import StepAgent\n"
        "from tether.runtime.runs import start_run\n"
        "from tether.store.sqlite import SQLiteStore\n"
        f"s = SQLiteStore({str(path)!r})\n"
        "start_run(s, StepAgent(lambda c, st: None, name='late'), agent_ref='tests:late', "
        "goal='late')\n"
        "s.close()\n"
        "from tether.cli.verify_helper import main\n"
        "main()\n")
    store = SQLiteStore(path, readonly=True)
    try:
        before = store.chain_size()
        rep = verify_store(store, helper=(sys.executable, str(writer)), parallel_from=0)
        after = store.chain_size()
    finally:
        store.close()
    assert after > before, "the helper's commit landed"
    assert rep.ok, rep.problems
    assert rep.helped == 0, "the helper's snapshot was not verify's: its part was walked here"
    assert rep.events == before + _store_chain_events(path)  # not the new run's event
    alone, _ = _both(path)
    assert alone.ok and alone.events == rep.events + after - before


def test_a_helper_that_cannot_start_or_dies_leaves_the_walk_here(base: Path) -> None:
    for command in (("/nonexistent/python",), (sys.executable, "-c", "import os; os._exit(9)")):
        store = SQLiteStore(base, readonly=True)
        try:
            rep = verify_store(store, helper=command, parallel_from=0)
        finally:
            store.close()
        assert rep.ok and rep.helped == 0 and rep.runs == RUNS


def _store_chain_events(path: Path) -> int:
    store = SQLiteStore(path, readonly=True)
    try:
        return len(store.store_events())
    finally:
        store.close()


def _garble_index_page(db: Path, index: str) -> None:
    """Overwrite the body of ``index``'s root page (its 8-byte header kept) with noise: the
    chains still read, SQLite's integrity check calls the file malformed."""
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file first
    page_size = c.execute("PRAGMA page_size").fetchone()[0]
    (root,) = c.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (index,)).fetchone()
    c.close()
    noise = random.Random(1).randbytes(page_size - 8)
    with db.open("r+b") as f:
        f.seek(page_size * (root - 1) + 8)
        f.write(noise)


def test_a_damaged_file_is_named_first_when_the_helper_checks_it(
        base: Path, tmp_path: Path) -> None:
    """The helper runs SQLite's check after handing back its part, while the checks here
    run: its lines still come first, as when this process runs the check."""
    path = _copy(base, tmp_path)
    _garble_index_page(path, "runs_status")
    alone, split = _both(path)
    assert split.helped > 0
    assert split.problems == alone.problems
    assert split.problems[0].startswith("the store file is damaged: SQLite's check says")


def test_a_helper_that_dies_after_its_part_leaves_the_check_of_the_file_here(
        base: Path, tmp_path: Path) -> None:
    """A helper killed after its part (before SQLite's check): its part stands, and the
    check of the file runs here, so the damage is still named."""
    path = _copy(base, tmp_path)
    _garble_index_page(path, "runs_status")
    dying = tmp_path / "dies_before_the_check.py"
    dying.write_text(
        "import os\n"
        "from tether.store.sqlite_base import SQLiteBase\n"
        "SQLiteBase.check_integrity = lambda self: os._exit(9)\n"
        "from tether.cli.verify_helper import main\n"
        "main()\n")
    alone, _ = _both(path)
    store = SQLiteStore(path, readonly=True)
    try:
        rep = verify_store(store, helper=(sys.executable, str(dying)), parallel_from=0)
    finally:
        store.close()
    assert rep.helped > 0, "its part came back before it died"
    assert rep.problems == alone.problems
    assert rep.problems[0].startswith("the store file is damaged: SQLite's check says")
