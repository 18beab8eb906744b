"""Policies enforced by the runtime: allow, deny, defer and approvals that survive restarts."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether import (
    Agent,
    Done,
    FixedClock,
    StepAgent,
    Tether,
    Worker,
    approvals,
    start_run,
    tool,
    verify_store,
)
from tether.cli.app import app
from tether.core.policy import Policy, builtin_policy, rules_from_python
from tether.errors import NotFound, ToolDenied, ToolFailed, UsageError
from tether.identity import os_user, set_allow_as
from tether.models.base import ModelResponse, ToolCall
from tether.models.scripted import ScriptedModel
from tether.policies import apply_policy
from tether.runtime.operator import actor, run_state, send_command
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools

SENT: list[dict[str, Any]] = []


@tool(effect="irreversible")
def send(to: str, amount: int) -> str:
    """Send money (irreversible)."""
    SENT.append({"to": to, "amount": amount})
    return f"sent {amount} to {to}"


@tool(effect="read")
def balance() -> int:
    """Read the balance."""
    return 100


async def _pay(ctx: Any, state: dict[str, Any]) -> Any:
    state["balance"] = await ctx.call(balance)
    try:
        state["result"] = await ctx.call(send, to="bob", amount=5)
    except Exception as exc:  # a denied call is a ToolFailed: the step goes on
        state["result"] = f"failed: {exc}"
    return Done(state["result"])


PAY = StepAgent(_pay, name="payer", tools=[send, balance])
AGENTS = {"payer": PAY}


def applied(store: SQLiteStore, policy: Policy) -> Policy:
    """Put ``policy`` in force in the store, as `tether policy apply` does."""
    apply_policy(store, policy, who="human:ops")
    return policy


def drive(store: SQLiteStore, policy: Policy | None, clock: FixedClock | None = None) -> None:
    """Drive under ``policy``, applied to the store first (None: whatever is in force)."""
    asyncio.run(Worker(store, agents=AGENTS, policy=policy and applied(store, policy), clock=clock,
                       poll_interval=0.01).run(until_idle=True))


def kinds(store: SQLiteStore, run: str) -> list[str]:
    return [e.kind for e in store.events(run)]


@pytest.fixture(autouse=True)
def _clear() -> None:
    SENT.clear()


def test_without_a_policy_the_defaults_gate_irreversible_only(store: SQLiteStore) -> None:
    """No policy applied to the store: reads run ungated (nothing journaled for them), the
    irreversible call waits for a person, decided by the built-in defaults."""
    run = start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, None)
    assert store.get_run(run).status == "awaiting_approval"  # type: ignore[union-attr]
    assert SENT == []
    decided = [e.payload for e in store.events(run) if e.kind == "policy.decided"]
    assert [(d["tool"], d["verdict"], d["rule"]) for d in decided] == [("send", "approve", None)]
    assert decided[0]["policy_hash"] == builtin_policy().hash


def test_default_policy_asks_before_irreversible_and_runs_once_after_approval(
        store: SQLiteStore) -> None:
    policy = rules_from_python([])
    run = start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, policy)
    row = store.get_run(run)
    assert row is not None and row.status == "awaiting_approval"
    assert SENT == []
    (req,) = store.approvals(status="pending")
    assert (req.tool, req.arguments, req.rule) == ("send", {"to": "bob", "amount": 5}, None)
    decided = [e for e in store.events(run) if e.kind == "policy.decided"]
    assert [d.payload["verdict"] for d in decided] == ["allow", "approve"]  # read, then send
    assert all(d.payload["policy_hash"] == policy.hash for d in decided)
    # A new worker (a restart) does not run it either: the run holds no worker slot.
    drive(store, policy)
    assert SENT == []
    approvals.decide(store, req.id, approve=True, who="human:ada", note="ok")
    assert store.get_run(run).status == "running"  # type: ignore[union-attr]
    drive(store, policy)
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    assert SENT == [{"to": "bob", "amount": 5}]
    ev = next(e for e in store.events(run) if e.kind == "approval.decided")
    assert ev.actor == "human:ada" and ev.causes == (req.id,)
    with pytest.raises(UsageError, match="already approved by human:ada"):
        approvals.decide(store, req.id, approve=True, who="human:bob")
    drive(store, policy)
    assert len(SENT) == 1


def test_deny_tells_the_agent_and_the_loop_goes_on(store: SQLiteStore) -> None:
    policy = rules_from_python([])
    run = start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, policy)
    (req,) = store.approvals(status="pending")
    with pytest.raises(UsageError, match="deny needs a reason"):
        approvals.decide(store, req.id, approve=False, who="human:ada")
    approvals.decide(store, req.id, approve=False, who="human:ada", note="not today")
    drive(store, policy)
    row = store.get_run(run)
    assert row is not None and row.status == "done" and SENT == []
    assert "denied by human:ada: not today" in str(
        next(e for e in store.events(run) if e.kind == "run.done").payload["result"])


def test_edited_arguments_are_checked_and_used(store: SQLiteStore) -> None:
    # The run's agent is found in the registry given (not importable as "payer").
    policy = rules_from_python([])
    start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, policy)
    (req,) = store.approvals(status="pending")
    with pytest.raises(UsageError, match="amount"):
        approvals.decide(store, req.id, approve=True, who="human:ada",
                         arguments={"to": "bob", "amount": "lots"}, agents={"payer": PAY})
    assert store.approval(req.id).status == "pending"  # type: ignore[union-attr]
    Tether(store, agents={"payer": PAY}, who="human:ada").approve(
        req.id, arguments={"to": "carol", "amount": 3})
    drive(store, policy)
    assert SENT == [{"to": "carol", "amount": 3}]


def test_rules_deny_and_name_who_may_approve(store: SQLiteStore) -> None:
    policy = rules_from_python([
        {"id": "no-big", "tool": "send", "args": {"amount": {"gt": 3}},
         "decide": "approve", "approvers": ["treasurer"], "reason": "large payment"},
    ])
    start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, policy)
    (req,) = store.approvals(status="pending")
    assert req.rule == "no-big" and req.approvers == ("treasurer",)
    with pytest.raises(UsageError, match="names treasurer"):
        approvals.decide(store, req.id, approve=True, who="human:intern")
    with pytest.raises(UsageError, match="only people may"):
        approvals.decide(store, req.id, approve=True, who=f"agent:{req.run}")
    approvals.decide(store, req.id, approve=True, who="human:treasurer")
    drive(store, policy)
    assert len(SENT) == 1

    deny = rules_from_python([{"id": "frozen", "tool": "send", "decide": "deny",
                               "reason": "accounts are frozen"}])
    run = start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, deny)
    assert len(SENT) == 1
    done = next(e for e in store.events(run) if e.kind == "run.done")
    assert "denied by policy rule 'frozen': accounts are frozen" in done.payload["result"]


def test_quiet_hours_defer_until_the_window_ends(store: SQLiteStore) -> None:
    policy = rules_from_python([
        {"id": "quiet", "effect": "irreversible", "decide": "defer",
         "when": {"between": "00:00-07:00", "tz": "Europe/Berlin"}, "reason": "quiet hours"},
        {"id": "ok", "effect": "irreversible", "decide": "allow"},
    ])
    night = datetime(2026, 12, 2, 2, 0, tzinfo=UTC).timestamp()  # 03:00 in Berlin
    clock = FixedClock(night)
    run = start_run(store, PAY, agent_ref="payer", goal="pay", clock=clock)
    drive(store, policy, clock)
    row = store.get_run(run)
    assert row is not None and row.status == "sleeping" and SENT == []
    assert row.wake_at == datetime(2026, 12, 2, 6, 0, tzinfo=UTC).timestamp()  # 07:00 Berlin
    clock.set(row.wake_at)
    drive(store, policy, clock)
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    assert SENT == [{"to": "bob", "amount": 5}]
    verdicts = [e.payload["verdict"] for e in store.events(run) if e.kind == "policy.decided"
                and e.payload["tool"] == "send"]
    assert verdicts == ["defer", "allow"]


def test_expiry_denies_by_default_and_always_allow_sticks(store: SQLiteStore) -> None:
    policy = rules_from_python([{"id": "ask", "tool": "send", "decide": "approve",
                                 "expires": "1s"}])
    run = start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, policy)
    (req,) = store.approvals(status="pending")
    assert req.expires_at is not None
    with pytest.raises(UsageError, match="expired"):
        approvals.decide(store, req.id, approve=True, who="human:ada", now=req.expires_at + 1)
    assert store.approval(req.id).status == "expired"  # type: ignore[union-attr]
    drive(store, policy)
    assert store.get_run(run).status == "done" and SENT == []  # type: ignore[union-attr]

    multi = StepAgent(_pay_twice, name="twice", tools=[send])
    run2 = start_run(store, multi, agent_ref="twice", goal="pay twice")
    asyncio.run(Worker(store, agents={"twice": multi}, policy=applied(store, policy)).run(until_idle=True))
    (req2,) = store.approvals(status="pending")
    approvals.decide(store, req2.id, approve=True, who="human:ada", always=True)
    asyncio.run(Worker(store, agents={"twice": multi}, policy=applied(store, policy)).run(until_idle=True))
    assert store.get_run(run2).status == "done" and len(SENT) == 2  # type: ignore[union-attr]
    assert len(store.approvals(run=run2)) == 1  # the second send was not asked again


async def _pay_twice(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(send, to="a", amount=1)
    await ctx.call(send, to="b", amount=1)
    return Done()


def test_the_built_in_agent_is_told_of_a_denial(store: SQLiteStore) -> None:
    model = ScriptedModel([ModelResponse(None, (ToolCall("c1", "send",
                                                         '{"to": "x", "amount": 1}'),)),
                           ModelResponse("ok, I will not")])
    agent = Agent("teller", model=model, instructions="pay", tools=[send])
    policy = rules_from_python([{"id": "never", "tool": "send", "decide": "deny",
                                 "reason": "no payments"}])
    run = start_run(store, agent, agent_ref="teller", goal="pay x")
    asyncio.run(Worker(store, agents={"teller": agent}, policy=applied(store, policy)).run(until_idle=True))
    row = store.get_run(run)
    _, _, state = run_state(store, run)
    tool_msg = next(m for m in state["messages"] if m["role"] == "tool")
    assert row is not None and row.status == "done" and SENT == []
    assert "denied by policy rule 'never': no payments" in tool_msg["content"]


def test_cli_lists_and_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, rules_from_python([]))
    runner = CliRunner()
    res = runner.invoke(app, ["--store", str(db), "approvals", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = [json.loads(line) for line in res.output.splitlines()]
    assert {"id", "run", "step", "tool", "arguments", "status", "requested_at",
            "expires_at"} <= set(row)
    res = runner.invoke(app, ["--store", str(db), "deny", row["id"]])
    assert res.exit_code == 2 and "reason" in res.output
    res = runner.invoke(app, ["--store", str(db), "approve", "01NOSUCH"])
    assert res.exit_code == 2 and "no approval" in res.output
    res = runner.invoke(app, ["--store", str(db), "approve", row["id"], "--args", "[1]"])
    assert res.exit_code == 2 and "JSON object" in res.output
    res = runner.invoke(app, ["--store", str(db), "--help"])
    res = runner.invoke(app, ["--store", str(db), "approve", row["id"], "--as", "ops",
                              "--note", "fine"])
    assert res.exit_code == 2 and "allow-as on" in res.output  # names are refused by default
    set_allow_as(store, True, who="human:admin")
    res = runner.invoke(app, ["--store", str(db), "approve", row["id"], "--as", "ops",
                              "--note", "fine"])
    assert res.exit_code == 0, res.output
    assert store.approval(row["id"]).decided_by == "human:ops"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        approvals.find_approval(store, "nope")
    store.close()


async def _count(ctx: Any, state: dict[str, Any]) -> Any:
    state["n"] = state.get("n", 0) + 1
    return Done() if state["n"] >= 7 else None


def test_pause_points_every_n_steps_and_before_irreversible(store: SQLiteStore) -> None:
    counter = StepAgent(_count, name="counter")
    run = start_run(store, counter, agent_ref="counter", goal="count",
                    pause_points={"every_steps": 3})
    agents = {"counter": counter}
    asyncio.run(Worker(store, agents=agents).run(until_idle=True))
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and row.step == 3
    assert "review point" in row.reason
    send_command(store, run, "resume", who="human:ada")
    asyncio.run(Worker(store, agents=agents).run(until_idle=True))
    assert store.get_run(run).step == 6  # type: ignore[union-attr]
    send_command(store, run, "resume", who="human:ada")
    asyncio.run(Worker(store, agents=agents).run(until_idle=True))
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    reviews = [e for e in store.events(run) if e.kind == "run.paused"]
    assert [e.payload["at_step"] for e in reviews] == [3, 6]

    # Before irreversible effects: asked even with no policy configured at all.
    pay = start_run(store, PAY, agent_ref="payer", goal="pay",
                    pause_points={"before_irreversible": True})
    drive(store, None)
    assert store.get_run(pay).status == "awaiting_approval" and SENT == []  # type: ignore[union-attr]
    (req,) = store.approvals(run=pay)
    assert req.rule == "pause-point:before-irreversible"
    approvals.decide(store, req.id, approve=True, who="human:ada")
    drive(store, None)
    assert SENT == [{"to": "bob", "amount": 5}]
    with pytest.raises(UsageError, match="unknown pause point"):
        start_run(store, PAY, agent_ref="payer", goal="x", pause_points={"every_step": 2})


def test_a_budget_rule_on_model_calls_pauses_the_run(store: SQLiteStore) -> None:
    async def chat(ctx: Any, state: dict[str, Any]) -> Any:
        await ctx.model([{"role": "user", "content": "hello " * 50}])
        state["n"] = state.get("n", 0) + 1
        return None if state["n"] < 20 else Done()

    agent = StepAgent(chat, name="chat", model=ScriptedModel([ModelResponse("hi")]))
    policy = rules_from_python([
        {"id": "save-money", "effect": "model", "budget": {"tokens": {"gte": 0.5}},
         "decide": "deny", "reason": "half the token budget is gone"}])
    run = start_run(store, agent, agent_ref="chat", goal="talk", budget={"tokens": 500})
    asyncio.run(Worker(store, agents={"chat": agent}, policy=applied(store, policy)).run(until_idle=True))
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and "save-money" in row.reason
    used = row.usage["input_tokens"] + row.usage["output_tokens"]
    assert 250 <= used < 500  # stopped by the rule, before the hard cap
    decided = [e.payload for e in store.events(run) if e.kind == "policy.decided"]
    assert decided[-1]["verdict"] == "deny" and decided[-1]["effect"] == "model"
    assert all(d["verdict"] == "allow" for d in decided[:-1])


def test_acting_as_someone_else_is_refused_unless_the_store_allows_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_USER", raising=False)
    store = SQLiteStore(tmp_path / "t.db")
    me = f"human:{os_user()}"
    assert actor(None, store) == me
    for claim in (lambda: actor("alice", store), lambda: actor("alice")):
        with pytest.raises(UsageError, match="tether settings allow-as on"):
            claim()
    monkeypatch.setenv("TETHER_USER", "bob")
    with pytest.raises(UsageError, match=r"'bob' \(TETHER_USER\) is refused"):
        actor(None, store)
    assert set_allow_as(store, True, who=me) is not None
    assert set_allow_as(store, True, who=me) is None  # unchanged: nothing journaled
    assert actor("alice", store) == "human:alice" and actor(None, store) == "human:bob"
    with pytest.raises(UsageError, match="allow-as on"):
        actor("alice")  # no store, no allowing
    monkeypatch.setenv("TETHER_ALLOW_AS", "0")  # one environment can refuse all the same
    with pytest.raises(UsageError, match="TETHER_ALLOW_AS=0"):
        actor("alice", store)
    monkeypatch.delenv("TETHER_ALLOW_AS")
    set_allow_as(store, False, who=me)
    with pytest.raises(UsageError, match="allow-as on"):
        actor("alice", store)
    assert [(e.kind, e.payload, e.actor) for e in store.store_events()] == [
        ("store.allow_as", {"allow": True}, me), ("store.allow_as", {"allow": False}, me)]
    assert verify_store(store).ok


def test_swarm_pause_points_apply_to_its_runs(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    runner = CliRunner()
    res = runner.invoke(app, ["--store", str(db), "swarm", "crew", "--pause-every-steps", "2"])
    assert res.exit_code == 0, res.output
    counter = StepAgent(_count, name="counter")
    run = start_run(store, counter, agent_ref="counter", goal="count", swarm="crew")
    asyncio.run(Worker(store, agents={"counter": counter}).run(until_idle=True))
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and row.step == 2
    res = runner.invoke(app, ["--store", str(db), "swarm", "crew", "--json"])
    info = json.loads(res.output)
    assert info["pause_points"]["every_steps"] == 2 and info["runs"] == {run: "paused"}
    res = runner.invoke(app, ["--store", str(db), "swarm", "crew", "--pause-every-steps", "0"])
    assert res.exit_code == 2 and "--pause-every-steps" in res.output
    store.close()


async def _pay_each_step(ctx: Any, state: dict[str, Any]) -> Any:
    n = state.get("n", 0) + 1
    state["n"] = n
    await ctx.call(send, to="bob" if n == 1 else "eve", amount=5 if n == 1 else 1000)
    return Done() if n >= 2 else None


def test_an_approval_covers_its_own_call_only(store: SQLiteStore) -> None:
    """Step 2's call has the same index as step 1's: it must be decided afresh."""
    agent = StepAgent(_pay_each_step, name="each", tools=[send])
    policy = rules_from_python([])
    run = start_run(store, agent, agent_ref="each", goal="pay")
    worker = lambda: asyncio.run(  # noqa: E731 - a short local helper
        Worker(store, agents={"each": agent}, policy=applied(store, policy)).run(until_idle=True))
    worker()
    (first,) = store.approvals(status="pending")
    approvals.decide(store, first.id, approve=True, who="human:ada")
    worker()
    assert SENT == [{"to": "bob", "amount": 5}]
    assert store.get_run(run).status == "awaiting_approval"  # type: ignore[union-attr]
    (second,) = store.approvals(status="pending")
    assert second.arguments == {"to": "eve", "amount": 1000}


def test_a_journaled_denial_stands_without_a_policy(store: SQLiteStore) -> None:
    run = start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, rules_from_python([]))
    (req,) = store.approvals(status="pending")
    approvals.decide(store, req.id, approve=False, who="human:ada", note="never pay bob")
    drive(store, None)  # a worker started where no tether.toml is
    assert SENT == [] and store.get_run(run).status == "done"  # type: ignore[union-attr]


def test_a_decision_is_made_once_even_when_two_race(store: SQLiteStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, rules_from_python([]))
    (req,) = store.approvals(status="pending")
    real = approvals._record

    def racing(*a: Any, **kw: Any) -> Any:
        # Bob decides between Alice's check and Alice's write.
        monkeypatch.setattr(approvals, "_record", real)
        approvals.decide(store, req.id, approve=False, who="human:bob", note="no")
        return real(*a, **kw)

    monkeypatch.setattr(approvals, "_record", racing)
    with pytest.raises(UsageError, match="decided meanwhile"):
        approvals.decide(store, req.id, approve=True, who="human:alice")
    assert store.approval(req.id).decided_by == "human:bob"  # type: ignore[union-attr]


def test_stop_cancels_pending_approvals(store: SQLiteStore) -> None:
    run = start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, rules_from_python([]))
    (req,) = store.approvals(status="pending")
    send_command(store, run, "stop", who="human:ada")
    assert store.approval(req.id).status == "cancelled"  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="cancelled"):
        approvals.decide(store, req.id, approve=True, who="human:ada")


async def _v1(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(send, to="bob", amount=1)
    return None


async def _v2(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(send, to="mallory", amount=1)
    return Done()


def test_resuming_under_a_changed_definition_is_refused_until_accepted(
        store: SQLiteStore) -> None:
    v1 = StepAgent(_v1, name="changer", tools=[send])
    allow_tools(store, "send")  # this test is about definitions, not approvals
    run = start_run(store, v1, agent_ref="changer", goal="pay")
    send_command(store, run, "pause", who="human:ada")
    v2 = StepAgent(_v2, name="changer", tools=[send])
    send_command(store, run, "resume", who="human:ada")
    asyncio.run(Worker(store, agents={"changer": v2}).run(until_idle=True))
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and "--accept-change" in row.reason
    assert SENT == []
    ev = next(e for e in store.events(run) if e.kind == "definition.changed")
    assert ev.payload["rule"] == "refuse" and ev.payload["decision"] == "refused"
    send_command(store, run, "resume", {"accept_change": True}, who="human:ada")
    asyncio.run(Worker(store, agents={"changer": v2}).run(until_idle=True))
    assert store.get_run(run).status == "done" and SENT == [{"to": "mallory", "amount": 1}]  # type: ignore[union-attr]
    decisions = [e.payload["decision"] for e in store.events(run)
                 if e.kind == "definition.changed"]
    assert decisions == ["refused", "resumed"]


def test_a_quarantined_run_cannot_have_its_pending_action_approved(store: SQLiteStore) -> None:
    from tether.provenance.quarantine import quarantine
    policy = rules_from_python([])
    run = start_run(store, PAY, agent_ref="payer", goal="pay")
    drive(store, policy)
    (req,) = store.approvals(status="pending")
    quarantine(store, run, reason="it pays the wrong people", who="human:ops")
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and "quarantined" in row.reason
    with pytest.raises(UsageError, match="is quarantined: its actions are held"):
        approvals.decide(store, req.id, approve=True, who="human:ada")
    assert store.approval(req.id).status == "pending"  # type: ignore[union-attr]
    # Resumed while still quarantined (an operator wants to look): it waits for the
    # decision again, and nothing is sent.
    send_command(store, run, "resume", who="human:ops")
    drive(store, policy)
    assert store.get_run(run).status == "awaiting_approval" and SENT == []  # type: ignore[union-attr]
    approvals.decide(store, req.id, approve=False, who="human:ada", note="quarantined")
    drive(store, policy)
    assert SENT == [] and store.get_run(run).status == "done"  # type: ignore[union-attr]
    assert verify_store(store).ok


async def _pay_and_tell(ctx: Any, state: dict[str, Any]) -> Any:
    try:
        await ctx.call(send, to="bob", amount=5)
    except ToolDenied as exc:  # a refusal, told apart from a tool that raised
        return Done(f"denied: {exc}")
    except ToolFailed as exc:
        return Done(f"failed: {exc}")
    return Done("sent")


@tool(effect="irreversible")
def broken_send(to: str, amount: int) -> str:
    """Send money through a service that is down."""
    raise ConnectionError("the bank is down")


async def _pay_broken(ctx: Any, state: dict[str, Any]) -> Any:
    try:
        await ctx.call(broken_send, to="bob", amount=5)
    except ToolDenied as exc:
        return Done(f"denied: {exc}")
    except ToolFailed as exc:
        return Done(f"failed: {exc}")
    return Done("sent")


def test_a_denied_call_is_a_tool_denied_and_a_failed_tool_is_not(store: SQLiteStore) -> None:
    assert issubclass(ToolDenied, ToolFailed)  # code that catches ToolFailed is unchanged
    agents = {"teller": StepAgent(_pay_and_tell, name="teller", tools=[send]),
              "broken": StepAgent(_pay_broken, name="broken", tools=[broken_send])}
    deny = rules_from_python([{"id": "frozen", "tool": "*send", "decide": "deny",
                               "reason": "accounts are frozen"}])
    allow = rules_from_python([{"id": "ok", "tool": "*", "decide": "allow", "reason": "fine"}])
    denied = start_run(store, agents["teller"], agent_ref="teller", goal="pay")
    asyncio.run(Worker(store, agents=agents, policy=applied(store, deny),
                       poll_interval=0.01).run(until_idle=True))
    failed = start_run(store, agents["broken"], agent_ref="broken", goal="pay")
    asyncio.run(Worker(store, agents=agents, policy=applied(store, allow),
                       poll_interval=0.01).run(until_idle=True))
    result = {r: next(e for e in store.events(r) if e.kind == "run.done").payload["result"]
              for r in (denied, failed)}
    assert result[denied].startswith("denied: tool send was not run: denied by policy rule "
                                     "'frozen'"), result
    assert result[failed] == ("failed: tool broken_send failed: ConnectionError: the bank is "
                              "down"), result
    assert SENT == []
