"""`tether policy show` when the store's policy cannot be used.

A policy recorded in the store chain that does not compile (a NUL in a rule's text, written
by an older tether before it refused one; any text changed outside tether) never takes
effect. `policy show` must say so, not that the built-in defaults are in force because "no
policy was applied": it names the policy, the error (the rule and field), that workers
refuse to start (checked here with a real worker), and the fix; --json carries the same;
the exit status is 1 so that scripts notice, 0 again once a good policy replaces it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.pgworkers import cli
from tether.core.ids import UlidSource, iso
from tether.store import open_store

GOOD = '[[rule]]\nid = "pay-ok"\ntool = "pay"\ndecide = "allow"\n'
NUL = '[[rule]]\nid = "pay\\u0000ok"\ntool = "pay"\ndecide = "allow"\n'  # TOML's NUL escape


def _record_bad(db: Path, scope: str) -> None:
    """What an older tether recorded: a policy whose text does not compile today."""
    store = open_store(str(db))
    try:
        now = time.time()
        store.append_store_event("policy.applied", scope,
                                 {"text": NUL, "format": "toml", "hash": "0" * 64,
                                  "source": "old.toml", "rules": 1},
                                 actor="human:old", time=iso(now),
                                 id=UlidSource(lambda: now).new())
    finally:
        store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    (tmp_path / "good.toml").write_text(GOOD)
    res = cli("--store", str(tmp_path / "t.db"), "policy", "apply", "good.toml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return tmp_path / "t.db"


@pytest.mark.parametrize("earlier", [True, False], ids=["replacing-a-good-one", "first"])
def test_show_says_an_unusable_policy_is_applied_and_how_to_fix_it(
        db: Path, tmp_path: Path, earlier: bool) -> None:
    if not earlier:
        db.unlink()
        open_store(str(db)).close()  # a store with no policy applied before the bad one
    _record_bad(db, "store")
    res = cli("--store", str(db), "policy", "show", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    said = " ".join(res.stdout.split())
    assert "built-in defaults" not in said and "no policy was applied" not in said, said
    assert "applied store-wide by human:old" in said and "from old.toml" in said, said
    assert "CANNOT BE USED" in said and r"rule 'pay\x00ok': id" in said, said
    assert "Workers of this store refuse to start" in said, said
    assert "fix: `tether policy apply FILE`" in said, said
    assert "pay-ok" not in said and "\x00" not in res.stdout, said  # the earlier one is not shown

    res = cli("--store", str(db), "policy", "show", "--json", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    (shown,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert shown["status"] == "unusable" and shown["scope"] == "store", shown
    assert "rule 'pay\\x00ok': id" in shown["error"] and shown["source"] == "old.toml", shown
    assert shown["fix"] == "tether policy apply FILE", shown

    # What show says of workers is what they do: refuse, naming the same error.
    res = cli("--store", str(db), "worker", "--until-idle", cwd=tmp_path)
    assert res.returncode == 2 and "cannot be used" in res.stderr, res.stdout + res.stderr
    assert r"rule 'pay\x00ok': id" in res.stderr, res.stderr

    (tmp_path / "good.toml").write_text(GOOD + "# fixed\n")
    assert cli("--store", str(db), "policy", "apply", "good.toml", cwd=tmp_path).returncode == 0
    res = cli("--store", str(db), "policy", "show", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    (shown,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert shown["status"] == "in force" and shown["scope"] == "store", shown
    assert cli("--store", str(db), "worker", "--until-idle", cwd=tmp_path).returncode == 0


def test_a_swarm_s_unusable_policy_is_shown_beside_the_store_s(db: Path, tmp_path: Path) -> None:
    _record_bad(db, "swarm:crew")
    res = cli("--store", str(db), "policy", "show", "--json", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    bad, good = [json.loads(x) for x in res.stdout.splitlines()]
    assert (bad["scope"], bad["status"]) == ("swarm:crew", "unusable"), bad
    assert bad["fix"] == "tether policy apply FILE --swarm crew", bad
    assert (good["scope"], good["status"]) == ("store", "in force"), good
    # Any swarm's: a worker is the store's, and it refuses to start while one is unusable.
    res = cli("--store", str(db), "policy", "show", "--swarm", "other", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    said = " ".join(res.stdout.split())
    assert said.startswith("policy applied for swarm crew by human:old") and "CANNOT" in said
    assert "policy " in said.partition("--swarm crew")[2], said  # then the store's, in force


def test_explain_refuses_to_answer_from_a_fallback_no_worker_runs_under(
        db: Path, tmp_path: Path) -> None:
    """`policy explain` without --policy used to answer from the built-in defaults (or the
    last good policy) while the store's applied one cannot be used: an operator asking
    "would this payment run?" was told by rules no worker enforces (they refuse to start).
    It now says why it cannot answer and how to fix it; with --policy FILE it still answers."""
    _record_bad(db, "store")
    asked = ("policy", "explain", "--agent", "a", "--tool", "pay")
    res = cli("--store", str(db), *asked, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    said = " ".join(res.stderr.split())
    assert "cannot be used" in said and "pay\\x00ok" in said and "refuse to start" in said, said
    assert "tether policy apply" in said and "--policy FILE" in said, said
    assert "Traceback" not in res.stderr
    res = cli("--store", str(db), *asked, "--policy", "good.toml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pay-ok" in res.stdout
