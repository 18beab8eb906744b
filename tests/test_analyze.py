"""`tether analyze`: the registered monitors (the worker's own Watch) over a transcript
file, without a store, or over a stored run; flags per run and step with the evidence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether import Continue, Done, StepAgent, Worker, apply_policy, start_run
from tether.cli.app import app
from tether.core.events import Event
from tether.core.monitors import KINDS, MonitorKind, Proposal, Signal, View, register
from tether.core.policy import parse_policy
from tether.store.sqlite import SQLiteStore

runner = CliRunner()


def tether(db: Path, *args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["--store", str(db), *args])
    return res.exit_code, res.output


class SameCall:
    """Flags the second proposal of a call identical to the one before it."""

    name = "same_call"

    def __init__(self) -> None:
        self.last: str | None = None

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        return ()

    def propose(self, call: Proposal, view: View) -> Iterable[Signal]:
        again, self.last = call.fp == self.last, call.fp
        if again:
            yield Signal("same_call", "repeat", f"{call.tool} called again with the same "
                         "arguments", figures={"tool": call.tool})


class Failing:
    """Signals on every tool result that reports an error (observed, not proposed)."""

    name = "failing"

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if event.kind == "tool.called" and "error" in (event.payload or {}):
            yield Signal("failing", "tool_error", "a tool failed", evidence=(event.id,))

    def propose(self, call: Proposal, view: View) -> Iterable[Signal]:
        return ()


@pytest.fixture
def kinds() -> Iterator[None]:
    register(MonitorKind("same_call", lambda p: SameCall(), {}))
    register(MonitorKind("failing", lambda p: Failing(), {}))
    yield
    del KINDS["same_call"], KINDS["failing"]


def call(cid: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": cid, "type": "function",
            "function": {"name": "search", "arguments": json.dumps(args)}}


def looping(n: int, reward: float) -> dict[str, Any]:
    """A tau-bench-shaped run that searches the same thing ``n`` times, the last failing."""
    traj: list[dict[str, Any]] = [{"role": "user", "content": "find JFK-SEA"}]
    for k in range(n):
        traj.append({"role": "assistant", "content": None,
                     "tool_calls": [call(f"c{k}", {"from": "JFK", "to": "SEA"})]})
        content = "Error: timeout" if k == n - 1 else "[]"
        traj.append({"role": "tool", "tool_call_id": f"c{k}", "content": content})
    traj.append({"role": "assistant", "content": "No flights."})
    return {"task_id": n, "trial": 0, "reward": reward, "traj": traj}


def test_a_file_is_analyzed_per_run_and_step_with_evidence(tmp_path: Path, kinds: None) -> None:
    src = tmp_path / "runs.json"
    src.write_text(json.dumps([looping(1, 1.0), looping(3, 0.0)]))
    code, out = tether(tmp_path / "none.db", "analyze", str(src), "--json")
    assert code == 0, out
    runs = [json.loads(line) for line in out.splitlines()]
    assert [r["record"] for r in runs] == [0, 1]
    assert runs[1]["outcome"] == {"reward": 0.0, "success": False}
    assert runs[1]["source"] == {"task_id": 3, "trial": 0}
    own = [f for f in runs[0]["flags"] if f["monitor"] in ("same_call", "failing")]
    assert [(f["monitor"], f["step"]) for f in own] == [("failing", 1)]
    flags = [f for f in runs[1]["flags"] if f["monitor"] in ("same_call", "failing")]
    assert [(f["monitor"], f["rule"], f["step"], f["verdict"]) for f in flags] == [
        ("same_call", "repeat", 2, "alert"), ("same_call", "repeat", 3, "pause"),
        ("failing", "tool_error", 3, "alert")]
    ev = flags[2]["evidence"][0]
    assert ev["kind"] == "tool.called" and ev["step"] == 3 and ev["tool"] == "search"
    assert not (tmp_path / "none.db").exists()  # a file is analyzed without a store


def test_a_stored_run_is_analyzed_by_its_id_and_text_names_the_evidence(
        tmp_path: Path, kinds: None) -> None:
    db = tmp_path / "t.db"
    src = tmp_path / "runs.jsonl"
    src.write_text(json.dumps(looping(2, 0.0)) + "\n")
    code, out = tether(db, "import", str(src), "--json")
    assert code == 0, out
    run = json.loads(out)["run"]
    code, out = tether(db, "analyze", run, "--json")
    assert code == 0, out
    got = json.loads(out)
    assert got["record"] == run and got["outcome"]["reward"] == 0.0
    assert {(f["monitor"], f["step"]) for f in got["flags"]} >= {("same_call", 2), ("failing", 2)}
    code, out = tether(db, "analyze", "runs-0")
    text = " ".join(out.split())
    assert code == 0 and f"run {run}: runs-0, 3 steps" in text
    assert "step 2: alert failing/tool_error (stage 1): a tool failed [evidence: #" in text
    assert "1 of 1 run(s) flagged" in text
    s = SQLiteStore(str(db))
    assert not [e for e in s.events(run) if e.kind == "alert"]  # analysis journals nothing


def test_a_policy_file_configures_the_monitors(tmp_path: Path, kinds: None) -> None:
    src = tmp_path / "runs.json"
    src.write_text(json.dumps([looping(3, 0.0)]))
    policy = tmp_path / "policy.toml"
    policy.write_text('[monitors.same_call]\nstages = ["stop"]\n[monitors.failing]\n'
                      'enabled = false\n')
    code, out = tether(tmp_path / "t.db", "analyze", str(src), "--policy", str(policy), "--json")
    assert code == 0, out
    flags = [f for f in json.loads(out)["flags"] if f["monitor"] in ("same_call", "failing")]
    assert [(f["monitor"], f["verdict"]) for f in flags] == [("same_call", "stop")] * 2


def test_an_unknown_run_or_file_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    SQLiteStore(str(db)).close()
    code, out = tether(db, "analyze", "nosuch")
    assert code == 2 and "no run 'nosuch'" in out


def _count(ctx: Any, state: dict[str, Any]) -> Any:
    """Counts to 5, one step each; at 3 and 4 its queue is long."""
    state["n"] = state.get("n", 0) + 1
    state["queue"] = ["job"] * (4 if state["n"] in (3, 4) else 1)
    return Done("counted") if state["n"] >= 5 else Continue()


def test_a_stored_run_is_analyzed_on_its_state_as_the_worker_saw_it(tmp_path: Path) -> None:
    # A state invariant needs the run's state: analyze restores it from the checkpoints, so
    # the offline verdicts are the ones the worker journaled live (before, a stored run was
    # analyzed without its state and such a rule never fired).
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    apply_policy(store, parse_policy('[monitors.agent.counter.invariants]\n'
                                     'rules = ["len(state.queue) < 3"]\n', source="tether.toml"),
                 who="human:test")
    agent = StepAgent(_count, name="counter")
    run = start_run(store, agent, goal="count", agent_ref="a")
    asyncio.run(Worker(store, agents={"a": agent}, poll_interval=0.01).run(until_idle=True))
    live = [(e.step, e.payload["rule"]) for e in store.events(run) if e.kind == "alert"]
    assert live == [(3, "len(state.queue) < 3")]  # alerts once per break
    code, out = tether(db, "analyze", run, "--json")
    assert code == 0, out
    flags = [(f["step"], f["rule"], f["verdict"]) for f in json.loads(out)["flags"]
             if f["monitor"] == "invariants"]
    assert flags == [(3, "len(state.queue) < 3", "alert")]
