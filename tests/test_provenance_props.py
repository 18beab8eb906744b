"""Properties of impact and cascade rollback on generated swarm histories.

Hypothesis draws a small swarm (2 to 5 runs) and a global schedule of steps: each
step of a run writes, appends, deletes or reads workspace files with the real
``fs_*`` tools, sends a message to a run (itself included), takes its inbox, or
sets or gets a blackboard key (:mod:`tests.swarm_agents`). The schedule is carried
out with the real runtime one step at a time (every run pauses before each next
step, the test resumes the one whose turn it is), so the global order is the
schedule's; in half the histories each step's worker reads a clock a few
milliseconds off, so event ids do not follow that order.

The expected taint of "something went wrong at step S of run O" is computed here
from the schedule alone, by a tiny model: a step is tainted if it is at or after
S in O, or follows a tainted step of its own run, or took in something a tainted
step of another run produced: a message it received, the blackboard version it
read, or the version of a file it read, appended to, overwrote or deleted (tether
cites a file's last writer in another run for all four). Then:

(a) ``impact(O@S)`` finds exactly the tainted runs, each from its first tainted step
    (and so does ``impact(EVENT)`` for any event of that step);
(b) after ``cascade(O, S - 1)`` every file is what the last untainted write left
    (absent if none), every tainted run is back to the state of the step before its
    first tainted one (in a new epoch) and the others are untouched; messages,
    blackboard versions and effects end in the statuses the model says;
(c) the store verifies.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.swarm_agents import Action, drive, text
from tether import SQLiteStore, verify_store
from tether.provenance.cascade import cascade, cascade_plan
from tether.provenance.impact import impact
from tether.runtime.operator import run_state, send_command

FILES = ("a.txt", "b.txt", "c.txt")
KEYS = ("k1", "k2")

Step = tuple[int, list[Action]]
"""(run index, the actions of that run's next step)."""
History = tuple[int, list[Step], str, int, list[float] | None]


# -- the generator --------------------------------------------------------------------


KINDS = ("write", "append", "delete", "read", "read", "send", "recv", "recv", "set", "get",
         "get")
"""Action kinds, the ones that take something in twice as likely (more taint travels)."""


def _action(n: int) -> st.SearchStrategy[Action]:
    runs = [f"r{i}" for i in range(n)]  # a run may send to itself, too
    args = {"write": FILES, "append": FILES, "delete": FILES, "read": FILES, "send": runs,
            "recv": [""], "set": KEYS, "get": KEYS}
    return st.sampled_from(KINDS).flatmap(
        lambda kind: st.tuples(st.just(kind), st.sampled_from(args[kind])))


@st.composite
def histories(draw: st.DrawFn) -> History:
    """(number of runs, schedule, origin run name, origin step, clock skews or None).

    The origin is a step in the first half of the schedule, so the taint has time to
    travel.
    """
    n = draw(st.integers(2, 5))
    length = draw(st.integers(n, 13))
    schedule: list[Step] = []
    exists: set[str] = set()
    for _ in range(length):
        me = draw(st.integers(0, n - 1))
        acts = draw(st.lists(_action(n), min_size=1, max_size=2))
        fixed = []
        for kind, arg in acts:
            if kind in ("read", "delete") and arg not in exists:
                kind = "write"  # a file must exist to be read or deleted: write it instead
            if kind in ("write", "append"):
                exists.add(arg)
            elif kind == "delete":
                exists.discard(arg)
            fixed.append((kind, arg))
        schedule.append((me, fixed))
    at = draw(st.integers(0, (length - 1) // 2))
    me = schedule[at][0]
    step = sum(1 for r, _ in schedule[:at + 1] if r == me)
    skews = None
    if draw(st.booleans()):
        # Each step's worker reads its own clock, a few milliseconds off: ids (ULIDs) no
        # longer say which write came first; the store's commit order must.
        skews = draw(st.lists(st.sampled_from([-0.004, -0.002, 0.0, 0.002, 0.004]),
                              min_size=length, max_size=length))
    return n, schedule, f"r{me}", step, skews


# -- the model ------------------------------------------------------------------------------


@dataclass
class Expected:
    first: dict[str, int]
    """Run name -> its first tainted step (absent: untainted)."""
    steps: Counter[str]
    """Run name -> steps it ran."""
    files: dict[str, str | None] = field(default_factory=dict)
    """Path -> its text after the cascade (None: absent)."""
    messages: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    """(sender, step, status after the cascade) counts."""
    board: Counter[tuple[str, int, str, str]] = field(default_factory=Counter)
    """(writer, step, key, status after the cascade) counts."""
    effects: Counter[tuple[str, int, str, str]] = field(default_factory=Counter)
    """(run, step, tool, status after the cascade) counts."""


@dataclass
class Sent:
    sender: str
    step: int
    to: str
    taken_at: int | None = None
    """The receiver's step that took it (None: still in its inbox)."""


def model(schedule: list[Step], origin: str, origin_step: int) -> Expected:
    first = {origin: origin_step}

    def tainted(run: str, step: int) -> bool:
        return run in first and step >= first[run]

    steps: Counter[str] = Counter()
    # path -> [(run, step, text after: None once deleted)]
    writers: dict[str, list[tuple[str, int, str | None]]] = {}
    inbox: dict[str, list[Sent]] = {}
    board: dict[str, tuple[str, int]] = {}
    sent: list[Sent] = []
    board_writes: list[tuple[str, int, str]] = []
    effects: list[tuple[str, int, str]] = []
    for me_i, acts in schedule:
        me = f"r{me_i}"
        steps[me] += 1
        k = steps[me]
        hit = tainted(me, k)
        for i, (kind, arg) in enumerate(acts):
            if kind in ("write", "append", "delete", "read"):
                last = writers.get(arg, [])
                if last and last[-1][0] != me and tainted(last[-1][0], last[-1][1]):
                    hit = True
                if kind != "read":
                    before = (last[-1][2] or "") if last and kind == "append" else ""
                    after = None if kind == "delete" else before + text(me, k, i)
                    writers.setdefault(arg, []).append((me, k, after))
                    effects.append((me, k, f"fs_{kind}"))
            elif kind == "send":
                m = Sent(me, k, arg)
                inbox.setdefault(arg, []).append(m)
                sent.append(m)
            elif kind == "recv":
                for m in inbox.pop(me, []):
                    m.taken_at = k
                    hit = hit or tainted(m.sender, m.step)
            elif kind == "set":
                board[arg] = (me, k)
                board_writes.append((me, k, arg))
            elif kind == "get":
                w = board.get(arg)
                if w is not None and w[0] != me and tainted(*w):
                    hit = True
        if hit and me not in first:
            first[me] = k
    exp = Expected(first, steps)
    for path, history in writers.items():
        marks = [tainted(r, s) for r, s, _ in history]
        # A write after a tainted one cites it (or is of the same run, later): taint on a
        # file is a suffix of its history, so undoing it brings back the last clean text.
        assert marks == sorted(marks), f"{path}: taint is not a suffix of {history}"
        clean = [t for (r, s, t), bad in zip(history, marks, strict=True) if not bad]
        exp.files[path] = clean[-1] if clean else None  # None: absent
    for m in sent:
        if tainted(m.sender, m.step):
            status = "retracted"
        elif m.taken_at is not None and not tainted(m.to, m.taken_at):
            status = "delivered"
        else:
            status = "pending"  # never taken, or taken by a rolled-back step: requeued
        exp.messages[(m.sender, m.step, status)] += 1
    for r, s, key in board_writes:
        exp.board[(r, s, key, "reverted" if tainted(r, s) else "live")] += 1
    for r, s, tool_name in effects:
        exp.effects[(r, s, tool_name, "undone" if tainted(r, s) else "done")] += 1
    return exp


# -- the test -------------------------------------------------------------------------------


def _files(ws: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(ws.iterdir())}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(histories())
def test_impact_and_cascade_match_the_taint_model(h: History) -> None:
    n, schedule, origin, origin_step, skews = h
    exp = model(schedule, origin, origin_step)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "t.db")
        try:
            ws = Path(tmp) / "ws"
            ids, states = drive(store, [f"r{i}" for i in range(n)],
                                [(f"r{me}", acts) for me, acts in schedule], ws, skews=skews)
            names = {v: k for k, v in ids.items()}
            _check(store, ws, ids, names, states, exp, origin, origin_step)
        finally:
            store.close()


def _check(store: SQLiteStore, ws: Path, ids: dict[str, str], names: dict[str, str],
           states: dict[tuple[str, int], dict[str, Any]], exp: Expected, origin: str,
           origin_step: int) -> None:
    # (a) the impact is exactly the tainted set, each run from its first tainted step.
    imp = impact(store, f"{origin}@{origin_step}")
    assert {a.run.name: a.first_step for a in imp.affected} == exp.first
    assert all(a.epoch == 0 and a.current for a in imp.affected)
    assert imp.affected[0].run.name == origin
    step_events = [e.id for e in store.events(ids[origin]) if e.step == origin_step]
    by_event = impact(store, step_events[len(step_events) // 2])
    assert [(a.run.id, a.epoch, a.first_step) for a in by_event.affected] == \
        [(a.run.id, a.epoch, a.first_step) for a in imp.affected]

    # (b) the cascade brings every file back to its last clean text.
    cp = cascade_plan(store, origin, origin_step - 1)
    assert not cp.blocked
    assert {p.run.name: p.to_step for p in cp.plans} == {r: s - 1 for r, s in exp.first.items()}
    cascade(store, origin, origin_step - 1, who="human:props")
    assert _files(ws) == {p: t for p, t in exp.files.items() if t is not None}

    for name, rid in ids.items():
        row = store.get_run(rid)
        assert row is not None
        if name in exp.first:
            assert (row.epoch, row.step, row.status) == (1, exp.first[name] - 1, "paused")
            assert "rolling_back" not in row.spec
            assert run_state(store, rid)[2] == states[(name, exp.first[name] - 1)]
        else:
            assert (row.epoch, row.step) == (0, exp.steps[name]), name
            assert run_state(store, rid)[2] == states[(name, exp.steps[name])]

    msgs = Counter((names[m.sender], m.step, m.status) for m in store.messages())
    assert msgs == exp.messages
    board = Counter((names[v.run], v.step, v.key, v.status) for v in store.versions()
                    if v.ns.startswith("board:"))
    assert board == exp.board
    effects = Counter((names[e.run], e.step, e.tool, e.status) for rid in ids.values()
                      for e in store.effects(run=rid))
    assert effects == exp.effects
    undone = [e.payload["effect"] for rid in ids.values() for e in store.events(rid)
              if e.kind == "effect.undone"]
    assert len(undone) == len(set(undone)) == sum(
        c for (_, _, _, status), c in exp.effects.items() if status == "undone")

    # (c) the store verifies, and a second cascade finds nothing left to do.
    assert verify_store(store).problems == []
    assert cascade_plan(store, origin, origin_step - 1).idle


# -- regressions found by these tests (each failed before its fix) ------------------------


def test_a_step_sees_its_own_message_to_itself_whatever_flushed_in_between(tmp_path: Path
                                                                            ) -> None:
    # SwarmCalls.receive used to claim from the store without flushing the run's buffered
    # journal, so the step's own message was taken only if an effect flushed in between.
    seen = []
    steps: list[list[Action]] = [[("send", "r0"), ("recv", "")],
                                 [("send", "r0"), ("write", "a.txt"), ("recv", "")]]
    for i, acts in enumerate(steps):
        store = SQLiteStore(tmp_path / f"{i}.db")
        try:
            _, states = drive(store, ["r0"], [("r0", acts)], tmp_path / f"ws{i}")
        finally:
            store.close()
        seen.append(states[("r0", 1)]["seen"][-1])
    assert seen == [[{"from": "r0", "step": 1, "i": 0}]] * 2


def test_cascade_undoes_in_write_order_whatever_the_ids(tmp_path: Path) -> None:
    # The cascade used to order the undos of different runs by effect id (a ULID, ordered
    # only within one process): a spurious conflict here, and with force=True A's bad
    # write survived the rollback.
    store = SQLiteStore(tmp_path / "t.db")
    ws = tmp_path / "ws"
    try:
        # A writes f.txt, then B appends to it from a worker whose clock is 5 ms behind
        # (two workers writing in the same millisecond disorder their ids half the time).
        ids, _ = drive(store, ["A", "B"], [("A", [("write", "f.txt")]),
                                           ("B", [("append", "f.txt")])], ws,
                       skews=[0.0, -0.005])
        assert (ws / "f.txt").read_text() == "A@1.0\nB@1.0\n"
        assert [v.run for v in store.versions(key="f.txt")] == [ids["A"], ids["B"]]
        assert store.effects(run=ids["B"])[0].id < store.effects(run=ids["A"])[0].id
        assert {p.run.name: p.to_step for p in cascade_plan(store, "A", 0).plans} == \
            {"A": 0, "B": 0}
        cascade(store, "A", 0, who="human:props")
        assert not (ws / "f.txt").exists()
        assert verify_store(store).problems == []
    finally:
        store.close()


def test_a_requeued_message_from_a_quarantined_sender_stays_held(tmp_path: Path) -> None:
    # requeue() used to put messages back as pending whatever their sender, so rolling
    # back a receiver delivered a quarantined run's message again.
    from tether.provenance.quarantine import quarantine
    from tether.provenance.rollback import rollback
    store = SQLiteStore(tmp_path / "t.db")
    try:
        drive(store, ["A", "B"], [("A", [("send", "B")]), ("B", [("recv", "")])],
              tmp_path / "ws")
        quarantine(store, "A", reason="it went wrong", who="human:ops")
        rollback(store, "B", 0, who="human:ops")  # B took A's message at step 1
        assert [m.status for m in store.messages()] == ["held"]
        quarantine(store, "A", release=True, who="human:ops")
        assert [m.status for m in store.messages()] == ["pending"]
        assert verify_store(store).problems == []
    finally:
        store.close()


def test_review_points_apply_again_after_a_rollback(tmp_path: Path) -> None:
    # restore() used to keep spec["reviewed_step"] from the abandoned branch, so the re-run
    # steps skipped the review points that branch had passed.
    import asyncio

    from tests.swarm_agents import REF, swarmer
    from tether import Worker
    from tether.provenance.rollback import rollback
    store = SQLiteStore(tmp_path / "t.db")
    try:
        # Three steps, each followed by a review pause (every_steps=1).
        ids, _ = drive(store, ["A"], [("A", [("write", "a.txt")])] * 3, tmp_path / "ws")
        rollback(store, "A", 1, who="human:ops")
        send_command(store, "A", "resume", who="human:ops")
        asyncio.run(Worker(store, agents={REF: swarmer}, only={ids["A"]},
                           poll_interval=0.005).run(until_idle=True))
        row = store.get_run(ids["A"])
        assert row is not None
        assert (row.status, row.step, row.epoch) == ("paused", 2, 1), row.reason
    finally:
        store.close()
