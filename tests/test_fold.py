"""The projections are folds of the journal (core/fold.py): the journal folds each event
it appends, and `tether audit verify` folds every run again and names a row that
disagrees."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import sample_agents
from tether import Worker, approvals, start_run
from tether.audit.verify import verify_store
from tether.core.events import Chain, Event
from tether.core.fold import (
    FAILED_HINT,
    RunFold,
    approval_change,
    effect_change,
    fold,
    fold_all,
)
from tether.runtime.holding import holding
from tether.runtime.operator import send_command
from tether.store.sqlite import SQLiteStore


def _events(*kinds: tuple[str, Any]) -> list[Event]:
    chain, out = Chain("r"), []
    for n, (kind, payload) in enumerate(kinds):
        out.append(chain.make(id=f"e{n}", kind=kind, time="t", epoch=0, step=n, actor="system",
                              payload=payload, causes=("e0",) if n else ()))
    return out


def test_a_runs_life_folds_into_its_row() -> None:
    evs = _events(("run.started", {}), ("step.finished", {}), ("run.sleeping", {"until": 9.0}))
    assert fold_all(evs) == RunFold(status="sleeping", wake_at=9.0, step=1)
    woke = _events(("run.started", {}), ("run.sleeping", {"until": 9.0, "inbox": True}),
                   ("run.woke", {"from": "waiting"}), ("run.failed", {"error": "boom"}))
    assert fold_all(woke) == RunFold(status="failed", reason="boom" + FAILED_HINT)
    paused = _events(("run.started", {}), ("run.sleeping", {"until": 9.0}),
                     ("run.paused", {"reason": "paused by human:a"}),
                     ("run.resumed", {"by": "human:a", "from": "paused", "to": "sleeping"}))
    assert fold_all(paused) == RunFold(status="sleeping", wake_at=9.0)


def test_events_of_release_0_1_0_fold_too() -> None:
    # 0.1.0 woke a run without an event, and its run.resumed had no "to".
    evs = _events(("run.started", {}), ("run.sleeping", {"until": 9.0, "deferred": True,
                                                         "reason": "night"}),
                  ("policy.decided", {}), ("run.paused", {"reason": "p"}),
                  ("run.resumed", {"by": "h", "from": "paused"}))
    assert fold_all(evs) == RunFold(status="running", reason="")
    assert fold_all(evs[:3]) == RunFold(status="running", reason="deferred: night")


def test_an_event_that_changes_nothing_returns_the_same_fold() -> None:
    run = RunFold(step=3)
    [e] = _events(("model.called", {}))
    assert fold(run, e) is run


def test_effect_and_approval_statuses_fold_from_their_events() -> None:
    intent, done, resolved, decided = _events(
        ("effect.intent", {}), ("effect.done", {}), ("effect.resolved", {"resolution": "retry"}),
        ("approval.decided", {"approval": "a1", "decision": "denied"}))
    assert effect_change(intent) == ("e0", "intent")
    assert effect_change(done) == ("e0", "done")
    assert effect_change(resolved) == ("e0", "resolved_retry")
    assert approval_change(decided) == ("a1", "denied")
    assert approval_change(intent) is None


def test_the_journal_refuses_to_set_a_folded_field_by_hand(store: SQLiteStore) -> None:
    run = start_run(store, sample_agents.sleeper, agent_ref="tests.sample_agents:sleeper",
                    goal="g")
    with holding(store, run) as j:
        assert j is not None
        with pytest.raises(ValueError, match="status follow from its events"):
            j.update(status="done")


def _drive(store: SQLiteStore) -> None:
    asyncio.run(Worker(store, poll_interval=0.01).run(until_idle=True))


def _paid(tmp_path: Path) -> tuple[Path, str]:
    """A store with a run that asked for approval, got it, charged once and finished."""
    db = tmp_path / "tether.db"
    store = SQLiteStore(db)
    try:
        run = start_run(store, sample_agents.pay_fast, agent_ref="tests.sample_agents:pay_fast",
                        goal="pay")
        _drive(store)
        [req] = store.approvals(run=run)
        approvals.decide(store, req.id, approve=True, who="human:ann")
        _drive(store)
        row = store.get_run(run)
        assert row is not None and row.status == "done"
        assert verify_store(store).ok
    finally:
        store.close()
    return db, run


@pytest.mark.raw_rows
@pytest.mark.parametrize(("table", "named", "differs"), [
    ("runs", "run {run}", "status: stored 'running', events say 'done'"),
    ("effects", "effect ", "status: stored 'running', events say 'done'"),
    ("approvals", "approval ", "status: stored 'running', events say 'approved'"),
])
def test_verify_names_a_tampered_projection_row(tmp_path: Path, table: str, named: str,
                                                differs: str) -> None:
    db, run = _paid(tmp_path)
    con = sqlite3.connect(db)
    with con:
        con.execute(f"UPDATE {table} SET status = 'running'")  # noqa: S608 (a test's own table name)
    con.close()
    store = SQLiteStore(db)
    try:
        rep = verify_store(store)
    finally:
        store.close()
    assert len(rep.problems) == 1, rep.problems
    problem = rep.problems[0]
    assert named.format(run=run) in problem and differs in problem
    assert "restore the store from a backup" in problem


@pytest.mark.raw_rows
def test_verify_names_each_field_of_a_tampered_run_row(tmp_path: Path) -> None:
    db, run = _paid(tmp_path)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE runs SET step = 7, reason = 'fine'")
    con.close()
    store = SQLiteStore(db)
    try:
        [problem] = verify_store(store).problems
    finally:
        store.close()
    assert f"run {run}" in problem
    assert "reason: stored 'fine', events say ''" in problem
    assert "step: stored 7, events say 1" in problem


_OPS = st.lists(st.sampled_from(["pause", "resume", "stop", "budget", "drive"]), max_size=6)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops_=_OPS)
def test_any_sequence_of_commands_and_steps_leaves_rows_that_are_folds(
        tmp_path: Path, ops_: list[str]) -> None:
    """Whatever operators do to a run, between its steps (a sleeper: running, then asleep
    for an hour), its row is what its events fold into, and verify agrees."""
    store = SQLiteStore(tmp_path / f"p{len(list(tmp_path.iterdir()))}.db")
    try:
        run = start_run(store, sample_agents.sleeper, agent_ref="tests.sample_agents:sleeper",
                        goal="nap")
        for op in ops_:
            if op == "drive":
                _drive(store)
            else:
                send_command(store, run, op, {"set": {"steps": 50}} if op == "budget" else {},
                                 who="human:ann", wait=0)
            row = store.get_run(run)
            assert row is not None
            assert fold_all(store.events(run)).differences(row) == []
        assert verify_store(store).ok
    finally:
        store.close()
