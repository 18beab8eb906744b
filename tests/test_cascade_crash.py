"""kill -9 in the middle of a rollback, then run it again: everything happens exactly once.

A swarm history with real file effects (``fs_write``/``fs_append``), messages and
blackboard writes is built with the real runtime (:mod:`tests.swarm_agents`), then
``tether rollback`` runs in a subprocess and is killed with SIGKILL at an exact
moment (a hook in ``python -m tests.swarm_agents`` hangs there and the test kills
it) or at a moment picked by polling the store. While the rollback is unfinished,
``resume`` is refused. Running the rollback again with the real ``tether`` CLI
finishes it; then the workspace is byte for byte what it was at the target steps,
every undo took effect once (one ``effect.undone`` per effect; a second
``effect.undoing`` only for the undo the kill interrupted), messages end retracted
or requeued as they should, blackboard writes reverted, and the store verifies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.swarm_agents import DELAY_ENV, HANG_ENV, MARKER_ENV, Schedule, drive, text
from tether import SQLiteStore, verify_store
from tether.cli.app import app
from tether.core.events import Event
from tether.provenance.cascade import cascade_plan
from tether.provenance.plan import plan
from tether.runtime.operator import run_state, send_command

pytestmark = pytest.mark.crash

ROOT = Path(__file__).resolve().parents[1]
TETHER = Path(sys.executable).with_name("tether")

# A (the origin) goes wrong from step 3 on; B takes in its work at step 3 (messages and
# a file) and builds on it; C is a bystander whose clean message B and A take in.
NAMES = ["A", "B", "C"]
CLEAN: Schedule = [
    ("A", [("write", "a.txt"), ("set", "k1")]),
    ("B", [("write", "b.txt")]),
    ("C", [("write", "c.txt"), ("send", "B")]),
    ("A", [("append", "a.txt"), ("write", "shared.txt")]),
    ("B", [("append", "b.txt")]),
]
TAINTED: Schedule = [
    ("A", [("write", "a.txt"), ("append", "shared.txt"), ("send", "B"), ("set", "k1")]),
    ("A", [("write", "n1.txt"), ("append", "a.txt"), ("send", "B")]),
    ("C", [("set", "k2"), ("send", "A")]),
    ("B", [("recv", ""), ("read", "a.txt")]),
    ("B", [("append", "shared.txt"), ("write", "b.txt"), ("append", "a.txt")]),
    ("A", [("recv", ""), ("write", "n2.txt"), ("send", "B"), ("send", "C")]),
    ("B", [("get", "k1"), ("write", "b2.txt")]),
]
UNDONE = 9
"""File effects of A from step 3 and of B from step 3."""


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None,
                                       p.stat().st_mode)
            for p in sorted(root.rglob("*"))}


def all_events(store: SQLiteStore) -> list[Event]:
    return [e for r in store.all_run_ids() for e in store.events(r)]


def kill_during(db: Path, args: list[str], tmp: Path, *, hang: str = "", delay: float = 0.0,
                until: Any = None) -> None:
    """Run ``tether ARGS`` with the test hooks and SIGKILL it: once it hangs where
    ``hang`` says, or once ``until(store)`` is true (polled on another connection)."""
    marker, log = tmp / "marker", tmp / "killed.log"
    marker.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), HANG_ENV: hang, MARKER_ENV: str(marker),
           DELAY_ENV: str(delay)}
    watcher = SQLiteStore(db)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.swarm_agents", "--store",
                                 str(db), *args], env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() if hang else until(watcher)):
            assert proc.poll() is None, \
                f"the rollback ended ({proc.returncode}) before the kill: {log.read_text()}"
            assert time.monotonic() < deadline, f"never reached the kill point: {log.read_text()}"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        watcher.close()


def tether(db: Path, *args: str) -> str:
    res = subprocess.run([str(TETHER), "--store", str(db), *args], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def interrupted(store: SQLiteStore) -> set[str]:
    """Effects whose undo was started (``effect.undoing``) and not recorded as done."""
    undoing: set[str] = set()
    for e in all_events(store):
        if e.kind == "effect.undoing":
            undoing.add(e.payload["effect"])
        elif e.kind == "effect.undone":
            undoing.discard(e.payload["effect"])
    return undoing


class Cuts:
    """Which undos the kills interrupted, and how many times each."""

    def __init__(self) -> None:
        self.times: Counter[str] = Counter()
        self._undoing: Counter[str] = Counter()

    def after_kill(self, store: SQLiteStore) -> set[str]:
        """The undos this kill interrupted (started again since the last kill, unfinished)."""
        now = Counter(e.payload["effect"] for e in all_events(store)
                      if e.kind == "effect.undoing")
        cut = {k for k in interrupted(store) if now[k] > self._undoing[k]}
        self.times.update(cut)
        self._undoing = now
        return cut


def check_unfinished(store: SQLiteStore, ids: dict[str, str], to: dict[str, int]) -> None:
    """Between the kill and the second run: what is marked cannot be resumed."""
    marked = []
    for name, rid in ids.items():
        row = store.get_run(rid)
        assert row is not None
        if "rolling_back" in row.spec:
            marked.append(name)
            assert row.status == "paused" and row.epoch == 0
            res = send_command(store, rid, "resume", who="human:ops")
            assert res.outcome == (f"ignored: a rollback to step {to[name]} is unfinished; "
                                   "run `tether rollback` again to finish it"), res
            assert store.get_run(rid).status == "paused"  # type: ignore[union-attr]
    assert marked, "the kill struck before any run was marked as rolling back"
    # The CLI says so too.
    cli = CliRunner().invoke(app, ["--store", str(store.path), "resume", ids[marked[0]]])
    assert "unfinished" in cli.output, cli.output
    assert verify_store(store).problems == []


def check_undos_once(store: SQLiteStore, cuts: Cuts, expected: int) -> None:
    """One ``effect.undone`` per undone effect; one ``effect.undoing`` more per kill that
    interrupted that undo, none more for the others."""
    evs = all_events(store)
    undone = Counter(e.payload["effect"] for e in evs if e.kind == "effect.undone")
    undoing = Counter(e.payload["effect"] for e in evs if e.kind == "effect.undoing")
    assert len(undone) == expected and set(undone.values()) == {1}, undone
    assert undoing == Counter({k: 1 + cuts.times[k] for k in undone}), (undoing, cuts.times)
    rows = {e.id: e for r in store.all_run_ids() for e in store.effects(run=r)}
    assert {k for k, e in rows.items() if e.status == "undone"} == set(undone)


# -- the cascade ---------------------------------------------------------------------


@pytest.fixture
def history(tmp_path: Path) -> dict[str, Any]:
    db, ws = tmp_path / "t.db", tmp_path / "ws"
    store = SQLiteStore(db)
    ids, states = drive(store, NAMES, CLEAN + TAINTED, ws)
    store.close()
    # The workspace at the target steps: replay the clean schedule in another one.
    clean_db, clean_ws = tmp_path / "clean.db", tmp_path / "clean-ws"
    clean = SQLiteStore(clean_db)
    drive(clean, NAMES, CLEAN, clean_ws)
    clean.close()
    return {"db": db, "ws": ws, "ids": ids, "states": states, "at_target": snapshot(clean_ws)}


KILLS = [
    pytest.param([{"hang": "fs_restore:1:after"}], id="after-the-first-undo-ran"),
    pytest.param([{"hang": "fs_restore:6:before"}], id="before-the-sixth-undo-ran"),
    pytest.param([{"hang": "fs_restore:9:after"}], id="after-the-last-undo-ran"),
    pytest.param([{"hang": "begin:1:after"}], id="one-run-marked"),
    pytest.param([{"hang": "requeue:2:before"}], id="between-the-requeues"),
    pytest.param([{"hang": "retract_and_revert:1:after"}], id="one-run-settled"),
    pytest.param([{"hang": "undo:4:after"}], id="between-undos"),
    pytest.param([{"hang": "restore:1:after"}], id="one-run-restored"),
    pytest.param([{"delay": 0.04, "until": 3}], id="polled-after-3-undone"),
    pytest.param([{"delay": 0.04, "until": 7}], id="polled-after-7-undone"),
    pytest.param([{"hang": "fs_restore:2:after"}, {"hang": "fs_restore:1:after"},
                  {"hang": "fs_restore:4:before"}], id="thrice-once-in-the-same-undo"),
    pytest.param([{"hang": "retract_and_revert:2:before"}, {"delay": 0.04, "until": 5},
                  {"hang": "restore:1:after"}], id="thrice-at-every-stage"),
]


def undone_count(n: int) -> Any:
    return lambda s: sum(e.kind == "effect.undone" for e in all_events(s)) >= n


@pytest.mark.parametrize("kills", KILLS)
def test_kill_9_during_a_cascade_rollback_then_finish_it(history: dict[str, Any],
                                                         kills: list[dict[str, Any]],
                                                         tmp_path: Path) -> None:
    db, ws, ids = history["db"], history["ws"], history["ids"]
    store = SQLiteStore(db)
    try:
        a, b, c = ids["A"], ids["B"], ids["C"]
        names = {v: k for k, v in ids.items()}
        cp = cascade_plan(store, "A", 2)
        assert {p.run.name: p.to_step for p in cp.plans} == {"A": 2, "B": 2}
        assert sum(len(p.undo) for p in cp.plans) == UNDONE
        before = {(m.sender, m.step, m.recipient): m.id for m in store.messages()}
        assert snapshot(ws) != history["at_target"]

        cuts = Cuts()
        for kill in kills:
            kill_during(db, ["rollback", "A", "--to", "2", "--cascade"],
                        tmp_path, hang=kill.get("hang", ""), delay=kill.get("delay", 0.0),
                        until=undone_count(kill["until"]) if "until" in kill else None)
            cut = cuts.after_kill(store)
            assert len(cut) <= 1
            if kill.get("hang", "").startswith("fs_restore"):
                assert len(cut) == 1  # the kill struck inside that undo
            assert store.get_run(a).epoch == 0  # type: ignore[union-attr]  # restored last
            check_unfinished(store, ids, {"A": 2, "B": 2})

        out = tether(db, "rollback", "A", "--to", "2", "--cascade")
        assert "cascade rollback done" in out

        # The workspace is byte for byte what it was at the target steps.
        assert snapshot(ws) == history["at_target"]
        check_undos_once(store, cuts, UNDONE)
        last = kills[-1].get("hang", "")
        for e in all_events(store):
            if e.kind == "effect.undone" and e.payload["effect"] in cut and last:
                # Run again, the interrupted undo found its work done (killed after the
                # restore) or did it (killed before).
                done = "already" in e.payload["result"]
                assert done == last.endswith("after"), e.payload
        for name, to in (("A", 2), ("B", 2)):
            row = store.get_run(ids[name])
            assert row is not None and (row.epoch, row.step, row.status) == (1, to, "paused")
            assert "rolling_back" not in row.spec
            assert run_state(store, ids[name])[2] == history["states"][(name, to)]
        row = store.get_run(c)
        assert row is not None and (row.epoch, row.step) == (0, 2)

        # Messages: A's after step 2 are retracted (delivered ones after B gave them back);
        # what B and A took from C after their target steps is back in their inboxes.
        status = {(names[m.sender], m.step, names[m.recipient]): m.status
                  for m in store.messages()}
        assert status == {("C", 1, "B"): "pending", ("A", 3, "B"): "retracted",
                          ("A", 4, "B"): "retracted", ("C", 2, "A"): "pending",
                          ("A", 5, "B"): "retracted", ("A", 5, "C"): "retracted"}
        evs = all_events(store)
        retracted = Counter(m for e in evs if e.kind == "message.retracted"
                            for m in e.payload["messages"])
        requeued = Counter(m for e in evs if e.kind == "message.requeued"
                           for m in e.payload["messages"])
        assert set(retracted.values()) == {1} and len(retracted) == 4
        assert requeued == Counter({before[(c, 1, b)]: 1, before[(a, 3, b)]: 1,
                                    before[(a, 4, b)]: 1, before[(c, 2, a)]: 1})
        # Blackboard: A's k1 of step 3 reverted, A's first and C's k2 stay.
        board = {(names[v.run], v.step, v.key): v.status for v in store.versions()
                 if v.ns.startswith("board:")}
        assert board == {("A", 1, "k1"): "live", ("A", 3, "k1"): "reverted",
                         ("C", 2, "k2"): "live"}
        assert verify_store(store).problems == []
        assert cascade_plan(store, "A", 2).idle
        # Running it once more changes nothing.
        tether(db, "rollback", "A", "--to", "2", "--cascade")
        assert snapshot(ws) == history["at_target"]
        check_undos_once(store, cuts, UNDONE)
    finally:
        store.close()


# -- a single run ------------------------------------------------------------------------

SOLO: Schedule = [
    ("R", [("write", "f.txt"), ("set", "k"), ("send", "Q")]),
    ("Q", [("recv", ""), ("send", "R")]),
    ("R", [("recv", ""), ("append", "f.txt"), ("write", "g.txt"), ("send", "Q"),
           ("set", "k")]),
    ("R", [("write", "h.txt"), ("set", "k2"), ("send", "Q"), ("append", "g.txt")]),
]


@pytest.mark.parametrize("hang", ["requeue:1:after", "retract_and_revert:1:before",
                                  "fs_restore:2:after", "fs_restore:4:before",
                                  "restore:1:before"])
def test_kill_9_during_a_rollback_that_retracts_and_reverts(tmp_path: Path, hang: str) -> None:
    db, ws = tmp_path / "t.db", tmp_path / "ws"
    store = SQLiteStore(db)
    try:
        ids, states = drive(store, ["R", "Q"], SOLO, ws)
        r, q = ids["R"], ids["Q"]
        names = {v: k for k, v in ids.items()}
        p = plan(store, "R", 1)
        assert (len(p.undo), len(p.retract), len(p.requeue), len(p.revert)) == (4, 2, 1, 2)
        assert [m.recipient for m in p.delivered] == []

        kill_during(db, ["rollback", "R", "--to", "1"], tmp_path, hang=hang)
        cuts = Cuts()
        assert len(cuts.after_kill(store)) == (1 if hang.startswith("fs_restore") else 0)
        check_unfinished(store, ids, {"R": 1})
        out = tether(db, "rollback", "R", "--to", "1")
        assert "rolled back run" in out

        assert {p.name: p.read_text() for p in sorted(ws.iterdir())} == \
            {"f.txt": text("R", 1, 0)}
        check_undos_once(store, cuts, 4)
        row = store.get_run(r)
        assert row is not None and (row.epoch, row.step, row.status) == (1, 1, "paused")
        assert run_state(store, r)[2] == states[("R", 1)]
        assert store.get_run(q).epoch == 0  # type: ignore[union-attr]

        status = {(names[m.sender], m.step): m.status for m in store.messages()}
        assert status == {("R", 1): "delivered", ("Q", 1): "pending", ("R", 2): "retracted",
                          ("R", 3): "retracted"}
        evs = store.events(r)
        retracted = [m for e in evs if e.kind == "message.retracted" for m in e.payload["messages"]]
        requeued = [m for e in evs if e.kind == "message.requeued" for m in e.payload["messages"]]
        reverted = [w["event"] for e in evs if e.kind == "blackboard.reverted"
                    for w in e.payload["writes"]]
        assert len(retracted) == len(set(retracted)) == 2
        assert len(requeued) == 1 and len(reverted) == len(set(reverted)) == 2
        board = {(v.step, v.key): v.status for v in store.versions() if v.ns.startswith("board:")}
        assert board == {(1, "k"): "live", (2, "k"): "reverted", (3, "k2"): "reverted"}
        current = store.current_versions(f"board:{row.swarm}", ["k", "k2"])
        assert set(current) == {"k"} and current["k"].value == text("R", 1, 1)
        assert verify_store(store).problems == []
    finally:
        store.close()


def test_a_plain_rollback_after_a_killed_cascade_does_not_strand_its_dependents(
        tmp_path: Path) -> None:
    # A plain rollback of the origin used to replace the killed cascade's marker and finish
    # the origin alone; `--cascade` run again then found nothing to do (it starts from the
    # origin's new epoch) and B stayed marked for ever: resume refused, its file and the
    # message it took never rolled back.
    db, ws = tmp_path / "t.db", tmp_path / "ws"
    store = SQLiteStore(db)
    try:
        ids, _ = drive(store, ["A", "B"], [("A", [("write", "a.txt")]),
                                           ("A", [("send", "B"), ("write", "a2.txt")]),
                                           ("B", [("recv", ""), ("write", "b.txt")])], ws)
        kill_during(db, ["rollback", "A", "--to", "1", "--cascade"], tmp_path,
                    hang="requeue:1:before")
        check_unfinished(store, ids, {"A": 1, "B": 0})
        # The operator tries to finish the origin alone (refused, or finishing the
        # cascade: either way nothing may be stranded), then runs the cascade again.
        subprocess.run([str(TETHER), "--store", str(db), "rollback", "A", "--to", "1"],
                       cwd=ROOT, capture_output=True, timeout=120, check=False)
        tether(db, "rollback", "A", "--to", "1", "--cascade")
        for name, to in (("A", 1), ("B", 0)):
            row = store.get_run(ids[name])
            assert row is not None
            assert "rolling_back" not in row.spec, row.reason
            assert (row.epoch, row.step) == (1, to)
        assert sorted(p.name for p in ws.iterdir()) == ["a.txt"]
        assert [m.status for m in store.messages()] == ["retracted"]
        assert verify_store(store).problems == []
    finally:
        store.close()
