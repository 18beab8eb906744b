"""The built-in ``pingpong`` monitor on real swarms (real SQLite store, a worker): two runs
answering each other the same messages are flagged on both sides and paused at the next
round; a conversation that moves on is not; message storms against a run's own baseline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tether import AwaitMessages, Continue, Done, StepAgent, Worker, start_run
from tether.store.sqlite import SQLiteStore

SWARM = "crew"


async def _talker(ctx: Any, state: dict[str, Any]) -> Any:
    """Say ``first`` to ``peer`` (if any), then answer every message with ``reply`` (which may
    name the round, ``{n}``, and the time, ``{now}``), ``rounds`` times."""
    if state.get("first") and not state.get("opened"):
        state["opened"] = True
        await ctx.send(state["peer"], state["first"])
    for m in await ctx.receive():
        state["n"] = n = state.get("n", 0) + 1
        stamp = f"2026-12-04T10:{n % 60:02d}:00Z ref 9f8e7d6c-0000-4000-8000-{n:012d}"
        await ctx.send(m.sender, state["reply"].format(n=n, now=stamp))
        if n >= state["rounds"]:
            return Done(n)
    return AwaitMessages()


TALKER = StepAgent(_talker, name="talker")


def _pair(tmp_path: Path, reply_a: str, reply_b: str, rounds: int = 8
          ) -> tuple[SQLiteStore, dict[str, str]]:
    store = SQLiteStore(tmp_path / "t.db")
    runs = {
        "b": start_run(store, TALKER, agent_ref="talker", goal="b", name="b", swarm=SWARM,
                       state={"reply": reply_b, "rounds": rounds}),
        "a": start_run(store, TALKER, agent_ref="talker", goal="a", name="a", swarm=SWARM,
                       state={"peer": "b", "first": "please review my draft",
                              "reply": reply_a, "rounds": rounds})}
    asyncio.run(Worker(store, agents={"talker": TALKER}, poll_interval=0.01).run(until_idle=True))
    return store, runs


def _alerts(store: SQLiteStore, run: str) -> list[tuple[str, str, int]]:
    return [(e.payload["rule"], e.payload["verdict"], e.payload["stage"])
            for e in store.events(run) if e.kind == "alert"]


def test_two_runs_answering_each_other_the_same_are_flagged_then_paused(tmp_path: Path) -> None:
    # The timestamps and reference ids in the bodies change every round; the rest does not.
    store, runs = _pair(tmp_path, "fixed it, please review again ({now})",
                        "please fix the typo in line 3 ({now})")
    for name in ("a", "b"):
        assert _alerts(store, runs[name]) == [("pingpong", "alert", 1), ("pingpong", "pause", 2)]
        row = store.get_run(runs[name])
        assert row is not None and row.status == "paused", name
    first = next(e for e in store.events(runs["b"]) if e.kind == "alert")
    assert first.payload["figures"]["rounds"] == 3 and first.payload["figures"]["peer_name"] == "a"
    # The evidence: for each of the three rounds, the peer's message, its receipt, the answer.
    sent_by_a = {e.id for e in store.events(runs["a"]) if e.kind == "message.sent"}
    assert len(first.causes) == 9 and sent_by_a & set(first.causes)
    # Paused at round 4: neither side got far.
    sent = [e for e in store.events(runs["a"]) if e.kind == "message.sent"]
    assert len(sent) <= 5


def test_a_conversation_that_moves_on_is_not_flagged(tmp_path: Path) -> None:
    store, runs = _pair(tmp_path, "draft v{n} is attached", "comments on v{n}: tighten it")
    for name in ("a", "b"):
        assert _alerts(store, runs[name]) == []
        row = store.get_run(runs[name])
        assert row is not None and row.status == "done", name


async def _broadcaster(ctx: Any, state: dict[str, Any]) -> Any:
    """Send ``plan[step-1]`` messages, round robin over ``sinks``, one step each."""
    plan, sinks = state["plan"], state["sinks"]
    for k in range(plan[ctx.step - 1]):
        await ctx.send(sinks[k % len(sinks)], f"update {ctx.step}.{k}")
    return Done("sent") if ctx.step >= len(plan) else Continue()


async def _sink(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.receive()
    return AwaitMessages()


BROADCASTER = StepAgent(_broadcaster, name="broadcaster")
SINK = StepAgent(_sink, name="sink")


def _broadcast(tmp_path: Path, plan: list[int], sinks: int) -> tuple[SQLiteStore, str]:
    store = SQLiteStore(tmp_path / "t.db")
    names = [f"s{k}" for k in range(sinks)]
    for n in names:
        start_run(store, SINK, agent_ref="sink", goal=n, name=n, swarm=SWARM)
    run = start_run(store, BROADCASTER, agent_ref="broadcaster", goal="tell", name="caster",
                    swarm=SWARM, state={"plan": plan, "sinks": names})
    asyncio.run(Worker(store, agents={"broadcaster": BROADCASTER, "sink": SINK},
                       poll_interval=0.01).run(until_idle=True))
    return store, run


def test_a_message_storm_against_the_runs_baseline_is_flagged(tmp_path: Path) -> None:
    store, run = _broadcast(tmp_path, [1, 2, 1, 1, 2, 1, 30, 1], sinks=2)
    assert _alerts(store, run) == [("storm", "alert", 1)]
    alert = next(e for e in store.events(run) if e.kind == "alert")
    assert alert.step == 7
    f = alert.payload["figures"]
    assert (f["messages"], f["steps"], f["baseline_messages"]) == (21, 6, 1.333)


def test_a_fan_out_against_the_runs_baseline_is_flagged(tmp_path: Path) -> None:
    store, run = _broadcast(tmp_path, [1, 1, 1, 1, 1, 1, 12], sinks=12)
    assert _alerts(store, run) == [("storm", "alert", 1)]
    f = next(e for e in store.events(run) if e.kind == "alert").payload["figures"]
    assert (f["messages"], f["fanout"]) == (11, 11)


def test_a_steady_busy_run_and_a_run_that_broadcasts_from_the_start_are_not_storms(
        tmp_path: Path) -> None:
    store, run = _broadcast(tmp_path, [15] * 8, sinks=12)
    assert _alerts(store, run) == []
    (tmp_path / "2").mkdir()
    store2, run2 = _broadcast(tmp_path / "2", [40, 0, 0], sinks=12)
    assert _alerts(store2, run2) == []
