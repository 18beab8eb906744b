"""The policy in force is a property of the store, journaled in the store chain.

Issue 8 found three ways an irreversible tool ran with no approval and no
``policy.decided`` event: (a) ``tether run`` with a broken ``tether.toml`` left a
run behind that a worker elsewhere then drove ungated; (b) a fork's child,
driven by a worker started outside the demo folder, repeated an irreversible
effect ungated; (c) any worker started where no ``tether.toml`` is gated nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests import sample_agents
from tether import Done, StepAgent, Worker, approvals, start_run, verify_store
from tether.cli.app import app
from tether.core.policy import builtin_policy, parse_policy, rules_from_python
from tether.errors import UsageError
from tether.identity import os_user
from tether.policies import apply_policy, in_force
from tether.store.sqlite import SQLiteStore

ME = f"human:{os_user()}"  # --as is refused on a store that does not allow it

ALLOW_CHARGE = '[[rule]]\nid = "charge-ok"\ntool = "charge"\ndecide = "allow"\n'
DENY_CHARGE = '[[rule]]\nid = "no-charge"\ntool = "charge"\ndecide = "deny"\n'
NESTED = "x = " + "[" * 500 + "]" * 500 + "\n"


@pytest.fixture
def side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "side.txt"
    monkeypatch.setenv("TETHER_TEST_SIDE", str(path))
    return path


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def charges(side: Path) -> int:
    return side.read_text().count("charge 7") if side.exists() else 0


def gate_kinds(store: SQLiteStore, run: str) -> list[str]:
    return [e.kind for e in store.events(run)
            if e.kind in ("policy.decided", "approval.requested", "effect.intent")]


def test_a_run_with_a_broken_policy_leaves_no_run_and_nothing_runs_ungated(
        tmp_path: Path, side: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(a): the broken file is refused before anything is written; a worker elsewhere
    then finds nothing to run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tether.toml").write_text('[[rule]]\nid = "x"\ndecide = \n')
    db = tmp_path / "tether.db"
    code, out = cli("--store", str(db), "run", "tests.sample_agents:pay_fast", "--goal", "g")
    assert code == 2 and "error:" in out and "line 3" in out
    assert "started run" not in out and "Traceback" not in out
    store = SQLiteStore(db)
    assert store.list_runs() == []
    (tmp_path / "tether.toml").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out = cli("--store", str(db), "worker", "--until-idle")
    assert code == 0, out
    assert charges(side) == 0


def test_a_worker_without_tether_toml_gates_irreversible_by_default(
        tmp_path: Path, side: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(c): no policy applied anywhere: the built-in defaults ask before irreversible."""
    db = tmp_path / "tether.db"
    code, out = cli("--store", str(db), "run", "tests.sample_agents:pay_fast", "--goal", "g",
                    "--detach")
    assert code == 0, out
    monkeypatch.chdir(tmp_path)
    code, out = cli("--store", str(db), "worker", "--until-idle")
    assert code == 0, out
    assert f"built-in defaults (hash {builtin_policy().hash[:12]})" in out
    store = SQLiteStore(db)
    (run,) = store.list_runs()
    assert run.status == "awaiting_approval" and charges(side) == 0
    assert gate_kinds(store, run.id) == ["policy.decided", "approval.requested"]
    decided = next(e for e in store.events(run.id) if e.kind == "policy.decided")
    assert decided.payload["verdict"] == "approve"
    assert decided.payload["policy_hash"] == builtin_policy().hash


def test_a_forks_child_is_gated_and_its_plan_names_what_it_may_repeat(
        store: SQLiteStore, side: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(b): the parent's charge was approved once; the child asks again."""
    rid = start_run(store, sample_agents.pay_fast, agent_ref="tests.sample_agents:pay_fast",
                    goal="g")
    asyncio.run(Worker(store).run(until_idle=True))
    (req,) = store.approvals(status="pending")
    approvals.decide(store, req.id, approve=True, who="human:ops")
    asyncio.run(Worker(store).run(until_idle=True))
    assert charges(side) == 1 and store.get_run(rid).status == "done"  # type: ignore[union-attr]
    db = str(store.path)
    code, out = cli("--store", db, "fork", rid, "--at", "0", "--plan")
    assert code == 0, out
    assert "REPEAT? step 1 charge (amount=7)" in out and "built-in defaults" in out
    assert len(store.list_runs()) == 1  # --plan changes nothing
    code, out = cli("--store", db, "fork", rid, "--at", "0")
    assert code == 0, out
    monkeypatch.chdir(tmp_path)
    asyncio.run(Worker(store).run(until_idle=True))
    child = next(r for r in store.list_runs() if r.id != rid)
    assert child.status == "awaiting_approval" and charges(side) == 1


def test_apply_and_show_journal_who_applied_what(tmp_path: Path) -> None:
    db = str(tmp_path / "tether.db")
    (tmp_path / "p.toml").write_text(ALLOW_CHARGE)
    SQLiteStore(db).close()
    code, out = cli("--store", db, "policy", "show")
    assert code == 0 and "built-in defaults" in out
    code, out = cli("--store", db, "policy", "apply", str(tmp_path / "p.toml"))
    assert code == 0 and "as store event #1" in out, out
    code, out = cli("--store", db, "policy", "apply", str(tmp_path / "p.toml"))
    assert code == 0 and out.startswith("unchanged"), out
    (tmp_path / "q.toml").write_text(DENY_CHARGE)
    code, out = cli("--store", db, "policy", "apply", str(tmp_path / "q.toml"), "--swarm", "crew")
    assert code == 0, out
    code, out = cli("--store", db, "policy", "show")
    h = parse_policy(ALLOW_CHARGE, source="x").hash
    assert f"policy {h[:12]} store-wide, applied by {ME}" in out
    assert f"for swarm crew, applied by {ME}" in out
    code, out = cli("--store", db, "policy", "show", "--swarm", "other", "--text")
    assert "store-wide" in out and 'id = "charge-ok"' in out
    store = SQLiteStore(db)
    assert [e.kind for e in store.store_events()] == ["policy.applied", "policy.applied"]
    assert in_force(store, "crew").policy.rules[0].id == "no-charge"
    assert verify_store(store).ok


def test_deeply_nested_toml_is_one_error_line_and_is_never_applied(tmp_path: Path) -> None:
    bad = tmp_path / "deep.toml"
    bad.write_text(NESTED)
    db = str(tmp_path / "tether.db")
    for args in (["policy", "check", str(bad)], ["--store", db, "policy", "apply", str(bad)]):
        code, out = cli(*args)
        assert code == 2, out
        assert out.count("\n") == 1 and out.startswith("error:") and "nested too deeply" in out
    assert SQLiteStore(db).store_events() == []
    with pytest.raises(UsageError, match="nested"):
        rules_from_python([{"id": "x", "decide": "deny", "args": {"a": {"in": [[[1]]] * 1}}}],
                          defaults={"approvers": _deep(300)})


def _deep(n: int) -> list[object]:
    out: list[object] = []
    for _ in range(n):
        out = [out]
    return out


def test_a_worker_picks_up_a_new_policy_at_its_next_pass(store: SQLiteStore, side: Path) -> None:
    apply_policy(store, parse_policy(DENY_CHARGE, source="deny.toml"), who="human:ops")
    worker = Worker(store)
    assert worker.policy.rules[0].id == "no-charge"
    allow = parse_policy(ALLOW_CHARGE, source="allow.toml")
    apply_policy(store, allow, who="human:ops")  # after the worker started: no file to watch
    rid = start_run(store, sample_agents.pay_fast, agent_ref="tests.sample_agents:pay_fast",
                    goal="g")
    asyncio.run(worker.run(until_idle=True))
    decided = next(e for e in store.events(rid) if e.kind == "policy.decided")
    assert decided.payload["rule"] == "charge-ok" and decided.payload["policy_hash"] == allow.hash
    assert charges(side) == 1


def test_a_worker_told_another_policy_is_refused_naming_both_hashes(
        tmp_path: Path, side: Path) -> None:
    db = str(tmp_path / "tether.db")
    (tmp_path / "p.toml").write_text(ALLOW_CHARGE)
    h = parse_policy(ALLOW_CHARGE, source="x").hash
    code, out = cli("--store", db, "worker", "--until-idle", "--policy", str(tmp_path / "p.toml"))
    assert code == 2 and h[:12] in out and builtin_policy().hash[:12] in out, out
    assert SQLiteStore(db).store_events() == []
    code, out = cli("--store", db, "worker", "--until-idle", "--policy", str(tmp_path / "p.toml"),
                    "--apply")
    assert code == 0 and f"policy {h[:12]} store-wide, applied by {ME}" in out, out
    code, out = cli("--store", db, "worker", "--until-idle", "--policy", str(tmp_path / "p.toml"))
    assert code == 0, out


def test_a_broken_policy_in_the_store_never_crashes_a_worker(store: SQLiteStore,
                                                             side: Path) -> None:
    """A policy.applied whose text does not compile (written around ``apply``'s check):
    the policy before it stays in force; a worker starting on it refuses to."""
    apply_policy(store, parse_policy(DENY_CHARGE, source="deny.toml"), who="human:ops")
    worker = Worker(store)
    store.append_store_event("policy.applied", "store",
                             {"text": NESTED, "format": "toml", "hash": "0" * 64},
                             actor="human:mallory", time="2026-12-04T00:00:00.000000Z",
                             id="01M8Q43S4086XPN46J3R86CVXC")
    rid = start_run(store, sample_agents.pay_fast, agent_ref="tests.sample_agents:pay_fast",
                    goal="g")
    asyncio.run(worker.run(until_idle=True))
    decided = next(e for e in store.events(rid) if e.kind == "policy.decided")
    assert decided.payload["rule"] == "no-charge" and charges(side) == 0
    with pytest.raises(UsageError, match="store's policy cannot be used"):
        Worker(store)


def test_run_applies_a_tether_toml_beside_the_store_journaled(tmp_path: Path, side: Path) -> None:
    (tmp_path / "tether.toml").write_text(ALLOW_CHARGE)
    db = str(tmp_path / "tether.db")
    code, out = cli("--store", db, "run", "tests.sample_agents:pay_fast", "--goal", "g")
    assert code == 0 and "applied" in out and "is done" in out, out
    store = SQLiteStore(db)
    (e,) = store.store_events()
    assert e.actor == ME and e.payload["source"].endswith("tether.toml")
    assert charges(side) == 1


def test_the_store_chain_is_verified(store: SQLiteStore) -> None:
    apply_policy(store, parse_policy(ALLOW_CHARGE, source="a.toml"), who="human:ops")
    apply_policy(store, parse_policy(DENY_CHARGE, source="b.toml"), who="human:ops")
    assert verify_store(store).ok
    db = sqlite3.connect(store.path)
    db.execute("UPDATE store_events SET actor = 'human:eve' WHERE n = 1")
    db.commit()
    rep = verify_store(store)
    assert rep.first_bad is not None and rep.first_bad.startswith("store chain event #1")
    db.execute("UPDATE store_events SET actor = 'human:ops' WHERE n = 1")
    db.execute("DELETE FROM store_events WHERE n = 2")  # back to the laxer policy, silently?
    db.commit()
    db.close()
    rep = verify_store(store)
    assert not rep.ok and "@store#2, which is missing" in " ".join(rep.problems)


def test_clearing_a_swarm_policy_falls_back_to_the_stores(tmp_path: Path) -> None:
    db = str(tmp_path / "tether.db")
    (tmp_path / "p.toml").write_text(DENY_CHARGE)
    code, out = cli("--store", db, "policy", "apply", str(tmp_path / "p.toml"), "--swarm", "crew")
    assert code == 0, out
    code, out = cli("--store", db, "policy", "clear", "--swarm", "crew")
    assert code == 0 and "#2" in out and "built-in defaults" in out, out
    code, out = cli("--store", db, "policy", "clear", "--swarm", "crew")
    assert code == 2 and "no policy is applied to swarm crew" in out
    store = SQLiteStore(db)
    assert [e.kind for e in store.store_events()] == ["policy.applied", "policy.cleared"]
    assert in_force(store, "crew").event is None and verify_store(store).ok


def test_explain_without_a_file_explains_the_stores_policy(tmp_path: Path) -> None:
    db = str(tmp_path / "tether.db")
    (tmp_path / "p.toml").write_text(DENY_CHARGE)
    assert cli("--store", db, "policy", "apply", str(tmp_path / "p.toml"), "--swarm", "crew")[0] == 0
    code, out = cli("--store", db, "policy", "explain", "--agent", "a", "--tool", "charge",
                    "--swarm", "crew")
    assert code == 0 and "decision: deny by rule 'no-charge'" in out, out
    code, out = cli("--store", db, "policy", "explain", "--agent", "a", "--tool", "charge")
    assert code == 0 and "decision: approve by the default" in out, out


def test_the_0_1_0_store_runs_under_the_defaults_until_a_policy_is_applied(
        tmp_path: Path) -> None:
    import shutil
    db = tmp_path / "tether.db"
    shutil.copyfile(Path(__file__).parent / "fixtures" / "store-0.1.0.db", db)
    code, out = cli("--store", str(db), "policy", "show")
    assert code == 0 and "built-in defaults" in out, out
    (tmp_path / "p.toml").write_text(ALLOW_CHARGE)
    assert cli("--store", str(db), "policy", "apply", str(tmp_path / "p.toml"))[0] == 0
    code, out = cli("--store", str(db), "audit", "verify")
    assert code == 0 and "7 runs" in out, out


GO, REACHED = threading.Event(), threading.Event()


async def _charge_twice(ctx: Any, state: dict[str, Any]) -> Any:
    n = state["n"] = state.get("n", 0) + 1
    if n == 2:
        REACHED.set()
        await asyncio.to_thread(GO.wait, 30)  # the test applies a new policy meanwhile
    await ctx.call(sample_agents.charge, amount=n)
    return Done() if n == 2 else None


def test_a_running_run_uses_a_new_policy_from_its_next_action(store: SQLiteStore,
                                                              side: Path) -> None:
    """No restart and no file: the policy applied while a run is going gates its next call."""
    GO.clear()
    REACHED.clear()
    agent = StepAgent(_charge_twice, name="twice", tools=[sample_agents.charge])
    first = parse_policy(ALLOW_CHARGE, source="first.toml")
    second = parse_policy(ALLOW_CHARGE.replace("charge-ok", "charge-still-ok"),
                          source="second.toml")
    apply_policy(store, first, who="human:ops")
    rid = start_run(store, agent, agent_ref="twice", goal="g")
    w = Worker(store, agents={"twice": agent}, poll_interval=0.01)
    done = threading.Thread(target=lambda: asyncio.run(w.run(until_idle=True)))
    done.start()
    assert REACHED.wait(20)  # step 1 ran under the first policy; step 2 waits before its call
    apply_policy(store, second, who="human:ops")
    wait_for(lambda: w.policies.seen == 2)  # the worker's next scheduling pass read it
    GO.set()
    done.join(30)
    rules = [(e.step, e.payload["rule"], e.payload["policy_hash"]) for e in store.events(rid)
             if e.kind == "policy.decided"]
    assert rules == [(1, "charge-ok", first.hash), (2, "charge-still-ok", second.hash)]


def wait_for(pred: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_an_approval_granted_on_expiry_by_an_explicit_rule_counts(store: SQLiteStore,
                                                                  side: Path) -> None:
    """on_expiry = "allow" is a rule saying so: the call runs once, after approval.decided;
    the default (deny) never runs it."""
    for on_expiry, runs in (("allow", 1), ("deny", 0)):
        text = (f'[[rule]]\nid = "wait-then-{on_expiry}"\ntool = "charge"\ndecide = "approve"\n'
                f'expires = "1m"\non_expiry = "{on_expiry}"\n')
        apply_policy(store, parse_policy(text, source=f"{on_expiry}.toml"), who="human:ops")
        rid = start_run(store, sample_agents.pay_fast, agent_ref="tests.sample_agents:pay_fast",
                        goal="g")
        asyncio.run(Worker(store).run(until_idle=True))
        approvals.expire_due(store, now=time.time() + 120)
        asyncio.run(Worker(store).run(until_idle=True))
        kinds = [(e.kind, (e.payload or {}).get("decision")) for e in store.events(rid)
                 if e.kind in ("approval.decided", "effect.intent")]
        decided = ("approval.decided", "approved" if on_expiry == "allow" else "expired")
        assert kinds == [decided, ("effect.intent", None)][:1 + runs]
    assert charges(side) == 1


def test_a_swarms_policy_gates_its_runs_only(store: SQLiteStore, side: Path) -> None:
    apply_policy(store, parse_policy(DENY_CHARGE, source="crew.toml"), who="human:ops",
                 swarm="crew")
    crew, alone = (start_run(store, sample_agents.pay_fast, agent_ref="tests.sample_agents:pay_fast",
                             goal="g", swarm=swarm) for swarm in ("crew", None))
    asyncio.run(Worker(store).run(until_idle=True))
    first = {rid: next(e.payload for e in store.events(rid) if e.kind == "policy.decided")
             for rid in (crew, alone)}
    assert (first[crew]["verdict"], first[crew]["rule"]) == ("deny", "no-charge")
    assert (first[alone]["verdict"], first[alone]["policy_hash"]) == ("approve",
                                                                      builtin_policy().hash)
    assert charges(side) == 0


def test_show_history_lists_every_change(tmp_path: Path) -> None:
    db = str(tmp_path / "tether.db")
    (tmp_path / "p.toml").write_text(ALLOW_CHARGE)
    (tmp_path / "q.toml").write_text(DENY_CHARGE)
    for args in (["p.toml"], ["q.toml", "--swarm", "crew"], ["q.toml"]):
        assert cli("--store", db, "policy", "apply", str(tmp_path / args[0]), *args[1:])[0] == 0
    code, out = cli("--store", db, "policy", "show", "--history")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3, out
    assert lines[0].startswith("#1 ") and "store: " in lines[0] and lines[0].endswith(ME)
    assert "swarm:crew" in lines[1] and lines[2].endswith(f"by {ME}")
    code, out = cli("--store", db, "policy", "show", "--history", "--swarm", "other", "--json")
    assert code == 0 and len(out.splitlines()) == 2  # the store's, not crew's
