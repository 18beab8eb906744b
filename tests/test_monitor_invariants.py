"""The invariants monitor on real runs: Python ``@invariant`` functions and policy-file
expressions, on a run's state, its effects and the files they wrote; the diff an alert
shows; compile errors with their key path; a predicate that raises."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether import (
    Continue,
    Done,
    InvariantFacts,
    StepAgent,
    Worker,
    apply_policy,
    invariant,
    start_run,
)
from tether.core.events import Event
from tether.core.monitors.expr import EvalError, Seen, compile_rule
from tether.core.policy import PolicyError, parse_policy
from tether.store.sqlite import SQLiteStore
from tether.tools.files import fs_write


def _count(ctx: Any, state: dict[str, Any]) -> Any:
    """Counts to 5, one step each; at 3 and 4 its queue is long, then short again."""
    state["n"] = state.get("n", 0) + 1
    state["queue"] = ["job"] * (4 if state["n"] in (3, 4) else 1)
    return Done("counted") if state["n"] >= 6 else Continue()


async def _writer(ctx: Any, state: dict[str, Any]) -> Any:
    """Writes out/1.txt, out/2.txt, then (step 3) a file outside out/."""
    n = state["n"] = state.get("n", 0) + 1
    await ctx.call(fs_write, path=f"out/{n}.txt" if n < 3 else "secret.txt",
                   content=f"file {n}\n")
    return Done("wrote") if n >= 4 else Continue()


def _drive(tmp_path: Path, agent: StepAgent, policy: str | None = None) -> tuple[
        SQLiteStore, str]:
    store = SQLiteStore(tmp_path / "t.db")
    if policy is not None:
        apply_policy(store, parse_policy(policy, source="tether.toml"), who="human:test")
    (tmp_path / "ws" / "out").mkdir(parents=True, exist_ok=True)
    run = start_run(store, agent, goal="test", agent_ref="a", workspace=tmp_path / "ws")
    asyncio.run(Worker(store, agents={"a": agent}, poll_interval=0.01).run(until_idle=True))
    return store, run


def _alerts(store: SQLiteStore, run: str) -> list[Event]:
    return [e for e in store.events(run) if e.kind == "alert"]


@invariant
def short_queue(f: InvariantFacts) -> bool:
    return len(f.state["queue"]) < 3


def test_a_python_invariant_on_state_alerts_once_per_break_with_the_diff(
        tmp_path: Path) -> None:
    store, run = _drive(tmp_path, StepAgent(_count, name="counter", invariants=[short_queue]))
    (alert,) = _alerts(store, run)  # broken at step 3, still broken at 4: one alert
    p = alert.payload
    assert (alert.step, p["monitor"], p["rule"], p["verdict"]) == (
        3, "invariants", "short_queue", "alert")
    assert p["figures"]["before"] == {"len(state.queue)": 1}
    assert p["figures"]["now"] == {"len(state.queue)": 4}
    assert "len(state.queue) was 1, now 4" in p["message"]
    finished = next(e for e in store.events(run) if e.kind == "step.finished" and e.step == 3)
    assert alert.causes[0] == finished.id
    row = store.get_run(run)
    assert row is not None and row.status == "done"  # an alert only: the run went on


def test_a_second_break_takes_the_next_stage(tmp_path: Path) -> None:
    @invariant(name="odd_steps_only")
    def odd(f: InvariantFacts) -> bool:
        n: int = f.state["n"]
        return n % 2 == 1 or n > 4

    store, run = _drive(tmp_path, StepAgent(_count, name="counter", monitors=[odd]))
    alerts = _alerts(store, run)
    # Broken at 2, holds at 3, broken at 4: paused there (the default stages: alert, pause).
    assert [(a.step, a.payload["verdict"], a.payload["stage"]) for a in alerts] == [
        (2, "alert", 1), (4, "pause", 2)]
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and "odd_steps_only" in row.reason


def test_policy_rules_on_effects_and_files(tmp_path: Path) -> None:
    policy = """
[monitors.agent.writer.invariants]
rules = ["all(e.arguments.path.startswith(prefix) for e in effects)"]
named = { no_secret = "'secret.txt' not in files", one_write = "len(effects) <= 1" }
constants = { prefix = "out/" }
"""
    store, run = _drive(tmp_path, StepAgent(_writer, name="writer", tools=[fs_write]), policy)
    alerts = _alerts(store, run)
    by_rule = {a.payload["rule"]: a for a in alerts}
    assert set(by_rule) == {"all(e.arguments.path.startswith(prefix) for e in effects)",
                            "no_secret"}
    first = by_rule["all(e.arguments.path.startswith(prefix) for e in effects)"]
    assert first.step == 3 and first.payload["figures"]["offending"]["e"]["arguments"] == {
        "content": "file 3\n", "path": "secret.txt"}
    intent = next(e for e in store.events(run) if e.kind == "effect.intent" and e.step == 3)
    assert intent.id in first.causes  # the effect that broke it is in the evidence
    secret = by_rule["no_secret"].payload
    assert secret["figures"]["now"] == {"files": {"secret.txt": secret["figures"]["now"]
                                                  ["files"]["secret.txt"]}}
    assert len(secret["figures"]["now"]["files"]["secret.txt"]) == 64  # the after-image hash
    assert secret["figures"]["before"] == {"files": {"out/2.txt": secret["figures"]["before"]
                                                     ["files"]["out/2.txt"]}}
    # The policy's stages are the default ones (alert, pause): two different rules broke at
    # step 3, each at its first stage, so the run went on.
    row = store.get_run(run)
    assert row is not None and row.status == "done"


def test_policy_stages_apply_to_an_agents_own_invariants(tmp_path: Path) -> None:
    policy = '[monitors.agent.counter.invariants]\nstages = ["pause"]\n'
    store, run = _drive(tmp_path, StepAgent(_count, name="counter", invariants=[short_queue]),
                        policy)
    (alert,) = _alerts(store, run)
    assert (alert.step, alert.payload["verdict"]) == (3, "pause")
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and row.step == 3


def test_a_raising_predicate_is_a_monitor_error_and_the_others_go_on(tmp_path: Path) -> None:
    @invariant
    def buggy(f: InvariantFacts) -> bool:
        return bool(f.state["no_such_key"])

    policy = ('[monitors.agent.counter.invariants]\n'
              'rules = ["state.missing > 1", "state.n < 5"]\n')
    store, run = _drive(tmp_path, StepAgent(_count, name="counter",
                                            invariants=[buggy, short_queue]), policy)
    alerts = _alerts(store, run)
    errors = [a for a in alerts if a.payload["rule"] == "monitor_error"]
    assert {a.payload["figures"]["invariant"] for a in errors} == {"buggy", "state.missing > 1"}
    assert all(a.step == 1 and a.payload["verdict"] == "alert" for a in errors)
    by = {a.payload["figures"]["invariant"]: a.payload["message"] for a in errors}
    assert "KeyError" in by["buggy"] and f"run {run} step 1" in by["buggy"]
    assert "state has no key 'missing'; write state.get('missing', DEFAULT)" in \
        by["state.missing > 1"]
    # The other invariants still ran: the queue broke at 3, n < 5 at 5.
    assert [(a.step, a.payload["rule"]) for a in alerts if a.payload["rule"] !=
            "monitor_error"] == [(3, "short_queue"), (5, "state.n < 5")]
    row = store.get_run(run)
    assert row is not None and row.status in ("done", "paused")


@pytest.mark.parametrize(("table", "error"), [
    ('rules = ["len(state.history) <"]',
     "monitors.invariants.rules[0]: not an expression"),
    ('rules = ["ok", "__import__(\'os\').system(\'x\')"]',
     "monitors.invariants.rules[0]: unknown name 'ok'"),
    ('rules = ["state.n > 1", "open(\'x\')"]',
     "monitors.invariants.rules[1]: only the listed functions and methods can be called"),
    ('named = { pw = "state.n ** 99" }', "monitors.invariants.named.pw: Pow is not allowed"),
    ('named = { cls = "state.__class__" }', "attribute '__class__' is private"),
    ('rules = [1]', "monitors.invariants.rules[0]: expected an expression as a string"),
    ('rules = "state.n > 1"', "monitors.invariants.rules: expected list"),
    ('constants = { state = 1 }', "monitors.invariants.constants.state: a constant needs"),
    ('rules = ["[state for state in effects]"]', "state is a value the rule is given"),
])
def test_a_rule_that_does_not_compile_is_refused_with_its_key_path(table: str,
                                                                  error: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(f"[monitors.invariants]\n{table}\n", source="tether.toml")
    assert error in str(exc.value)


def test_a_rule_in_an_agents_table_names_its_path() -> None:
    with pytest.raises(PolicyError, match=r"monitors\.agent\.router\.invariants\.rules\[0\]"):
        parse_policy('[monitors.agent.router.invariants]\nrules = ["nope(1)"]\n',
                     source="tether.toml")


def test_evaluation_is_bounded_and_reads_only() -> None:
    names = ["state"]
    big = compile_rule("len([1] * 1000000) > 0", names, where="r")
    with pytest.raises(EvalError, match="longer than"):
        big.holds({"state": {}})
    many = compile_rule("sum(1 for a in state.xs for b in state.xs) > 0", names, where="r")
    with pytest.raises(EvalError, match="more than 100000 items"):
        many.holds({"state": {"xs": list(range(1000))}})
    # A method that would change the state is not callable.
    with pytest.raises(ValueError, match="only the listed functions"):
        compile_rule("state.xs.append(1)", names, where="r")
    seen = Seen()
    rule = compile_rule("all(x < 3 for x in state.xs) and len(state.xs) < 9", names, where="r")
    assert rule.holds({"state": {"xs": [1, 2, 5]}}, seen) is False
    assert seen.offending == {"x": 5}


def test_a_python_invariant_cannot_change_the_state(tmp_path: Path) -> None:
    @invariant
    def meddles(f: InvariantFacts) -> bool:
        f.state["n"] = 0  # type: ignore[index]
        return True

    store, run = _drive(tmp_path, StepAgent(_count, name="counter", invariants=[meddles]))
    (alert,) = _alerts(store, run)
    assert alert.payload["rule"] == "monitor_error" and "TypeError" in alert.payload["message"]
    row = store.get_run(run)
    assert row is not None and row.status == "done" and row.step == 6
