"""Property: no irreversible tool runs without an allow rule or a granted approval.

Over generated policies (store-wide or for a swarm, or none at all), runs, forks,
approvals and policy applies, real ``tether worker --until-idle`` subprocesses are
started in random folders: an empty one, one whose ``tether.toml`` allows
everything (a worker must ignore it), or with ``--policy`` naming another file (it
must be refused). Afterwards every irreversible ``effect.intent`` of every run must
follow, in its run's chain, a ``policy.decided`` allow that names its rule, or an
``approval.decided`` that granted its request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests import sample_agents
from tether import approvals, start_run
from tether.core.policy import parse_policy
from tether.policies import apply_policy
from tether.provenance.fork import fork
from tether.store.sqlite import SQLiteStore

pytestmark = pytest.mark.workers

REPO = Path(__file__).resolve().parent.parent
ALLOW_ALL = '[[rule]]\nid = "anything-goes"\ndecide = "allow"\n'
REF = "tests.sample_agents:pay_fast"

rules = st.lists(st.fixed_dictionaries({
    "decide": st.sampled_from(["allow", "deny", "approve"]),
    "when": st.sampled_from(["always", "big", "crew"]),
}), max_size=2)
scopes = st.sampled_from([None, "crew"])
rounds = st.fixed_dictionaries({
    "apply": st.none() | st.tuples(rules, scopes),
    "folder": st.sampled_from(["empty", "allowing-toml", "other-policy"]),
    "approve": st.booleans(),
    "fork": st.booleans(),
})
scenarios = st.fixed_dictionaries({
    "applies": st.lists(st.tuples(rules, scopes), max_size=2),
    "runs": st.lists(scopes, min_size=1, max_size=3),
    "rounds": st.lists(rounds, min_size=1, max_size=2),
})


def policy_text(specs: list[dict[str, str]]) -> str:
    out = []
    for n, r in enumerate(specs):
        cond = {"always": "", "big": "args = { amount = { gt = 5 } }\n",
                "crew": 'swarm = "crew"\n'}[r["when"]]
        out.append(f'[[rule]]\nid = "r{n}"\ntool = "charge"\n{cond}decide = "{r["decide"]}"\n')
    return "\n".join(out)


def worker(db: Path, folder: Path, how: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    args = ["--store", str(db), "worker", "--until-idle"]
    if how == "allowing-toml":
        (folder / "tether.toml").write_text(ALLOW_ALL)
    elif how == "other-policy":
        (folder / "mine.toml").write_text(ALLOW_ALL)
        args += ["--policy", "mine.toml"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", "from tether.cli.app import main; main()", *args],
                         cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode in (0, 2), res.stderr
    if res.returncode == 2:  # only a worker told to run under a policy not in force
        assert how == "other-policy" and "hash" in res.stderr, res.stderr


def unguarded(store: SQLiteStore) -> list[str]:
    """Irreversible intents with no allow rule and no granted approval before them."""
    bad = []
    for run in store.list_runs():
        allowed: set[tuple[int, int, int]] = set()
        requested: dict[str, tuple[int, int, int]] = {}
        for e in store.events(run.id):
            p: Any = e.payload
            at = (e.epoch, e.step, p.get("i", -1)) if isinstance(p, dict) else (e.epoch, e.step, -1)
            if e.kind == "policy.decided" and p["verdict"] == "allow" and p["rule"]:
                allowed.add(at)
            elif e.kind == "approval.requested":
                requested[e.id] = at
            elif e.kind == "approval.decided" and p["decision"] == "approved":
                allowed.add(requested[e.causes[0]])
            elif e.kind == "effect.intent" and p["effect"] == "irreversible" and at not in allowed:
                bad.append(f"run {run.name} {e.kind} #{e.seq} {p['tool']} at {at}")
    return bad


@pytest.mark.timeout(300)  # ~30 s alone; worker subprocesses start slowly on a busy machine
# No shrinking: each example starts worker processes, and the failing scenario is short.
@settings(max_examples=10, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios)
def test_no_irreversible_effect_without_an_allow_rule_or_an_approval(
        scenario: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("prop")
    side = root / "side.txt"
    os.environ["TETHER_TEST_SIDE"] = str(side)
    db = root / "tether.db"
    store = SQLiteStore(db)

    def apply(n: int, specs: list[dict[str, str]], swarm: str | None) -> None:
        if specs:
            apply_policy(store, parse_policy(policy_text(specs), source=f"p{n}.toml"),
                         who="human:ops", swarm=swarm)

    try:
        for n, (specs, swarm) in enumerate(scenario["applies"]):
            apply(n, specs, swarm)
        for swarm in scenario["runs"]:
            start_run(store, sample_agents.pay_fast, agent_ref=REF, goal="g", swarm=swarm)
        for n, r in enumerate(scenario["rounds"]):
            if r["apply"] is not None:
                apply(10 + n, *r["apply"])
            worker(db, root / f"folder-{n}", r["folder"])
            for a in store.approvals(status="pending"):
                approvals.decide(store, a.id, approve=r["approve"], who="human:ops",
                                 note=None if r["approve"] else "no")
            done = [row for row in store.list_runs() if row.status == "done"]
            if r["fork"] and done:
                fork(store, done[n % len(done)].id, 0, who="human:ops")
        worker(db, root / "last", "empty")
        assert unguarded(store) == []
        ran = side.read_text().count("charge 7") if side.exists() else 0
        assert ran == len([e for e in store.effects() if e.status == "done"])
    finally:
        os.environ.pop("TETHER_TEST_SIDE", None)
        store.close()
