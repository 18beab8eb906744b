"""Swarms on a real SQLite file: messages, the blackboard and file provenance between runs.

Runs are driven by the real :class:`tether.Worker`. The crash tests kill a real
worker subprocess (``python -m tests.crashkit worker``, which imports the agents
below by reference) at an exact point of a receiving step, then restart here:
every message must be received exactly once and none lost. Every test ends with
``verify_store`` on its store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests import crashkit as ck
from tether import (
    AwaitMessages,
    Done,
    FixedClock,
    StepAgent,
    Worker,
    current,
    start_run,
    tool,
    verify_store,
)
from tether.core.events import Event
from tether.runtime.operator import run_state, send_command
from tether.store.records import Transition, Write
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.tools.files import fs_append, fs_read, fs_write

SWARM = "crew"
REF = "tests.test_swarm"
CRASH_ENV = "SWARM_CRASH"
"""``claim:MARKER``: the receiving step writes MARKER once it has taken messages, then
hangs (to be killed); ``ack``: the ``ack`` tool ``os._exit``s before it acts."""
T0 = 1_700_000_000.0


# -- agents (module level: the crash worker imports them by reference) ----------------

async def _sender(ctx: Any, state: dict[str, Any]) -> Any:
    """Send each ``[to, body]`` of ``state["targets"]``, in one step."""
    for to, body in state["targets"]:
        state.setdefault("sent", []).append(await ctx.send(to, body, topic="work"))
    return Done(len(state["targets"]))


async def _sink(ctx: Any, state: dict[str, Any]) -> Any:
    """Receive until ``want`` messages came; with ``patience``, give up after a quiet wait."""
    got = await ctx.receive()
    state["got"].extend(m.to_json() for m in got)
    state["wakes"] += 1
    if len(state["got"]) >= state["want"]:
        return Done([m["body"] for m in state["got"]])
    if state["patience"] is not None:
        if state["wakes"] > 1 and not got:
            return Done("timed out")
        return AwaitMessages(until=await ctx.now() + state["patience"])
    return AwaitMessages()


@tool(effect="irreversible", idempotent=True)
def ack(n: int) -> str:
    """Acknowledge ``n`` messages (idempotent); may crash the process on purpose."""
    if os.environ.get(CRASH_ENV) == "ack":
        os._exit(ck.EXIT_CODE)
    key = current().idempotency_key
    assert key is not None
    return key


async def _fragile(ctx: Any, state: dict[str, Any]) -> Any:
    """Receive, reply and acknowledge; crashes where ``$SWARM_CRASH`` says."""
    got = await ctx.receive()
    crash = os.environ.get(CRASH_ENV, "")
    if got and crash.startswith("claim:"):
        # The claim is committed; message.received is only in this process's buffer.
        await asyncio.to_thread(Path(crash.removeprefix("claim:")).write_text, "claimed")
        await asyncio.sleep(120)  # killed here
    state["got"].extend(m.id for m in got)
    if got:
        await ctx.send(state["reply_to"], {"acks": len(got)})
        await ctx.call(ack, n=len(state["got"]))  # its intent makes the receive durable first
    return Done(state["got"]) if len(state["got"]) >= state["want"] else AwaitMessages()


async def _writer(ctx: Any, state: dict[str, Any]) -> Any:
    """Write the blackboard key twice and read each write back in the same step."""
    for v in ({"v": 1}, {"v": 2}):
        wrote = await ctx.board.set("plan", v)
        seen = await ctx.board.get("plan")
        assert seen is not None
        state["seen"].append([wrote, seen.value, seen.version, seen.writer, seen.write,
                              seen.suspect])
    missing = await ctx.board.get("missing")
    state["missing"] = missing is None
    return Done()


async def _reader(ctx: Any, state: dict[str, Any]) -> Any:
    e = await ctx.board.get("plan")
    state["seen"] = None if e is None else [e.value, e.version, e.writer, e.write, e.suspect]
    return Done(state["seen"])


def _ping(ctx: Any, state: dict[str, Any]) -> Any:
    # A sync step (run in a worker thread through SyncStepContext).
    if ctx.step == 1:
        state["wrote"] = ctx.board.set("ball", "ping")
        state["sent"] = ctx.send("pong", {"serve": 1})  # by agent name
        return AwaitMessages()
    got = ctx.receive()
    ball = ctx.board.get("ball")
    state["replies"] = [[m.sender, m.body] for m in got]
    state["ball"] = [ball.value, ball.version, ball.writer]
    return Done(state["replies"])


def _pong(ctx: Any, state: dict[str, Any]) -> Any:
    got = ctx.receive()
    if not got:
        return AwaitMessages()
    ball = ctx.board.get("ball")
    ctx.board.set("ball", "pong")
    ctx.send(got[0].sender, {"return": ball.value if ball else None})  # by run id
    return Done()


async def _file_writer(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(fs_write, path="shared.txt", content="from A\n")
    return Done()


async def _file_reader(ctx: Any, state: dict[str, Any]) -> Any:
    if ctx.step == 1:
        state["read"] = await ctx.call(fs_read, path="shared.txt")
        await ctx.call(fs_write, path="own.txt", content="B's own\n")
        await ctx.call(fs_append, path="shared.txt", content="from B\n")
        # This run is now the last writer, though that write is not committed yet.
        await ctx.call(fs_read, path="shared.txt")
        return None
    # Still the last writer of both (step 1 may still be committing: pipelined).
    await ctx.call(fs_read, path="own.txt")
    await ctx.call(fs_read, path="shared.txt")
    await ctx.call(fs_read, path="outside.txt")
    return Done()


sender = StepAgent(_sender, name="sender")
sink = StepAgent(_sink, name="sink")
collector = StepAgent(_sink, name="collector")
fragile = StepAgent(_fragile, name="fragile", tools=[ack])
writer = StepAgent(_writer, name="writer")
reader = StepAgent(_reader, name="reader")
ping = StepAgent(_ping, name="ping")
pong = StepAgent(_pong, name="pong")
file_writer = StepAgent(_file_writer, name="file_writer", tools=[fs_write])
file_reader = StepAgent(_file_reader, name="file_reader", tools=[fs_read, fs_append, fs_write])

AGENTS = {f"{REF}:{n}": a for n, a in [
    ("sender", sender), ("sink", sink), ("collector", collector), ("fragile", fragile),
    ("writer", writer), ("reader", reader), ("ping", ping), ("pong", pong),
    ("file_writer", file_writer), ("file_reader", file_reader)]}


# -- helpers ------------------------------------------------------------------------------

@dataclass
class Env:
    db: Path
    side: Path
    ws: Path
    store: SQLiteStore


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.delenv(CRASH_ENV, raising=False)
    store = SQLiteStore(tmp_path / "swarm.db")
    allow_tools(store)
    e = Env(tmp_path / "swarm.db", tmp_path / "side.log", tmp_path / "ws", store)
    yield e
    rep = verify_store(store)
    assert rep.ok, rep.problems
    store.close()


def start(e: Env, agent: StepAgent, *, name: str, swarm: str | None = SWARM,
          state: dict[str, Any] | None = None, clock: FixedClock | None = None,
          workspace: bool = False) -> str:
    ref = next(r for r, a in AGENTS.items() if a is agent)
    return start_run(e.store, agent, agent_ref=ref, goal=name, name=name, swarm=swarm,
                     state=state if state is not None else {}, clock=clock,
                     workspace=e.ws if workspace else None)


def sink_state(want: int = 1, patience: float | None = None) -> dict[str, Any]:
    return {"got": [], "want": want, "wakes": 0, "patience": patience}


def drive(e: Env, *only: str, clock: FixedClock | None = None) -> None:
    """A real Worker on the store until nothing (of ``only``, if given) is runnable."""
    w = Worker(e.store, agents=AGENTS, poll_interval=0.01, clock=clock,
               only=set(only) if only else None)
    asyncio.run(w.run(until_idle=True))


def run_row(e: Env, run: str) -> Any:
    row = e.store.get_run(run)
    assert row is not None
    return row


def state_of(e: Env, run: str) -> dict[str, Any]:
    from tether.core.checkpoint import restore
    row = run_row(e, run)
    chain = e.store.checkpoint_chain(run, row.epoch, row.step)
    assert chain is not None
    state: dict[str, Any] = restore(chain.key_body, e.store.chunk, chain.deltas)
    return state


def events(e: Env, run: str, kind: str) -> list[Event]:
    return [x for x in e.store.events(run) if x.kind == kind]


def holds_no_lease(e: Env, run: str) -> bool:
    lease = e.store.lease_of(run)
    return lease is None or lease[2] <= time.time()


# -- messages -----------------------------------------------------------------------------

def test_send_by_run_name_run_id_and_agent_name_within_the_swarm(env: Env) -> None:
    alice = start(env, sink, name="alice", state=sink_state())
    bob = start(env, sink, name="bob", state=sink_state())
    coll = start(env, collector, name="gatherer", state=sink_state())
    # A newer "alice" that has finished: the one still going gets alice's mail.
    done_alice = start(env, sink, name="alice", state=sink_state(want=0))
    drive(env, done_alice)
    assert run_row(env, done_alice).status == "done"
    # A newer collector, and a newer live "alice", in another swarm must not get this
    # swarm's mail.
    foreign = start(env, collector, name="far", swarm="elsewhere", state=sink_state())
    far_alice = start(env, sink, name="alice", swarm="elsewhere", state=sink_state())
    s = start(env, sender, name="boss", state={"targets": [
        ["alice", "hi alice"], [bob, "hi bob"], ["collector", "hi collector"]]})

    drive(env)

    assert {r: run_row(env, r).status for r in (alice, bob, coll, s)} == dict.fromkeys(
        (alice, bob, coll, s), "done")
    assert run_row(env, foreign).status == "waiting"
    assert run_row(env, far_alice).status == "waiting"
    sent = events(env, s, "message.sent")
    assert [(x.payload["to"], x.payload["to_name"], x.payload["body"]) for x in sent] == [
        (alice, "alice", "hi alice"), (bob, "bob", "hi bob"), (coll, "gatherer", "hi collector")]
    msgs = env.store.messages(sender=s)
    assert [(m.id, m.recipient, m.body, m.topic, m.status, m.swarm) for m in msgs] == [
        (x.id, x.payload["to"], x.payload["body"], "work", "delivered", SWARM) for x in sent]
    assert state_of(env, s)["sent"] == [x.id for x in sent]
    for run, msg in zip((alice, bob, coll), sent, strict=True):
        got = state_of(env, run)["got"]
        assert got == [{"id": msg.id, "sender": s, "topic": "work", "body": msg.payload["body"],
                        "step": 1}]
        received = [x for x in events(env, run, "message.received") if x.causes]
        assert [x.causes for x in received] == [(msg.id,)]
        assert received[0].payload["messages"] == got
    assert env.store.messages(recipient=foreign) == []
    assert env.store.messages(recipient=far_alice) == []
    assert env.store.messages(recipient=done_alice) == []
    links = [(lk.kind, lk.src_run, lk.src_step, lk.src_event, lk.dst_run)
             for lk in env.store.links()]
    assert sorted(links) == sorted(("message", s, 1, m.id, m.recipient) for m in msgs)


def test_an_unknown_recipient_fails_the_run_naming_it(env: Env) -> None:
    s = start(env, sender, name="lost", state={"targets": [["nobody", 1]]})
    drive(env)
    row = run_row(env, s)
    assert row.status == "failed"
    assert s in row.reason
    assert "no run or agent named 'nobody' in swarm crew" in row.reason
    [failed] = events(env, s, "run.failed")
    assert "'nobody'" in failed.payload["error"]
    assert events(env, s, "message.sent") == [] and env.store.messages() == []
    # Start the recipient, resume: the re-run step looks again and finds it.
    n = start(env, sink, name="nobody", state=sink_state())
    send_command(env.store, s, "resume", who="human:ops")
    drive(env, clock=None)
    assert [m.recipient for m in env.store.messages()] == [n]
    assert run_row(env, s).status == "done"


def test_a_waiting_run_holds_no_lease_and_wakes_when_a_message_arrives(env: Env) -> None:
    clock = FixedClock(T0)
    w = start(env, sink, name="waiter", state=sink_state(), clock=clock)
    drive(env, clock=clock)

    row = run_row(env, w)
    assert (row.status, row.wake_at, row.step) == ("waiting", None, 1)
    assert holds_no_lease(env, w)
    [slept] = events(env, w, "run.sleeping")
    assert slept.payload == {"until": None, "inbox": True}
    clock.advance(365 * 86400)  # no deadline: time alone never wakes it
    assert w not in env.store.runnable(clock.now(), 10)
    drive(env, clock=clock)
    assert run_row(env, w).step == 1

    s = start(env, sender, name="poker", state={"targets": [["waiter", {"wake": True}]]},
              clock=clock)
    drive(env, s, clock=clock)
    assert [m.status for m in env.store.messages(recipient=w)] == ["pending"]
    assert env.store.runnable(clock.now(), 10) == [w]
    drive(env, clock=clock)

    row = run_row(env, w)
    assert (row.status, row.step) == ("done", 2)
    assert state_of(env, w)["got"][0]["body"] == {"wake": True}
    assert holds_no_lease(env, w)


def test_a_waiting_run_with_a_deadline_wakes_on_time_too(env: Env) -> None:
    clock = FixedClock(T0)
    w = start(env, sink, name="patient", state=sink_state(patience=60), clock=clock)
    drive(env, clock=clock)

    row = run_row(env, w)
    assert (row.status, row.wake_at) == ("waiting", T0 + 60)
    assert holds_no_lease(env, w)
    assert env.store.runnable(T0 + 59, 10) == []
    clock.set(T0 + 59)
    drive(env, clock=clock)
    assert run_row(env, w).step == 1
    clock.set(T0 + 61)
    assert env.store.runnable(clock.now(), 10) == [w]
    drive(env, clock=clock)

    row = run_row(env, w)
    assert (row.status, row.step) == ("done", 2)
    assert [x.payload["result"] for x in events(env, w, "run.done")] == ["timed out"]
    assert [(x.step, x.payload["messages"], x.causes)
            for x in events(env, w, "message.received")] == [(1, [], ()), (2, [], ())]


@pytest.mark.parametrize("deadline_passes", [False, True])
def test_a_waiting_run_paused_and_resumed_waits_for_its_inbox_again(
        env: Env, deadline_passes: bool) -> None:
    clock = FixedClock(T0)
    w = start(env, sink, name="patient", state=sink_state(patience=60), clock=clock)
    drive(env, clock=clock)
    assert run_row(env, w).status == "waiting"
    send_command(env.store, w, "pause", who="human:ops")
    clock.set(T0 + (120 if deadline_passes else 30))
    send_command(env.store, w, "resume", who="human:ops")
    row = run_row(env, w)
    # Not "sleeping" (a message would not wake it) and not "running" (it would poll).
    assert (row.status, row.wake_at) == ("waiting", T0 + 60)
    if deadline_passes:  # its patience ran out while paused: it runs at once
        assert env.store.runnable(clock.now(), 10) == [w]
        drive(env, clock=clock)
        assert [x.payload["result"] for x in events(env, w, "run.done")] == ["timed out"]
        return
    assert env.store.runnable(clock.now(), 10) == []
    s = start(env, sender, name="poker", state={"targets": [["patient", "hi"]]}, clock=clock)
    drive(env, s, clock=clock)
    assert env.store.runnable(clock.now(), 10) == [w]
    drive(env, clock=clock)
    assert run_row(env, w).status == "done" and state_of(env, w)["got"][0]["body"] == "hi"


# -- crashes while receiving ----------------------------------------------------------------

@pytest.mark.parametrize("point", ["claim", "ack"])
def test_each_message_is_received_exactly_once_across_a_kill(env: Env, point: str) -> None:
    """``claim``: SIGKILL after the claim committed, before ``message.received`` did.
    ``ack``: the worker dies in the step after ``message.received`` committed."""
    cons = start(env, fragile, name="consumer",
                 state={"got": [], "want": 4, "reply_to": "producer"})
    prod = start(env, sender, name="producer",
                 state={"targets": [["consumer", f"m{i}"] for i in range(3)]})
    drive(env, prod)
    first = [m.id for m in env.store.messages(recipient=cons)]
    assert len(first) == 3

    marker = env.db.parent / "claimed"
    crash = f"claim:{marker}" if point == "claim" else "ack"
    w = ck.spawn_worker(env.db, env.side, tag=f"crash-{point}", lease_ttl=0.3, until_idle=True,
                        extra_env={CRASH_ENV: crash})
    try:
        if point == "claim":
            def claimed() -> bool:
                if w.proc.poll() is not None:
                    raise AssertionError(f"worker exited {w.proc.returncode} before the claim: "
                                         f"{w.log.read_text()[-2000:]}")
                return marker.exists()
            ck.wait_for(claimed, 30, "the consumer to take its messages")
            w.kill()
        else:
            code = w.proc.wait(timeout=60)
            assert code == ck.EXIT_CODE, w.log.read_text()[-2000:]
    finally:
        if w.proc.poll() is None:
            w.kill()

    # What the crash left: the three messages taken by the call (epoch 0, step 1, call 0).
    assert [(m.id, m.status, m.claim) for m in env.store.messages(recipient=cons)] == [
        (m, "delivered", "0:1:0") for m in first]
    durable = events(env, cons, "message.received")
    if point == "claim":
        assert durable == []
        assert events(env, cons, "effect.intent") == []
    else:
        assert [x.causes for x in durable] == [tuple(first)]
        assert len(events(env, cons, "effect.intent")) == 1
    assert run_row(env, cons).status == "running"

    # Another message arrives while nobody owns the consumer; then a restart.
    late = start(env, sender, name="late", state={"targets": [["consumer", "late"]]})
    drive(env, late)
    [last] = [m.id for m in env.store.messages(sender=late)]
    drive(env)

    row = run_row(env, cons)
    assert row.status == "done", row.reason
    received = events(env, cons, "message.received")
    cited = [c for x in received for c in x.causes]
    assert Counter(cited) == Counter([*first, last])  # each message exactly once
    assert state_of(env, cons)["got"] == [*first, last]
    msgs = env.store.messages(recipient=cons)
    assert all(m.status == "delivered" for m in msgs)
    if point == "claim":
        # The re-run call took what it had taken before, plus the late one.
        assert [(x.step, x.causes) for x in received] == [(1, (*first, last))]
        assert [m.claim for m in msgs] == ["0:1:0"] * 4
        expected_acks = [4]
    else:
        # The receive was durable: replayed as journaled; the late one came next step.
        assert [(x.step, x.causes) for x in received] == [(1, tuple(first)), (2, (last,))]
        assert [m.claim for m in msgs] == ["0:1:0"] * 3 + ["0:2:0"]
        expected_acks = [3, 1]
        retried = events(env, cons, "effect.retried")
        assert len(retried) == 1  # the idempotent ack, with its key
    # Replies sent by the step exist exactly once each (a replayed send is not resent).
    replies = env.store.messages(sender=cons)
    assert [(m.body, m.recipient) for m in replies] == [({"acks": n}, prod)
                                                         for n in expected_acks]
    assert [m.id for m in replies] == [x.id for x in events(env, cons, "message.sent")]
    effects = env.store.effects(run=cons)
    assert [(f.tool, f.status) for f in effects] == [("ack", "done")] * len(expected_acks)
    assert all(f.result == f.key for f in effects)


# -- the blackboard -------------------------------------------------------------------------

def test_blackboard_versions_own_reads_causes_and_suspect_writes(env: Env) -> None:
    w = start(env, writer, name="writer", state={"seen": []})
    drive(env, w)
    st = state_of(env, w)
    writes = [x.id for x in events(env, w, "blackboard.write")]
    assert len(writes) == 2
    # A run reads its own write in the same step, at the version it made.
    assert st["seen"] == [[writes[0], {"v": 1}, 1, w, writes[0], False],
                          [writes[1], {"v": 2}, 2, w, writes[1], False]]
    assert st["missing"] is True
    reads = events(env, w, "blackboard.read")
    assert [x.causes for x in reads] == [(writes[0],), (writes[1],), ()]
    assert reads[2].payload["found"] is False
    assert [(v.key, v.version, v.event, v.value, v.run) for v in env.store.versions()] == [
        ("plan", 1, writes[0], {"v": 1}, w), ("plan", 2, writes[1], {"v": 2}, w)]
    assert {v.ns for v in env.store.versions()} == {f"board:{SWARM}"}

    r = start(env, reader, name="reader", state={})
    other = start(env, reader, name="outsider", swarm="elsewhere", state={})
    drive(env, r, other)
    assert state_of(env, r)["seen"] == [{"v": 2}, 2, w, writes[1], False]
    [read] = events(env, r, "blackboard.read")
    assert read.causes == (writes[1],)
    assert state_of(env, other)["seen"] is None
    assert [(lk.kind, lk.src_run, lk.src_event, lk.dst_run, lk.dst_event)
            for lk in env.store.links()] == [("board", w, writes[1], r, read.id)]

    # The writer's second write is marked suspect (as quarantine does): readers are told.
    token = env.store.acquire(w, "human:test", 60, time.time())
    assert token is not None
    mark = Transition("versions", (writes[1],), "suspect", True, (False,))
    assert env.store.commit([Write(run=w, fence=token, events=(), transitions=(mark,))]) == [None]
    env.store.release(w, "human:test", token)
    again = start(env, reader, name="careful", state={})
    drive(env, again)
    assert state_of(env, again)["seen"] == [{"v": 2}, 2, w, writes[1], True]
    [read2] = events(env, again, "blackboard.read")
    assert read2.payload["suspect"] is True
    assert read2.causes == (writes[1],)

    # `tether audit verify` on the store agrees.
    from tether.cli.app import app
    res = CliRunner().invoke(app, ["--store", str(env.db), "audit", "verify"])
    assert res.exit_code == 0, res.output


def test_sync_steps_send_receive_and_use_the_board(env: Env) -> None:
    pi = start(env, ping, name="ping-run", state={})
    po = start(env, pong, name="pong-run", state={})
    drive(env)

    assert run_row(env, pi).status == "done"
    assert run_row(env, po).status == "done"
    st = state_of(env, pi)
    assert st["replies"] == [[po, {"return": "ping"}]]
    assert st["ball"] == ["pong", 2, po]
    [served] = events(env, pi, "message.sent")
    assert served.id == st["sent"]
    assert served.payload["to"] == po
    [ret] = events(env, po, "message.sent")
    assert ret.payload["to"] == pi
    assert [x.causes for x in events(env, pi, "message.received")] == [(ret.id,)]
    assert [x.causes for x in events(env, po, "message.received") if x.causes] == [(served.id,)]
    [pong_read] = events(env, po, "blackboard.read")
    assert pong_read.causes == (st["wrote"],)
    assert [(v.value, v.version, v.run) for v in env.store.versions(key="ball")] == [
        ("ping", 1, pi), ("pong", 2, po)]


# -- files ----------------------------------------------------------------------------------

def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_file_tools_cite_the_last_writer_in_another_run(env: Env) -> None:
    a = start(env, file_writer, name="author", workspace=True)
    drive(env, a)
    [a_intent] = [x.id for x in events(env, a, "effect.intent")]
    (env.ws / "outside.txt").write_text("not written through tether\n")
    b = start(env, file_reader, name="editor", workspace=True)
    drive(env, b)

    assert run_row(env, b).status == "done", run_row(env, b).reason
    assert (env.ws / "shared.txt").read_text() == "from A\nfrom B\n"
    intents = {x.payload["arguments"]["path"]: x.id for x in events(env, b, "effect.intent")}
    calls = [(x.step, x.payload["arguments"]["path"], x.causes)
             for x in events(env, b, "tool.called")]
    assert calls == [(1, "shared.txt", (a_intent,)), (1, "shared.txt", ()),
                     (2, "own.txt", ()), (2, "shared.txt", ()), (2, "outside.txt", ())]
    done = {env.store.event(x.causes[0]).payload["arguments"]["path"]: x.causes  # type: ignore[union-attr]
            for x in events(env, b, "effect.done")}
    assert done == {"shared.txt": (intents["shared.txt"], a_intent),
                    "own.txt": (intents["own.txt"],)}

    ns = f"file:{env.ws.resolve()}"
    assert [(v.ns, v.key, v.version, v.event, v.run, v.hash, v.value)
            for v in env.store.versions()] == [
        (ns, "shared.txt", 1, a_intent, a, _sha("from A\n"), None),
        (ns, "own.txt", 1, intents["own.txt"], b, _sha("B's own\n"), None),
        (ns, "shared.txt", 2, intents["shared.txt"], b, _sha("from A\nfrom B\n"), None)]
    cur = env.store.current_versions(ns, ["shared.txt", "own.txt", "outside.txt"])
    assert {k: v.event for k, v in cur.items()} == {"shared.txt": intents["shared.txt"],
                                                    "own.txt": intents["own.txt"]}
    links = [(lk.kind, lk.src_run, lk.src_step, lk.src_event, lk.dst_run, lk.dst_step)
             for lk in env.store.links()]
    assert links == [("file", a, 1, a_intent, b, 1)] * 2


# The order of the three runs below is set by events, not by sleeps: each waits (with a
# deadline, so a broken order fails instead of hanging) for what the other did.
_ORDER: dict[str, asyncio.Event] = {}


async def _after(what: str) -> None:
    try:
        await asyncio.wait_for(_ORDER[what].wait(), 30)
    except TimeoutError:
        raise AssertionError(f"waited 30 s for {what}") from None


async def _early_appender(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(fs_append, path="p.txt", content="A\n")
    _ORDER["a wrote"].set()
    await _after("b wrote")  # a slow model call after the write: its step commits late
    return Done()


async def _late_appender(ctx: Any, state: dict[str, Any]) -> Any:
    await _after("a wrote")
    await ctx.call(fs_append, path="p.txt", content="B\n")  # appends to A's bytes
    _ORDER["b wrote"].set()
    return Done()


async def _late_reader(ctx: Any, state: dict[str, Any]) -> Any:
    await _after("b wrote")
    return Done(await ctx.call(fs_read, path="p.txt"))


def test_file_versions_follow_the_order_of_the_writes_not_of_the_commits(
        tmp_path: Path) -> None:
    # A writes, then its step goes on (its commit would come late); B appends to A's bytes;
    # C reads. The versions must say A then B, and the links A->B and B->C: the file tools
    # run under the workspace lock until their versions are committed.
    from tether import StepAgent
    from tether.provenance.impact import impact
    agents = {n: StepAgent(f, name=n, tools=[fs_append, fs_read]) for n, f in
              (("a", _early_appender), ("b", _late_appender), ("c", _late_reader))}
    store = SQLiteStore(tmp_path / "t.db")
    ws = tmp_path / "ws"
    ids = {n: start_run(store, a, agent_ref=n, goal="g", name=n, swarm="s", workspace=ws)
           for n, a in agents.items()}

    async def main() -> None:
        _ORDER.update({"a wrote": asyncio.Event(), "b wrote": asyncio.Event()})
        await Worker(store, agents=agents, poll_interval=0.005).run(until_idle=True)

    asyncio.run(main())
    name = {v: k for k, v in ids.items()}
    assert (ws / "p.txt").read_text() == "A\nB\n"
    assert [(v.version, name[v.run]) for v in store.versions(key="p.txt")] == [(1, "a"), (2, "b")]
    assert sorted((ln.kind, name[ln.src_run], name[ln.dst_run]) for ln in store.links()) == [
        ("file", "a", "b"), ("file", "b", "c")]
    assert [name[a.run.id] for a in impact(store, f"{ids['a']}@1").affected] == ["a", "b", "c"]
    store.close()


_GATE: dict[str, threading.Event] = {}
"""``holding``: slow_write's thread has begun (the workspace lock is held); ``release``: it
may finish. Set by the test itself, so nothing waits on a guessed delay."""


def _until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait (in a thread, off the event loop) until ``cond()``, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.005)


@tool(effect="reversible", touches_files=True)
def slow_write(path: str, content: str) -> str:
    """Write a workspace file once the test releases it, in a thread (a slow client)."""
    from tether.tools import current, record_touch
    ws = current().workspace
    assert ws is not None
    _GATE["holding"].set()
    if not _GATE["release"].wait(30):
        raise AssertionError("slow_write was never released")
    (ws / path).write_text(content)
    record_touch(path)
    return "ok"


async def _slow_holder(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(slow_write, path="a.txt", content="A")
    return Done()


async def _quick_writer(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(fs_write, path="b.txt", content="B")
    return Done()


def _queued(lock: asyncio.Lock | None) -> int:
    """How many tasks wait for ``lock`` (asyncio keeps them in ``_waiters``; no public API)."""
    return len(getattr(lock, "_waiters", None) or ())


@pytest.mark.parametrize("stopped", ["waiter", "holder"])
def test_a_stop_while_the_workspace_lock_is_busy(tmp_path: Path, stopped: str) -> None:
    # waiter: stopped while it waits for the lock, it never wrote, and nothing is in doubt.
    # holder: stopped while its sync tool's thread still writes, the lock stays held until
    # that thread is done, so the waiter's write and its version come after it.
    from tether import StepAgent
    from tether.runtime.workspace import workspace_lock
    agents = {"holder": StepAgent(_slow_holder, name="holder", tools=[slow_write]),
              "waiter": StepAgent(_quick_writer, name="waiter", tools=[fs_write])}
    store = SQLiteStore(tmp_path / "t.db")
    ws = tmp_path / "ws"
    ids = {n: start_run(store, agents[n], agent_ref=n, goal="g", name=n, workspace=ws)
           for n in ("holder", "waiter")}
    _GATE.update(holding=threading.Event(), release=threading.Event())
    reader = SQLiteStore(tmp_path / "t.db")  # the test's own connection, for its thread

    def stopped_yet() -> bool:
        row = reader.get_run(ids[stopped])
        return row is not None and row.status == "stopped"

    async def main() -> None:
        w = Worker(store, agents=agents, poll_interval=0.01)
        task = asyncio.create_task(w.run(until_idle=True))
        await asyncio.to_thread(_GATE["holding"].wait, 30)  # the holder has the lock
        lock = workspace_lock(str(ws.resolve()))
        deadline = time.monotonic() + 30
        while not _queued(lock):  # the waiter queues on it
            assert time.monotonic() < deadline, "the waiter never queued on the lock"
            await asyncio.sleep(0.005)
        store.add_command(ids[stopped], "stop", {}, "human:ops", time.time())
        await asyncio.to_thread(_until, stopped_yet, f"the {stopped} to be stopped")
        _GATE["release"].set()  # only now may the holder's thread write and let go
        await task

    try:
        asyncio.run(main())
    finally:
        _GATE["release"].set()
        reader.close()
    statuses = {n: (store.get_run(r).status, [e.status for e in store.effects(run=r)])  # type: ignore[union-attr]
                for n, r in ids.items()}
    if stopped == "waiter":
        assert statuses == {"holder": ("done", ["done"]), "waiter": ("stopped", [])}
        assert not (ws / "b.txt").exists()
    else:
        assert statuses == {"holder": ("stopped", ["in_doubt"]), "waiter": ("done", ["done"])}
        assert (ws / "a.txt").read_text() == "A" and (ws / "b.txt").read_text() == "B"
        waiter_effect = store.effects(run=ids["waiter"])[0]
        assert waiter_effect.updated >= (ws / "a.txt").stat().st_mtime - 1e-3
    store.close()


async def _file_writer(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(fs_write, path="report.txt", content="numbers\n")
    return Done()


async def _file_reader(ctx: Any, state: dict[str, Any]) -> Any:
    state["text"] = await ctx.call(fs_read, path="report.txt")
    state["suspect"] = list(ctx.suspect_files)
    return Done()


def test_a_reader_of_a_file_a_quarantined_run_wrote_is_told(tmp_path: Path) -> None:
    from tether import StepAgent
    from tether.provenance.quarantine import quarantine
    agents = {"w": StepAgent(_file_writer, name="w", tools=[fs_write]),
              "r": StepAgent(_file_reader, name="r", tools=[fs_read])}
    store = SQLiteStore(tmp_path / "t.db")
    ws = tmp_path / "ws"
    w = start_run(store, agents["w"], agent_ref="w", goal="g", name="w", workspace=ws)
    asyncio.run(Worker(store, agents=agents).run(until_idle=True))
    quarantine(store, w, reason="bad numbers", who="human:ops")
    r = start_run(store, agents["r"], agent_ref="r", goal="g", name="r", workspace=ws)
    asyncio.run(Worker(store, agents=agents).run(until_idle=True))
    st = run_state(store, r)[2]
    assert st["text"] == "numbers\n" and st["suspect"] == ["report.txt"]
    [read] = [e for e in store.events(r) if e.kind == "tool.called"]
    assert read.payload["suspect"] == ["report.txt"] and len(read.causes) == 1
    quarantine(store, w, release=True, who="human:ops")
    r2 = start_run(store, agents["r"], agent_ref="r", goal="g", name="r2", workspace=ws)
    asyncio.run(Worker(store, agents=agents).run(until_idle=True))
    assert run_state(store, r2)[2]["suspect"] == []
    store.close()
