"""What a strong verdict does to a run's writes and to the run it names as origin, and
that it survives kill -9 (real runs, a real SQLite store, real subprocesses killed with
SIGKILL at exact points; issue 10's containment gaps)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests import contain_crash as cc
from tether import Continue, Done, SleepUntil, StepAgent, Worker, start_run, verify_store
from tether.alerts import ack
from tether.core.events import Event
from tether.core.monitors import KINDS, Level, Quiet, Signal, View
from tether.provenance.quarantine import quarantine
from tether.runtime.operator import send_command
from tether.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]


class PauseAtTwo(Quiet):
    """A ``pause`` verdict when the run's second step ends."""

    name = "pause_at_two"

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if event.kind == "step.finished" and event.step == 2:
            yield Signal(self.name, "bad", "step 2 was bad", evidence=(event.id,),
                         level=Level.PAUSE)


async def _writer(ctx: Any, state: dict[str, Any]) -> Any:
    n = state["n"] = state.get("n", 0) + 1
    await ctx.board.set(f"k{n}", f"v{n}")
    await ctx.send("sink", f"note {n}")
    return Done(n) if n >= 4 else Continue()


async def _reader(ctx: Any, state: dict[str, Any]) -> Any:
    entry = await ctx.board.get("k1")
    return Done(bool(entry and entry.suspect))


async def _sink(ctx: Any, state: dict[str, Any]) -> Any:
    got = await ctx.receive()
    return Done([m.suspect for m in got])


WRITER = StepAgent(_writer, name="writer", monitors=[PauseAtTwo])
READER = StepAgent(_reader, name="reader")
SINK = StepAgent(_sink, name="sink")
AGENTS = {"writer": WRITER, "reader": READER, "sink": SINK}


def _drive(store: SQLiteStore) -> None:
    asyncio.run(Worker(store, agents=AGENTS, poll_interval=0.01).run(until_idle=True))


def _start(store: SQLiteStore) -> tuple[str, str]:
    """A writer whose step 2 gets a pause verdict, and the parked run it writes to."""
    sink = start_run(store, SINK, agent_ref="sink", goal="read mail", name="sink")
    send_command(store, sink, "pause", who="human:test")
    w = start_run(store, WRITER, agent_ref="writer", goal="write")
    _drive(store)
    assert store.get_run(w).status == "paused"  # type: ignore[union-attr]
    return w, sink


def _read_k1(store: SQLiteStore) -> bool:
    run = start_run(store, READER, agent_ref="reader", goal="read")
    _drive(store)
    done = next(e for e in store.events(run) if e.kind == "run.done")
    return bool(done.payload["result"])


def _replayed_marks(store: SQLiteStore) -> dict[str, bool]:
    """Each version's and message's suspect mark, from the journal alone (what the store
    must hold)."""
    marks: dict[str, bool] = {}
    for run in store.all_run_ids():
        for e in store.events(run):
            p = e.payload if isinstance(e.payload, dict) else {}
            if e.kind in ("blackboard.write", "message.sent"):
                marks[e.id] = bool(p.get("suspect"))
            for ids, value in ((p.get("suspect") if e.kind == "alert" else None, True),
                               (p.get("messages") if e.kind == "alert" else None, True),
                               (p.get("writes") if e.kind == "alert.acked" else None, False),
                               (p.get("messages") if e.kind == "alert.acked" else None, False),
                               (p.get("writes") if e.kind == "run.quarantined" else None, True),
                               (p.get("writes") if e.kind == "run.released" else None, False)):
                for i in ids or ():
                    marks[i] = value
    return marks


def _stored_marks(store: SQLiteStore) -> dict[str, bool]:
    return {**{v.event: v.suspect for run in store.all_run_ids()
               for v in store.versions(run=run)},
            **{m.id: m.suspect for m in store.messages()}}


def test_a_pause_verdict_marks_the_runs_writes_suspect_until_acked(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    w, sink = _start(store)
    writes = [e.id for e in store.events(w) if e.kind == "blackboard.write"]
    sent = [e.id for e in store.events(w) if e.kind == "message.sent"]
    (alert,) = [e for e in store.events(w) if e.kind == "alert"]
    # Both writes and both messages made before the verdict, in the alert's own commit.
    assert alert.payload["suspect"] == sorted(writes) and len(writes) == 2
    assert alert.payload["messages"] == sorted(sent) and len(sent) == 2
    assert all(v.suspect for v in store.versions(run=w))
    assert _read_k1(store) is True  # a reader is told, as for a quarantine
    send_command(store, sink, "resume", who="human:test")
    _drive(store)
    done = next(e for e in store.events(sink) if e.kind == "run.done")
    assert done.payload["result"] == [True, True]  # and so is a recipient
    received = next(e for e in store.events(sink) if e.kind == "message.received")
    assert [m["suspect"] for m in received.payload["messages"]] == [True, True]
    assert _replayed_marks(store) == _stored_marks(store)

    ack(store, alert.id, who="human:ops", note="looked, fine")
    (acked,) = [e for e in store.events(w) if e.kind == "alert.acked"]
    assert acked.payload["writes"] == sorted(writes)
    assert acked.payload["messages"] == sorted(sent)
    assert not any(v.suspect for v in store.versions(run=w))
    assert _read_k1(store) is False
    assert _replayed_marks(store) == _stored_marks(store)
    report = verify_store(store)
    assert report.ok, report.problems


def test_acking_leaves_the_marks_a_quarantine_holds(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    w, _ = _start(store)
    (alert,) = [e for e in store.events(w) if e.kind == "alert"]
    quarantine(store, w, reason="looking", who="human:ops")
    ack(store, alert.id, who="human:ops")
    (acked,) = [e for e in store.events(w) if e.kind == "alert.acked"]
    assert "writes" not in acked.payload  # its messages are cleared: they stay held
    assert len(acked.payload["messages"]) == 2
    assert all(v.suspect for v in store.versions(run=w))
    assert all(m.status == "held" for m in store.messages(sender=w))
    quarantine(store, w, release=True, who="human:ops")
    assert not any(v.suspect for v in store.versions(run=w))
    assert _replayed_marks(store) == _stored_marks(store)
    assert verify_store(store).ok


# -- escalation survives a takeover --------------------------------------------------
class EveryStep(Quiet):
    """Signals each step; a small window, so a new owner sees only the last events."""

    name = "every_step"
    window = 2
    stages = (Level.ALERT, Level.ALERT, Level.ALERT, Level.PAUSE)

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if event.kind == "step.finished":
            yield Signal(self.name, "step", "a step", evidence=(event.id,))


async def _napper(ctx: Any, state: dict[str, Any]) -> Any:
    state["n"] = state.get("n", 0) + 1
    return SleepUntil(await ctx.now())  # due at once: the next worker takes it over


@pytest.fixture
def no_builtins() -> Iterator[None]:
    """Only the test's monitor, so its window of 2 events is the host's (the built-ins
    read the last 64 or 512)."""
    saved = dict(KINDS)
    for name, kind in saved.items():
        KINDS[name] = replace(kind, enabled=False)
    yield
    KINDS.update(saved)


@pytest.mark.usefixtures("no_builtins")
def test_a_run_taken_over_keeps_its_escalation_stage(tmp_path: Path) -> None:
    agent = StepAgent(_napper, name="napper", monitors=[EveryStep])
    store = SQLiteStore(tmp_path / "t.db")
    run = start_run(store, agent, agent_ref="napper", goal="nap",
                    pause_points={"every_steps": 1})
    for _ in range(4):  # one step per worker: each one takes the run over
        asyncio.run(Worker(store, agents={"napper": agent}, poll_interval=0.01)
                    .run(until_idle=True))
        if store.get_run(run).status == "paused" and any(  # type: ignore[union-attr]
                e.kind == "alert" and e.payload["verdict"] == "pause" for e in store.events(run)):
            break
        send_command(store, run, "resume", who="human:test")
    stages = [(e.payload["stage"], e.payload["verdict"])
              for e in store.events(run) if e.kind == "alert"]
    assert stages == [(1, "alert"), (2, "alert"), (3, "alert"), (4, "pause")]


# -- kill -9 -------------------------------------------------------------------------
def _worker(db: Path, kill: str | None = None) -> int:
    cmd = [sys.executable, "-m", "tests.contain_crash", str(db)]
    if kill:
        cmd += ["--kill", kill]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run(cmd, cwd=ROOT, env=env, timeout=120, check=False).returncode


def _assert_contained(store: SQLiteStore, run: str, *, parked_with: bool = True) -> None:
    row = store.get_run(run)
    assert row is not None and row.status == "paused", row
    assert row.spec.get("quarantined")
    events = store.events(run)
    (q,) = [e for e in events if e.kind == "run.quarantined"]
    paused = [e for e in events if e.kind == "run.paused"]
    # Parked and contained in one commit: the pause is the event right before (unless
    # the run was parked already).
    assert paused and (paused[-1].seq == q.seq - 1 or not parked_with)
    writes = [e.id for e in events if e.kind == "blackboard.write"]
    assert set(writes) <= set(q.payload["writes"]) | {
        i for e in events if e.kind == "alert" for i in e.payload.get("suspect", ())}
    assert all(v.suspect for v in store.versions(run=run))
    assert all(m.status != "pending" for m in store.messages(sender=run))
    report = verify_store(store)
    assert report.ok, report.problems


@pytest.mark.crash
@pytest.mark.parametrize("kill", ["alert", "paused"])
def test_a_quarantine_verdict_survives_kill_9_contained(tmp_path: Path, kill: str) -> None:
    db = tmp_path / "t.db"
    runs = cc.start(SQLiteStore(db), "self")
    assert _worker(db, kill) == -9  # killed right after that commit
    assert _worker(db) == 0  # a new worker takes over and finishes
    store = SQLiteStore(db)
    _assert_contained(store, runs["bad"])
    (held,) = store.messages(sender=runs["bad"])
    assert held.status == "held"


@pytest.mark.crash
def test_an_order_for_the_origin_survives_kill_9_and_quarantines_it(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    runs = cc.start(SQLiteStore(db), "origin")
    assert _worker(db, "order") == -9  # killed after the alert, before the order was queued
    assert _worker(db) == 0
    store = SQLiteStore(db)
    (alert,) = [e for e in store.events(runs["dispatcher"]) if e.kind == "alert"]
    assert alert.payload["origin"] == runs["router"]
    _assert_contained(store, runs["router"])
    cmds = [e for e in store.events(runs["router"]) if e.kind == "command"]
    assert [(c.payload["kind"], c.payload["args"]["alert"], c.actor) for c in cmds] == [
        ("quarantine", alert.id, "system:monitor")]
    (q,) = [e for e in store.events(runs["router"]) if e.kind == "run.quarantined"]
    assert alert.id in q.causes


def _drive_alone(store: SQLiteStore, run: str, *, steps: int) -> None:
    """Drive only ``run`` until it has ``steps`` steps done, then stop its worker."""
    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Worker(store, agents=cc.AGENTS, poll_interval=0.01,
                                          only={run}).run(stop=stop))
        while store.get_run(run).step < steps:  # type: ignore[union-attr]  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        stop.set()
        await task
    asyncio.run(go())


def test_a_quarantine_verdict_naming_an_idle_origin_contains_it_at_once(tmp_path: Path
                                                                         ) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    runs = cc.start(store, "origin")
    router = runs["router"]

    # The router sends, then an operator parks it: no worker will take it again, so the
    # dispatcher's worker contains it under its lease.
    _drive_alone(store, router, steps=2)
    send_command(store, router, "pause", who="human:ops")
    asyncio.run(Worker(store, agents=cc.AGENTS, poll_interval=0.01).run(until_idle=True))
    _assert_contained(store, router, parked_with=False)
    assert store.get_run(runs["dispatcher"]).status == "done"  # type: ignore[union-attr]


def test_a_worker_starting_queues_the_orders_nobody_queued(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The observed run ended or was parked in its alert's commit and the worker died
    before queueing the order: nobody will take that run again, so a worker that starts
    queues it (once: the key makes it a no-op the next time)."""
    import tether.runtime.commands as commands
    store = SQLiteStore(tmp_path / "t.db")
    runs = cc.start(store, "origin")
    router = runs["router"]

    _drive_alone(store, router, steps=2)
    send_command(store, router, "pause", who="human:ops")
    with monkeypatch.context() as m:  # the order is lost: as if killed before queueing it
        m.setattr(commands, "send_order", lambda *a: None)
        m.setattr(commands, "resend_orders", lambda *a: 0)
        asyncio.run(Worker(store, agents=cc.AGENTS, poll_interval=0.01).run(until_idle=True))
    assert store.get_run(runs["dispatcher"]).status == "done"  # type: ignore[union-attr]
    assert not any(e.kind == "run.quarantined" for e in store.events(router))
    asyncio.run(Worker(store, agents=cc.AGENTS, poll_interval=0.01).run(until_idle=True))
    _assert_contained(store, router, parked_with=False)
    assert commands.resend_orders(store, 0.0) == 1  # queued before: nothing more
    asyncio.run(Worker(store, agents=cc.AGENTS, poll_interval=0.01).run(until_idle=True))
    assert [e.kind for e in store.events(router)].count("command") == 2  # pause, quarantine


def test_orders_queued_before_the_key_existed_get_theirs(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """The migration that adds command keys keys the orders a monitor queued before it,
    so a worker that takes their run over does not queue them again."""
    import sqlite3

    from tether.store import schema
    db = tmp_path / "t.db"
    with monkeypatch.context() as m:
        before = next(i for i, sql in enumerate(schema.MIGRATIONS)
                      if "commands ADD COLUMN key" in sql)
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:before])
        m.setattr(schema, "VERSION", before)
        SQLiteStore(db)
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO commands(run, kind, args, actor, created) VALUES(?,?,?,?,?)",
                  ("R", "pause", b'{"alert":"A1","run":"D"}', "system:monitor", 1.0))
        c.execute("INSERT INTO commands(run, kind, args, actor, created) VALUES(?,?,?,?,?)",
                  ("R", "pause", b'{}', "human:ops", 1.0))
    store = SQLiteStore(db)
    assert store.add_command("R", "pause", {"alert": "A1"}, "system:monitor", 2.0,
                             key="alert:A1") == 1
    assert store.add_command("R", "pause", {"alert": "A2"}, "system:monitor", 2.0,
                             key="alert:A2") == 3


def test_alert_reads_use_the_partial_index(tmp_path: Path) -> None:
    import sqlite3

    from tether.store.schema import RARE_SQL
    SQLiteStore(tmp_path / "t.db")
    with sqlite3.connect(tmp_path / "t.db") as c:
        sql = ("EXPLAIN QUERY PLAN SELECT seq FROM events WHERE kind IN (?) AND kind IN (%s) "
               "AND rk = ? ORDER BY time, rk, seq")  # the shape of events_of_kinds(run=)
        plan = c.execute(sql % RARE_SQL, ("alert", 1)).fetchall()
    assert "events_rare" in str(plan), plan
