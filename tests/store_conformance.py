"""The Store conformance suite: what every backend (SQLite, PostgreSQL) must do alike.

A backend's test module provides two fixtures and star-imports the tests::

    @pytest.fixture
    def store_factory(tmp_path) -> Iterator[Callable[[], Store]]:
        ...  # a callable returning a fresh, empty store; close every store at teardown

    @pytest.fixture
    def open_backup() -> Iterator[Callable[[str], Store]]:
        ...  # opens what Store.backup(path) wrote, as a store; closed at teardown

    pytest.register_assert_rewrite("tests.store_conformance")
    from tests.store_conformance import *

The module name does not start with ``test_``, so pytest collects these tests
only where a backend imports them, once per backend. ``__all__`` holds only the
tests, so a star import brings no helper along.

Two clocks, as in the worker: a run's clock (wake times, commands, usage
buckets) is the fixed ``T0`` here, while leases are taken and judged in wall
time (``time.time()``), which is what ``runnable`` compares lease expiry with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tether.core.checkpoint import Checkpoint, CheckpointEncoder, restore
from tether.core.clock import FixedClock
from tether.core.events import BATCH_GENESIS, Chain, Event, batch_hash, event_hash
from tether.core.ids import UlidSource, iso
from tether.core.seals import message_digest
from tether.errors import Conflict, LeaseLost, NotFound, StoreCorrupt, UsageError
from tether.store.protocol import Store
from tether.store.records import (
    USAGE_KEYS,
    Command,
    EffectRow,
    Link,
    MessageRow,
    RunRow,
    Transition,
    UsageDelta,
    VersionRow,
    Write,
)

StoreFactory = Callable[[], Store]

T0 = 1_700_000_000.0
"""The runs' clock: creation, wake times, command times and usage buckets."""


def _ids() -> UlidSource:
    return UlidSource(FixedClock(T0).now)


class _Run:
    """One run as its owner writes it: chain head, projection row and fence token."""

    def __init__(self, run_id: str, ids: UlidSource, *, status: str = "running",
                 swarm: str | None = None, wake_at: float | None = None, name: str | None = None,
                 created: float = T0) -> None:
        self.ids = ids
        self.chain = Chain(run_id)
        self.fence: int | None = None
        self.row = RunRow(
            id=run_id, name=name or f"conform-{run_id[-6:].lower()}", agent="tests:agent",
            swarm=swarm, goal="pass the conformance suite", status=status, epoch=0, step=0,
            seq=0, head="", spec={"agent": "tests:agent", "workspace": None}, budget={},
            usage={}, wake_at=wake_at, created=created, updated=created)

    @property
    def id(self) -> str:
        return self.row.id

    def events(self, n: int, *, step: int, kind: str = "tool.called",
               causes: tuple[str, ...] = ()) -> tuple[Event, ...]:
        out = []
        for _ in range(n):
            seq = self.chain.seq + 1
            out.append(self.chain.make(
                id=self.ids.new(), kind=kind, time=iso(T0 + seq), epoch=self.row.epoch,
                step=step, actor="agent:conform", causes=causes,
                payload={"seq": seq, "text": f"event {seq} of {self.id}", "ok": True}))
        return tuple(out)

    def create(self, **fields: Any) -> Write:
        """The write that creates the run: run.started, the row, a step-0 keyframe."""
        events = self.events(1, step=0, kind="run.started")
        self.row = dataclasses.replace(self.row, seq=self.chain.seq, head=self.chain.head)
        fields.setdefault("checkpoint", (0, CheckpointEncoder(run=self.id).encode(
            0, {"goal": self.row.goal}, force_key=True)))
        return Write(run=self.id, fence=None, events=events, run_row=self.row,
                     swarm=self.row.swarm, **fields)

    def write(self, n: int = 1, *, step: int | None = None, kind: str = "tool.called",
              **fields: Any) -> Write:
        """The next fenced write: ``n`` events of ``step`` and the row that follows them."""
        step = self.row.step + 1 if step is None else step
        events = self.events(n, step=step, kind=kind)
        self.row = dataclasses.replace(self.row, seq=self.chain.seq, head=self.chain.head,
                                       step=step if n else self.row.step)
        fields.setdefault("swarm", self.row.swarm)
        return Write(run=self.id, fence=self.fence, events=events, run_row=self.row, **fields)

    def emit(self, kind: str, payload: Any = None, *, step: int | None = None,
             causes: tuple[str, ...] = (), **fields: Any) -> Write:
        """The next fenced write: one event of ``kind`` with this payload and these causes."""
        step = self.row.step + 1 if step is None else step
        seq = self.chain.seq + 1
        e = self.chain.make(id=self.ids.new(), kind=kind, time=iso(T0 + seq),
                            epoch=self.row.epoch, step=step, actor="agent:conform",
                            causes=causes, payload={"seq": seq} if payload is None else payload)
        self.row = dataclasses.replace(self.row, seq=self.chain.seq, head=self.chain.head,
                                       step=step)
        fields.setdefault("swarm", self.row.swarm)
        return Write(run=self.id, fence=self.fence, events=(e,), run_row=self.row, **fields)

    def rewind(self, store: Store) -> None:
        """Forget writes the store refused: continue from the stored row."""
        row = store.get_run(self.id)
        assert row is not None
        self.row, self.chain = row, Chain(self.id, row.seq, row.head)


def _started(store: Store, ids: UlidSource, **row: Any) -> _Run:
    r = _Run(ids.new(), ids, **row)
    assert store.commit([r.create()]) == [None]
    return r


def _owned(store: Store, ids: UlidSource, owner: str = "w1", **row: Any) -> _Run:
    r = _started(store, ids, **row)
    r.fence = store.acquire(r.id, owner, 60, time.time())
    assert r.fence is not None
    return r


# -- creating runs -----------------------------------------------------------

def test_commit_of_a_new_run_creates_events_row_and_checkpoint(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    r = _Run(ids.new(), ids, name="triage")
    w = r.create()
    assert store.commit([w]) == [None]

    assert store.get_run(r.id) == r.row
    assert store.events(r.id) == list(w.events)
    got = store.event(w.events[0].id)
    assert got is not None
    assert dataclasses.replace(got, prev=w.events[0].prev) == w.events[0]
    assert w.checkpoint is not None
    ck = w.checkpoint[1]
    chain = store.checkpoint_chain(r.id, 0, 0)
    assert chain is not None
    assert (chain.key_step, chain.key_body, chain.deltas) == (0, ck.body, [])
    assert store.checkpoint_steps(r.id, 0) == [(0, "key", len(ck.body))]
    assert store.all_run_ids() == [r.id]


def test_second_create_of_a_run_is_refused_while_the_rest_of_the_batch_commits(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    first = _started(store, ids)
    before = store.events(first.id)
    again, other = _Run(first.id, ids), _Run(ids.new(), ids)

    results = store.commit([again.create(), other.create()])

    assert isinstance(results[0], UsageError)
    assert first.id in str(results[0])
    assert results[1] is None
    assert store.events(first.id) == before
    assert store.get_run(first.id) == first.row
    assert [e.seq for e in store.events(other.id)] == [1]
    assert list(store.batches())[-1].entries == ((other.id, 1, 1),)


def test_get_list_and_find_runs(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a = _started(store, ids, name="alpha", swarm="s1", created=T0)
    b = _started(store, ids, name="beta", status="paused", created=T0 + 1)
    c = _started(store, ids, name="gamma", swarm="s1", status="paused", created=T0 + 2)

    assert store.get_run("nope") is None
    assert [x.id for x in store.list_runs()] == [c.id, b.id, a.id]
    assert [x.id for x in store.list_runs(status="paused")] == [c.id, b.id]
    assert [x.id for x in store.list_runs(swarm="s1")] == [c.id, a.id]
    assert [x.id for x in store.list_runs(status="paused", swarm="s1")] == [c.id]
    assert store.find_runs("beta") == [b.id]
    assert store.find_runs(b.id) == [b.id]
    assert b.id in store.find_runs(b.id[:12])
    assert b.id in store.find_runs(b.id[:12].lower())
    assert store.find_runs("nothing-like-this") == []
    assert sorted(store.all_run_ids()) == sorted([a.id, b.id, c.id])


def test_lookups_refuse_what_cannot_be_bound(store_factory: StoreFactory) -> None:
    """An id that is not UTF-8 (a lone surrogate, as argv bytes that are not UTF-8 decode)
    or a number beyond 64 bits is a UsageError, not a codec's or SQLite's OverflowError."""
    store, ids = store_factory(), _ids()
    a = _started(store, ids, name="alpha", created=T0)
    for lookup in (lambda: store.get_run("run\udcff"), lambda: store.find_runs("\ud800"),
                   lambda: store.approval("\udcff"), lambda: store.effect("\udcff"),
                   lambda: store.events(a.id, after_seq=2**64),
                   lambda: store.events(a.id, limit=2**64), lambda: store.events("\udcff")):
        with pytest.raises(UsageError):
            lookup()


@pytest.mark.parametrize("pattern", ["_", "%", "%%", "_%", "0_", "%FE", "\\", "[0-9]*", "*"])
def test_find_runs_matches_prefixes_literally(store_factory: StoreFactory, pattern: str) -> None:
    """LIKE and GLOB metacharacters in a prefix are plain characters: ``tether stop _`` must not
    stop the only run of a store, nor ``%FE`` find a run by the end of its id."""
    store, ids = store_factory(), _ids()
    a = _started(store, ids, name="alpha", created=T0)
    assert store.find_runs(pattern) == []
    assert store.find_runs(a.id[:3] + "_") == []
    assert store.find_runs("%" + a.id[-2:]) == []
    assert store.find_runs(a.id[:3]) == [a.id]


# -- leases and fencing --------------------------------------------------------

def test_acquire_returns_increasing_tokens_and_a_live_lease_blocks_others(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    r = _started(store, ids)
    now = time.time()
    assert store.lease_of(r.id) is None

    t1 = store.acquire(r.id, "w1", 30, now)
    assert t1 is not None
    assert store.lease_of(r.id) == ("w1", t1, now + 30)
    assert store.acquire(r.id, "w2", 30, now + 29) is None
    assert store.lease_of(r.id) == ("w1", t1, now + 30)

    t2 = store.acquire(r.id, "w2", 30, now + 31)  # expired: taken over
    assert t2 is not None
    assert t2 > t1
    assert store.lease_of(r.id) == ("w2", t2, now + 61)
    assert store.acquire(r.id, "w1", 30, now + 40) is None
    t3 = store.acquire(r.id, "w3", 30, now + 100)
    assert t3 is not None
    assert t3 > t2


def test_release_frees_the_lease_and_keeps_tokens_monotonic(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    r = _started(store, ids)
    now = time.time()
    t1 = store.acquire(r.id, "w1", 60, now)
    assert t1 is not None
    store.release(r.id, "w1", t1)

    t2 = store.acquire(r.id, "w2", 60, now)
    assert t2 is not None
    assert t2 > t1
    store.release(r.id, "w1", t1)  # no longer ours: a no-op
    store.release(r.id, "w2", t2 - 1)  # a token w2 does not hold: a no-op
    assert store.acquire(r.id, "w3", 60, now) is None
    assert store.lease_of(r.id) == ("w2", t2, now + 60)

    store.release(r.id, "w2", t2)
    t3 = store.acquire(r.id, "w1", 60, now)
    assert t3 is not None
    assert t3 > t2


def test_renew_extends_held_leases_and_reports_lost_ones(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b, never = _started(store, ids), _started(store, ids), _started(store, ids)
    now = time.time()
    ta = store.acquire(a.id, "w1", 100, now)
    tb = store.acquire(b.id, "w1", 10, now)
    assert ta is not None
    assert tb is not None
    tb2 = store.acquire(b.id, "w2", 10, now + 11)
    assert tb2 is not None

    lost = store.renew({a.id: ta, b.id: tb, never.id: 1}, "w1", 100, now + 12)

    assert sorted(lost) == sorted([b.id, never.id])
    assert store.lease_of(a.id) == ("w1", ta, now + 112)
    assert store.lease_of(b.id) == ("w2", tb2, now + 21)
    assert store.lease_of(never.id) is None
    assert store.renew({}, "w1", 100, now) == []


def test_a_renewal_racing_a_release_does_not_bring_the_lease_back(
        store_factory: StoreFactory) -> None:
    # The heartbeat read its leases, then the run ended and released its lease, then the
    # renewal ran: the lease stays released, so the run is runnable at once (not in 30 s).
    store, ids = store_factory(), _ids()
    a = _started(store, ids)
    now = time.time()
    token = store.acquire(a.id, "w1", 30, now)
    assert token is not None
    store.release(a.id, "w1", token)
    assert store.renew({a.id: token}, "w1", 30, now + 1) == [a.id]
    assert a.id in store.runnable(now + 1, 10, lease_now=now + 1)


def test_write_with_a_stale_fence_gets_lease_lost_and_writes_nothing(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    r = _started(store, ids, swarm="s1")
    now = time.time()
    r.fence = store.acquire(r.id, "w1", 10, now)
    assert store.commit([r.write(2, step=1)]) == [None]
    taken = store.acquire(r.id, "w2", 10, now + 11)
    assert taken is not None
    cmd = store.add_command(r.id, "pause", {}, "human:ann", T0)
    events, row, batches = store.events(r.id), store.get_run(r.id), list(store.batches())
    steps = store.checkpoint_steps(r.id, 0)

    enc = CheckpointEncoder(run=r.id)
    effect = EffectRow(id=ids.new(), run=r.id, epoch=0, step=2, idx=0, tool="send", effect="irreversible",
                       idempotent=False, key="k", status="intent", arguments={}, updated=T0)
    stale = r.write(3, step=2, checkpoint=(0, enc.encode(2, {"x": 1}, force_key=True)),
                    effects=(effect,), usage=UsageDelta(int(T0 // 60), {"steps": 1}),
                    commands_applied=(cmd,))
    other = _Run(ids.new(), ids)
    results = store.commit([stale, other.create()])

    assert isinstance(results[0], LeaseLost)
    assert r.id in str(results[0])
    assert results[1] is None
    assert store.events(r.id) == events
    assert store.get_run(r.id) == row
    assert store.checkpoint_steps(r.id, 0) == steps
    assert store.effects(run=r.id) == []
    assert [c.id for c in store.pending_commands([r.id])] == [cmd]
    assert store.usage_since(run=r.id, since=0)["steps"] == 0
    assert store.lease_of(r.id) == ("w2", taken, now + 21)
    assert list(store.batches())[:-1] == batches
    assert list(store.batches())[-1].entries == ((other.id, 1, 1),)


def test_fenced_write_to_an_unleased_or_unknown_run_is_refused(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    r = _started(store, ids)
    r.fence = 1  # never acquired
    ghost = _Run(ids.new(), ids)
    ghost.fence = 1

    results = store.commit([r.write(1), ghost.write(1)])

    assert isinstance(results[0], LeaseLost)
    assert isinstance(results[1], NotFound)
    assert [e.seq for e in store.events(r.id)] == [1]
    assert store.events(ghost.id) == []


@pytest.mark.parametrize("offset", [-1, 1, 5], ids=["replayed-seq", "gap-of-one", "gap-of-five"])
def test_write_whose_first_seq_does_not_follow_the_run_gets_lease_lost(
        store_factory: StoreFactory, offset: int) -> None:
    store, ids = store_factory(), _ids()
    r = _owned(store, ids)
    assert store.commit([r.write(3, step=1)]) == [None]
    before, row = store.events(r.id), store.get_run(r.id)
    assert row is not None

    r.chain = Chain(r.id, row.seq + offset, row.head)
    results = store.commit([r.write(1, step=2)])

    assert isinstance(results[0], LeaseLost)
    assert r.id in str(results[0])
    assert store.events(r.id) == before
    assert store.get_run(r.id) == row


def test_the_new_owner_continues_the_chain(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    r = _owned(store, ids)
    assert store.commit([r.write(2, step=1)]) == [None]
    row = store.get_run(r.id)
    assert row is not None
    # Another process takes over from the stored row alone, as a worker after a crash.
    heir = _Run(r.id, ids)
    heir.row, heir.chain = row, Chain(r.id, row.seq, row.head)
    heir.fence = store.acquire(r.id, "w2", 60, time.time() + 120)

    assert store.commit([heir.write(2, step=2)]) == [None]
    assert [e.seq for e in store.events(r.id)] == [1, 2, 3, 4, 5]
    assert store.events(r.id, after_seq=3)[0].prev == store.events(r.id)[2].hash


# -- scheduling ----------------------------------------------------------------

def test_runnable_returns_running_and_due_runs_that_no_live_owner_holds(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    assert store.next_wake() is None
    now = T0 + 1000
    running = _started(store, ids)
    due = _started(store, ids, status="sleeping", wake_at=now - 5)
    due_now = _started(store, ids, status="sleeping", wake_at=now)
    _started(store, ids, status="sleeping", wake_at=now + 60)
    for status in ("paused", "awaiting_approval", "stopped", "failed", "done"):
        _started(store, ids, status=status)
    _owned(store, ids)  # held by a live owner
    expired = _started(store, ids)
    assert store.acquire(expired.id, "w1", 10, time.time() - 100) is not None
    released = _started(store, ids)
    token = store.acquire(released.id, "w1", 60, time.time())
    assert token is not None
    store.release(released.id, "w1", token)

    got = store.runnable(now, 100)

    assert sorted(got) == sorted([running.id, due.id, due_now.id, expired.id, released.id])
    assert len(store.runnable(now, 2)) == 2
    assert store.next_wake() == now - 5


def test_held_by_others_is_the_runs_a_worker_drives_under_another_live_owner(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    now = time.time()
    assert store.held_by_others("w1", now) == []
    theirs = [_owned(store, ids, "w2"), _owned(store, ids, "w3", status="sleeping"),
              _owned(store, ids, "w2", status="waiting")]
    mine = _owned(store, ids, "w1")
    for status in ("paused", "awaiting_approval", "stopped", "failed", "done"):
        _owned(store, ids, "w2", status=status)  # no worker would drive them
    expired = _started(store, ids)
    assert store.acquire(expired.id, "w2", 10, now - 100) is not None
    released = _owned(store, ids, "w2")
    assert released.fence is not None
    store.release(released.id, "w2", released.fence)

    assert store.held_by_others("w1", now) == sorted(r.id for r in theirs)
    assert store.held_by_others("w2", now) == sorted([theirs[1].id, mine.id])
    assert store.held_by_others("w1", now + 3600) == []  # every lease expired by then


# -- commands ------------------------------------------------------------------

def test_commands_are_pending_oldest_first_until_a_commit_applies_them(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids), _owned(store, ids)
    c1 = store.add_command(a.id, "pause", {"reason": "look at it"}, "human:ann", T0 + 1)
    c2 = store.add_command(b.id, "resume", {}, "human:bob", T0 + 2)
    c3 = store.add_command(a.id, "stop", {}, "human:ann", T0 + 3)
    assert c1 < c2 < c3

    pending = store.pending_commands()
    assert [c.id for c in pending] == [c1, c2, c3]
    assert pending[0] == Command(c1, a.id, "pause", {"reason": "look at it"}, "human:ann", T0 + 1)
    assert [c.id for c in store.pending_commands([a.id])] == [c1, c3]
    assert [c.id for c in store.pending_commands([a.id, b.id])] == [c1, c2, c3]
    # As many runs as a worker polls for (more than a store may ask for by id).
    many = [f"no-such-run-{i}" for i in range(500)] + [b.id, a.id]
    assert [c.id for c in store.pending_commands(many)] == [c1, c2, c3]
    assert [c.id for c in store.pending_commands(many[:-1])] == [c2]
    assert store.pending_commands([]) == []

    assert store.commit([a.write(1, kind="command", commands_applied=(c1,))]) == [None]
    assert [c.id for c in store.pending_commands()] == [c2, c3]
    assert store.commit([a.write(0, commands_applied=(c3,)), b.write(0, commands_applied=(c2,))]) \
        == [None, None]
    assert store.pending_commands() == []


def test_a_keyed_command_is_queued_once_applied_or_not(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a = _owned(store, ids)
    c1 = store.add_command(a.id, "pause", {"alert": "A"}, "system:monitor", T0, key="alert:A")
    assert store.add_command(a.id, "pause", {"alert": "A"}, "system:monitor", T0 + 1,
                             key="alert:A") == c1
    assert [c.id for c in store.pending_commands([a.id])] == [c1]
    assert store.commit([a.write(1, kind="command", commands_applied=(c1,))]) == [None]
    assert store.add_command(a.id, "pause", {"alert": "A"}, "system:monitor", T0 + 2,
                             key="alert:A") == c1
    assert store.pending_commands([a.id]) == []
    c2 = store.add_command(a.id, "stop", {}, "human:ann", T0 + 3)
    c3 = store.add_command(a.id, "stop", {}, "human:ann", T0 + 4)
    assert c1 < c2 < c3  # unkeyed commands are never merged


# -- effects -------------------------------------------------------------------

def test_effects_are_upserted_and_queried_by_run_and_status(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids), _owned(store, ids)
    write_a = a.write(1, kind="effect.intent")
    send_a = a.write(1, kind="effect.intent")
    write_b = b.write(1, kind="effect.intent")
    fs = EffectRow(id=write_a.events[0].id, run=a.id, epoch=0, step=1, idx=0, tool="fs_write",
                   effect="reversible", idempotent=False, key="k-fs", status="intent",
                   arguments={"path": "notes.md", "text": "hello"}, updated=T0)
    mail = EffectRow(id=send_a.events[0].id, run=a.id, epoch=0, step=2, idx=0, tool="send_mail",
                     effect="irreversible", idempotent=True, key="k-mail", status="intent",
                     arguments={"to": "ops@example.com"}, updated=T0)
    other = EffectRow(id=write_b.events[0].id, run=b.id, epoch=0, step=1, idx=0, tool="fs_write",
                      effect="reversible", idempotent=False, key="k-b", status="intent",
                      arguments={}, updated=T0)
    assert store.commit([dataclasses.replace(write_a, effects=(fs,)),
                         dataclasses.replace(write_b, effects=(other,))]) == [None, None]
    assert store.commit([dataclasses.replace(send_a, effects=(mail,))]) == [None]

    done = dataclasses.replace(fs, status="done", result={"bytes": 5},
                               undo={"tool": "fs_restore", "arguments": {"path": "notes.md"}},
                               updated=T0 + 1)
    assert store.commit([a.write(1, kind="effect.done", effects=(done,))]) == [None]

    assert store.effect(fs.id) == done
    assert store.effect(mail.id) == mail
    assert store.effect("no-such-effect") is None
    assert store.effects(run=a.id) == [done, mail]
    assert store.effects(status="intent") == [mail, other]
    assert store.effects(run=a.id, status="done") == [done]
    assert store.effects() == [done, mail, other]


# -- checkpoints and chunks ----------------------------------------------------

def _checkpointed(store: Store, ids: UlidSource, states: list[dict[str, Any]], *,
                  keyframe_every: int, chunk_items: int) -> tuple[_Run, list[Checkpoint]]:
    """A run whose step ``s`` checkpoints ``states[s]``, one commit per step."""
    enc = CheckpointEncoder(keyframe_every=keyframe_every, chunk_items=chunk_items)
    r = _Run(ids.new(), ids)
    cks = [enc.encode(0, states[0])]
    assert store.commit([r.create(checkpoint=(0, cks[0]))]) == [None]
    r.fence = store.acquire(r.id, "w1", 60, time.time())
    for step, state in enumerate(states[1:], start=1):
        cks.append(enc.encode(step, state))
        assert store.commit([r.write(1, step=step, kind="step.finished",
                                     checkpoint=(0, cks[-1]))]) == [None]
    return r, cks


def test_checkpoint_chain_is_the_latest_keyframe_at_or_before_a_step_plus_deltas(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    states = [{"msgs": [f"m{i}" for i in range(step * 2)], "step": step} for step in range(9)]
    r, cks = _checkpointed(store, ids, states, keyframe_every=3, chunk_items=2)
    assert [c.kind for c in cks] == ["key", "delta", "delta"] * 3

    for step, state in enumerate(states):
        chain = store.checkpoint_chain(r.id, 0, step)
        assert chain is not None
        key_step = step - step % 3
        assert chain.key_step == key_step
        assert chain.key_body == cks[key_step].body
        assert chain.deltas == [c.body for c in cks[key_step + 1:step + 1]]
        assert restore(chain.key_body, store.chunk, chain.deltas) == state
    assert store.checkpoint_steps(r.id, 0) == [(c.step, c.kind, len(c.body)) for c in cks]
    assert store.checkpoint_chain(r.id, 1, 5) is None
    assert store.checkpoint_chain("no-such-run", 0, 5) is None


def test_checkpoints_of_another_epoch_are_kept_apart(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    states = [{"n": step} for step in range(5)]
    r, _ = _checkpointed(store, ids, states, keyframe_every=10, chunk_items=2)
    # A rollback to step 2 starts epoch 1 there, with its own keyframe.
    r.row = dataclasses.replace(r.row, epoch=1, step=2)
    rolled = CheckpointEncoder().encode(3, {"n": 3, "rolled": True}, force_key=True)
    assert store.commit([r.write(1, step=3, checkpoint=(1, rolled))]) == [None]

    chain1 = store.checkpoint_chain(r.id, 1, 4)
    assert chain1 is not None
    assert (chain1.key_step, chain1.key_body, chain1.deltas) == (3, rolled.body, [])
    assert store.checkpoint_chain(r.id, 1, 2) is None
    chain0 = store.checkpoint_chain(r.id, 0, 4)
    assert chain0 is not None
    assert restore(chain0.key_body, store.chunk, chain0.deltas) == {"n": 4}
    assert [s for s, _, _ in store.checkpoint_steps(r.id, 1)] == [3]


def test_chunks_are_stored_once_and_shared(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    shared = {"msgs": [{"role": "user", "content": f"message {i}"} for i in range(8)]}
    ck_a = CheckpointEncoder(chunk_items=4).encode(0, shared)
    ck_b = CheckpointEncoder(chunk_items=4).encode(0, shared)
    assert len(ck_a.chunks) == 2
    assert ck_a.chunks == ck_b.chunks
    a, b, c = _Run(ids.new(), ids), _Run(ids.new(), ids), _Run(ids.new(), ids)

    # The same chunk twice in one transaction, then again in a later one.
    assert store.commit([a.create(checkpoint=(0, ck_a)), b.create(checkpoint=(0, ck_b))]) \
        == [None, None]
    assert store.commit([c.create(checkpoint=(0, ck_a))]) == [None]

    for h, body in ck_a.chunks:
        assert store.chunk(h) == body
    for run in (a, b, c):
        chain = store.checkpoint_chain(run.id, 0, 0)
        assert chain is not None
        assert restore(chain.key_body, store.chunk, chain.deltas) == shared
    with pytest.raises(StoreCorrupt, match="0" * 64):
        store.chunk("0" * 64)


# -- usage and budgets ---------------------------------------------------------

def test_usage_since_sums_minute_buckets_in_the_window_by_run_and_by_swarm(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    b0 = int(T0 // 60)
    a = _owned(store, ids, swarm="s1")
    b = _owned(store, ids, swarm="s1")
    loner = _owned(store, ids)
    for run, bucket, counts in [
        (a, b0, {"steps": 1, "cost_usd": 0.5}),
        (a, b0, {"steps": 1, "input_tokens": 100}),  # same minute: added up
        (a, b0 + 1, {"steps": 1, "cost_usd": 0.25, "wall_seconds": 2.5}),
        (a, b0 + 10, {"steps": 1, "tool_calls": 3}),
        (b, b0 + 1, {"steps": 1, "cost_usd": 1.0, "output_tokens": 7}),
        (loner, b0 + 1, {"steps": 5}),
    ]:
        assert store.commit([run.write(1, usage=UsageDelta(bucket, counts))]) == [None]

    def usage(**kw: Any) -> dict[str, float]:
        got = store.usage_since(**kw)
        assert set(got) == set(USAGE_KEYS)
        return {k: v for k, v in got.items() if v}

    assert usage(run=a.id, since=b0 * 60) == pytest.approx(
        {"steps": 4, "cost_usd": 0.75, "input_tokens": 100, "wall_seconds": 2.5, "tool_calls": 3})
    assert usage(run=a.id, since=(b0 + 1) * 60) == pytest.approx(
        {"steps": 2, "cost_usd": 0.25, "wall_seconds": 2.5, "tool_calls": 3})
    assert usage(run=a.id, since=(b0 + 2) * 60) == {"steps": 1, "tool_calls": 3}
    assert usage(run=a.id, since=(b0 + 11) * 60) == {}
    assert usage(swarm="s1", since=(b0 + 1) * 60) == pytest.approx(
        {"steps": 3, "cost_usd": 1.25, "wall_seconds": 2.5, "tool_calls": 3, "output_tokens": 7})
    assert usage(swarm="nobody", since=0) == {}
    lifetime = {k: v for k, v in store.swarm_usage("s1").items() if v}
    assert lifetime == pytest.approx({"steps": 5, "cost_usd": 1.75, "input_tokens": 100,
                                      "output_tokens": 7, "wall_seconds": 2.5, "tool_calls": 3})
    with pytest.raises(UsageError):
        store.usage_since(run=a.id, swarm="s1", since=0)


def _swarm_setting(store: Store, swarm: str, field: str, value: dict[str, Any], n: int) -> None:
    store.append_store_event(f"swarm.{field}", f"swarm:{swarm}", {field: value},
                             actor="human:ops", time=f"2026-01-01T00:00:0{n}.000000Z",
                             id=f"01J00000000000000000000{n:03d}")


def test_swarm_budget_is_set_and_replaced(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.swarm_budget("s1") == {}
    _swarm_setting(store, "s1", "budget", {"cost_usd_per_day": 5.0, "steps": 100.0}, 1)
    assert store.swarm_budget("s1") == {"cost_usd_per_day": 5.0, "steps": 100.0}
    _swarm_setting(store, "s1", "pause_points", {"every_steps": 3}, 2)
    _swarm_setting(store, "s1", "budget", {"steps": 10.0}, 3)
    assert store.swarm_budget("s1") == {"steps": 10.0}
    assert store.swarm_pause_points("s1") == {"every_steps": 3}  # one field, not the other
    assert store.swarm_budget("s2") == {}
    # Every change is in the store chain with who made it, and the rows are its projection.
    chain = [(e.kind, e.scope, e.actor) for e in store.store_events()]
    assert chain == [("swarm.budget", "swarm:s1", "human:ops"),
                     ("swarm.pause_points", "swarm:s1", "human:ops"),
                     ("swarm.budget", "swarm:s1", "human:ops")]
    assert store.swarm_rows() == {"s1": {"budget": {"steps": 10.0},
                                         "pause_points": {"every_steps": 3}}}


def test_a_swarm_setting_needs_a_swarm_scope_and_its_field(store_factory: StoreFactory) -> None:
    store = store_factory()
    for scope, payload in (("store", {"budget": {}}), ("swarm:s1", {"steps": 1}),
                           ("swarm:s1", {"budget": 5})):
        with pytest.raises(ValueError, match=r"swarm\.budget"):
            store.append_store_event("swarm.budget", scope, payload, actor="human:ops",
                                     time="2026-01-01T00:00:01.000000Z",
                                     id="01J00000000000000000000001")
    assert store.store_events() == [] and store.swarm_rows() == {}


def _token_event(store: Store, kind: str, payload: dict[str, Any], n: int) -> None:
    store.append_store_event(kind, "store", payload, actor="human:root",
                             time=f"2026-01-01T00:00:0{n}.000000Z",
                             id=f"01J00000000000000000000{n:03d}")


def test_token_rows_are_the_projection_of_their_store_events(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.tokens() == [] and store.token_by_hash("ab" * 32) is None
    made = {"token": "01J00000000000000000000001", "name": "ada", "role": "operator",
            "hash": "ab" * 32}
    _token_event(store, "token.created", made, 1)
    (t,) = store.tokens()
    assert (t.id, t.name, t.role.label, t.hash, t.created, t.created_by, t.revoked) == (
        made["token"], "ada", "operator", "ab" * 32, "2026-01-01T00:00:01.000000Z",
        "human:root", None)
    assert store.token_by_hash("ab" * 32) == t and store.token_by_hash("not hex") is None
    # A valid token's name is taken: refused, and nothing is appended.
    with pytest.raises(UsageError, match="a token named 'ada' exists already"):
        _token_event(store, "token.created", {**made, "token": "01J00000000000000000000002",
                                              "hash": "cd" * 32}, 2)
    with pytest.raises(NotFound, match="no token with id"):
        _token_event(store, "token.revoked", {"token": "01NOPE", "name": "x"}, 2)
    assert len(store.store_events()) == 1
    _token_event(store, "token.revoked", {"token": made["token"], "name": "ada"}, 2)
    (t,) = store.tokens()
    assert (t.revoked, t.revoked_by) == ("2026-01-01T00:00:02.000000Z", "human:root")
    with pytest.raises(UsageError, match="revoked already"):
        _token_event(store, "token.revoked", {"token": made["token"], "name": "ada"}, 3)
    # Revoked, its name is free again.
    _token_event(store, "token.created", {**made, "token": "01J00000000000000000000003",
                                          "hash": "cd" * 32}, 3)
    assert [x.active for x in store.tokens()] == [False, True]
    assert [x.id for x in store.tokens(active=True)] == ["01J00000000000000000000003"]
    assert [x.id for x in store.tokens(limit=1)] == [made["token"]]
    assert [e.kind for e in store.store_events()] == ["token.created", "token.revoked",
                                                      "token.created"]


def test_meta_keeps_application_values(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.get_meta("demo.clock") is None
    store.set_meta("demo.clock", "1700000000.5")
    store.set_meta("other", "x")
    assert store.get_meta("demo.clock") == "1700000000.5"
    store.set_meta("demo.clock", "1700003600")
    assert store.get_meta("demo.clock") == "1700003600"
    assert store.get_meta("other") == "x"


# -- reading events ------------------------------------------------------------

def test_events_after_seq_with_limit_link_to_their_predecessor(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    r = _owned(store, ids)
    for step in (1, 2, 3):
        assert store.commit([r.write(3, step=step)]) == [None]
    every = store.events(r.id)
    assert [e.seq for e in every] == list(range(1, 11))
    assert every[0].prev == Chain(r.id).head
    assert all(e.prev == p.hash for p, e in itertools.pairwise(every))

    page = store.events(r.id, after_seq=3, limit=4)
    assert page == every[3:7]
    assert store.events(r.id, after_seq=8) == every[8:]
    assert store.events(r.id, after_seq=10) == []
    assert store.events(r.id, limit=2) == every[:2]
    assert store.events("no-such-run") == []
    assert store.event("no-such-event") is None


def test_chain_rows_are_every_run_s_events_as_stored_in_seq_order(
        store_factory: StoreFactory) -> None:
    """What the audit reads in bulk: each run's events in seq order, runs not interleaved,
    fields as events() gives them, the payload as its canonical bytes, then erased."""
    store, ids = store_factory(), _ids()
    assert list(store.chain_rows()) == []
    a, b = _owned(store, ids), _owned(store, ids)
    for step in (1, 2):
        assert store.commit([a.write(2, step=step), b.write(3, step=step)]) == [None, None]
    rows = list(store.chain_rows())
    runs = [r[0] for r in rows]
    assert sorted(set(runs)) == sorted((a.id, b.id))
    assert runs == sorted(runs, key=runs.index)  # one run after the other
    for run in (a.id, b.id):
        mine = [r for r in rows if r[0] == run]
        events = store.events(run)
        assert [r[1] for r in mine] == [e.seq for e in events]
        for r, e in zip(mine, events, strict=True):
            assert r[2:8] == (e.id, e.epoch, e.step, e.kind, e.time, e.actor)
            assert tuple(orjson.loads(r[8])) == e.causes
            assert r[9] == orjson.dumps(e.payload, option=orjson.OPT_SORT_KEYS)
            assert (r[10] or hashlib.sha256(r[9] or b"").hexdigest()) == e.payload_hash
            assert (r[11], r[12], r[13]) == (e.hash, e.seal, None)
    gone = store.events(a.id)[1]
    store.erase_payload(gone.id)
    erased = next(r for r in store.chain_rows() if r[2] == gone.id)
    assert (erased[9], erased[10], erased[11]) == (None, gone.payload_hash, gone.hash)


def test_chain_rows_parts_tile_the_whole_in_order_by_whole_runs(
        store_factory: StoreFactory) -> None:
    """What verify's helper process walks (part) and what it compares (size, mark, url)."""
    store, ids = store_factory(), _ids()
    assert store.chain_size() == 0
    empty = store.snapshot_mark()
    runs = [_owned(store, ids) for _ in range(5)]
    for step in (1, 2):
        assert store.commit([r.write(1 + i, step=step) for i, r in enumerate(runs)]) == \
            [None] * 5
    whole = list(store.chain_rows())
    assert store.chain_size() == len(whole) == 35  # with each run.started
    for cuts in ((0.5,), (0.1, 0.45, 0.9), (0.0, 0.99), (0.3, 0.3)):
        bounds = [0.0, *cuts, 1.0]
        parts = [list(store.chain_rows(part=(a, b))) for a, b in itertools.pairwise(bounds)]
        assert [r for p in parts for r in p] == whole
        for p, q in itertools.pairwise(parts):  # a run is never split between parts
            assert not {r[0] for r in p} & {r[0] for r in q}
    assert list(store.chain_rows(part=(0.5, 1.0)))  # the later half is not empty
    mark = store.snapshot_mark()
    assert mark != empty and store.snapshot_mark() == mark
    assert store.commit([runs[0].write(1, step=3)]) == [None]
    assert store.snapshot_mark() != mark  # a commit moves it
    assert store.reader_url()


def test_events_in_window_are_by_time_across_runs_and_filtered(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    assert store.latest_event_time() is None and store.events_in_window(None, None) == []
    a, b = _owned(store, ids), _owned(store, ids)
    for step in (1, 2):  # each event's time is T0 + its seq (see _Run.events)
        assert store.commit([a.write(2, step=step), b.write(1, step=step)]) == [None, None]
    every = store.events_in_window(None, None)
    assert len(every) == 5 + 3
    assert [(e.time, e.run, e.seq) for e in every] == sorted(
        (e.time, e.run, e.seq) for e in [*store.events(a.id), *store.events(b.id)])
    assert store.latest_event_time() == T0 + 5
    # [since, until): T0 + 2 and T0 + 3 only
    window = store.events_in_window(T0 + 2, T0 + 4)
    assert sorted((e.run, e.seq) for e in window) == sorted(
        [(a.id, 2), (a.id, 3), (b.id, 2), (b.id, 3)])
    assert all(e == store.event(e.id) for e in window)
    assert {e.run for e in store.events_in_window(T0 + 2, T0 + 4, runs=[b.id])} == {b.id}
    assert store.events_in_window(None, None, runs=["no-such-run"]) == []
    assert [e.kind for e in store.events_in_window(None, None, kinds=["run.started"])] == [
        "run.started", "run.started"]
    assert store.events_in_window(None, None, kinds=[]) == []
    assert store.events_in_window(None, None, limit=3) == every[:3]


def test_latest_batch_grows_with_every_commit_of_events(store_factory: StoreFactory) -> None:
    """The cheap change signal the web UI polls: 0 for a new store, one more per commit."""
    store, ids = store_factory(), _ids()
    assert store.latest_batch() == 0
    a = _owned(store, ids)
    first = store.latest_batch()
    assert first >= 1
    assert store.commit([a.write(2, step=1)]) == [None]
    assert store.latest_batch() == first + 1
    assert store.latest_batch() == max(b.n for b in store.batches())


def test_tail_events_are_the_in_flight_step_at_the_end_of_the_chain(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    r = _owned(store, ids)
    assert store.commit([r.write(3, step=1)]) == [None]
    in_flight = r.write(2, step=2)
    assert store.commit([in_flight]) == [None]

    def tail(epoch: int, step: int) -> list[tuple[int, str, str]]:
        return [(e.seq, e.id, e.hash) for e in store.tail_events(r.id, epoch, step)]

    assert tail(0, 2) == [(e.seq, e.id, e.hash) for e in in_flight.events]
    assert tail(0, 1) == []  # not at the end of the chain
    assert tail(1, 2) == []
    # After a rollback the same step number comes back in a new epoch.
    r.row = dataclasses.replace(r.row, epoch=1)
    redo = r.write(2, step=2)
    assert store.commit([redo]) == [None]
    assert tail(1, 2) == [(e.seq, e.id, e.hash) for e in redo.events]
    assert tail(0, 2) == []
    assert store.tail_events("no-such-run", 0, 0) == []


# -- the batch chain -----------------------------------------------------------

def test_every_commit_with_events_appends_one_linked_batch(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    assert list(store.batches()) == []
    a, b = _Run(ids.new(), ids), _Run(ids.new(), ids)
    first = [a.create()]
    assert store.commit(first) == [None]
    a.fence = store.acquire(a.id, "w1", 60, time.time())
    second = [a.write(2, step=1), b.create()]
    assert store.commit(second) == [None, None]
    # Commits without events, or whose writes are all refused, add no batch.
    assert store.commit([a.write(0)]) == [None]
    assert store.commit([]) == []
    assert isinstance(store.commit([_Run(b.id, ids).create()])[0], UsageError)
    b.fence = store.acquire(b.id, "w1", 60, time.time())
    third = [b.write(1, step=1), a.write(1, step=2)]
    assert store.commit(third) == [None, None]

    batches = list(store.batches())
    assert [x.entries for x in batches] == [
        ((a.id, 1, 1),),
        ((a.id, 2, 3), (b.id, 1, 1)),
        ((b.id, 2, 2), (a.id, 4, 4)),
    ]
    assert batches[0].n < batches[1].n < batches[2].n
    prev = BATCH_GENESIS
    for batch, writes in zip(batches, [first, second, third], strict=True):
        assert batch.prev == prev
        assert batch.hash == batch_hash(prev, [(e.run, e.seq, e.hash) for w in writes
                                               for e in w.events])
        prev = batch.hash


# -- backup --------------------------------------------------------------------

def test_backup_is_a_readable_copy_and_refuses_an_existing_path(
        store_factory: StoreFactory, open_backup: Callable[[str], Store], tmp_path: Path) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids), _owned(store, ids)
    assert store.commit([a.write(3, step=1), b.write(2, step=1)]) == [None, None]
    assert store.commit([a.write(1, step=2)]) == [None]
    store.set_meta("demo.clock", "42")
    dest = tmp_path / "backup-of-store"

    store.backup(str(dest))
    assert store.commit([a.write(1, step=3)]) == [None]  # after the copy: not in it

    copy = open_backup(str(dest))
    assert copy.events(a.id) == store.events(a.id)[:-1]
    assert copy.events(b.id) == store.events(b.id)
    assert list(copy.batches()) == list(store.batches())[:-1]
    assert copy.get_run(b.id) == store.get_run(b.id)
    assert copy.get_meta("demo.clock") == "42"
    chain = copy.checkpoint_chain(a.id, 0, 0)
    assert chain is not None
    assert restore(chain.key_body, copy.chunk, chain.deltas) == {"goal": a.row.goal}

    taken = tmp_path / "taken"
    taken.write_bytes(b"keep me")
    for existing in (dest, taken):
        before = existing.read_bytes()
        with pytest.raises(UsageError, match="exists"):
            store.backup(str(existing))
        assert existing.read_bytes() == before


def test_reads_in_a_snapshot_see_the_store_as_it_was_on_entry(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a = _owned(store, ids)
    assert store.commit([a.write(2, step=1)]) == [None]
    results: list[list[BaseException | None]] = []
    late = a.write(1, step=2, checkpoint=(0, CheckpointEncoder(run=a.id).encode(
        2, {"n": 2}, force_key=True)))
    with store.snapshot():
        seen = store.events(a.id)
        # Another writer (a thread has a connection of its own) commits meanwhile.
        writer = threading.Thread(target=lambda: results.append(store.commit([late])))
        writer.start()
        writer.join()
        assert results == [[None]]
        assert store.events(a.id) == seen
        assert [s for s, _, _ in store.checkpoint_steps(a.id, 0)] == [0]
        assert len(list(store.batches())) == 2
        row = store.get_run(a.id)
        assert row is not None and (row.seq, row.head, row.step) == (3, seen[-1].hash, 1)
    assert len(store.events(a.id)) == 4  # and after it, the commit
    assert [s for s, _, _ in store.checkpoint_steps(a.id, 0)] == [0, 2]
    assert len(list(store.batches())) == 3


# -- swarm: messages -------------------------------------------------------------

def _send(sender: _Run, to: _Run, body: Any, *, topic: str | None = None,
          step: int | None = None) -> tuple[Write, MessageRow]:
    """A ``message.sent`` write from ``sender`` posting ``body`` to ``to`` (as ctx.send does)."""
    w = sender.emit("message.sent", {"to": to.id, "body": body}, step=step)
    e = w.events[0]
    m = MessageRow(id=e.id, swarm=sender.row.swarm, sender=sender.id, epoch=e.epoch,
                   step=e.step, recipient=to.id, topic=topic, body=body, created=T0 + e.seq)
    return dataclasses.replace(w, messages=(m,)), m


def _post(store: Store, sender: _Run, to: _Run, body: Any, **kw: Any) -> MessageRow:
    w, m = _send(sender, to, body, **kw)
    assert store.commit([w]) == [None]
    return m


def test_messages_are_posted_with_their_event_and_filtered(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b, c = (_owned(store, ids, swarm="s1") for _ in range(3))
    m1 = _post(store, a, b, {"task": "triage", "n": [1, 2]}, topic="work")
    m2 = _post(store, a, c, "hello c")
    m3 = _post(store, c, b, None)

    assert store.messages() == [m1, m2, m3]
    assert store.messages()[0].status == "pending"
    assert store.messages()[0].claim is None
    assert store.messages()[0].received is None
    assert store.messages(sender=a.id) == [m1, m2]
    assert store.messages(recipient=b.id) == [m1, m3]
    assert store.messages(sender=a.id, recipient=b.id) == [m1]
    assert store.messages(status="pending") == [m1, m2, m3]
    assert store.messages(status="delivered") == []
    assert store.messages(ids=[m3.id, m1.id]) == [m1, m3]
    assert store.messages(ids=[m3.id], recipient=c.id) == []
    assert store.messages(ids=[]) == []
    assert store.messages(recipient="no-such-run") == []
    # The message id is its message.sent event's id.
    got = store.event(m1.id)
    assert got is not None
    assert got.kind == "message.sent"


def test_a_message_exists_only_when_its_event_commits(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids), _owned(store, ids)
    taken = store.acquire(a.id, "w2", 60, time.time() + 120)
    assert taken is not None

    w, m = _send(a, b, "lost")
    results = store.commit([w])

    assert isinstance(results[0], LeaseLost)
    assert store.messages() == []
    assert store.event(m.id) is None
    assert store.claim_messages(b.id, b.fence or 0, "0:1:0", T0) == []


def test_claim_messages_takes_pending_oldest_first_and_is_idempotent_per_claim(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b, c = (_owned(store, ids, swarm="s1") for _ in range(3))
    m1, m2 = _post(store, a, b, "one"), _post(store, c, b, "two")
    for_c = _post(store, a, c, "not for b")
    assert b.fence is not None

    first = store.claim_messages(b.id, b.fence, "0:1:0", T0 + 50)

    assert [m.id for m in first] == [m1.id, m2.id]
    assert first[0] == dataclasses.replace(m1, status="delivered", claim="0:1:0",
                                           received=T0 + 50)
    assert [m.status for m in store.messages(recipient=b.id)] == ["delivered", "delivered"]
    assert store.messages(ids=[for_c.id])[0].status == "pending"  # another inbox
    # The same call again (a crash before its event committed): the same messages.
    assert store.claim_messages(b.id, b.fence, "0:1:0", T0 + 60) == first
    # Another call finds the inbox empty.
    assert store.claim_messages(b.id, b.fence, "0:1:1", T0 + 60) == []
    # The same call again after a new message arrived: what it took before, plus that.
    m3 = _post(store, a, b, "three")
    again = store.claim_messages(b.id, b.fence, "0:1:0", T0 + 70)
    assert [(m.id, m.claim) for m in again] == [(m1.id, "0:1:0"), (m2.id, "0:1:0"),
                                                (m3.id, "0:1:0")]
    assert again[:2] == first  # what was taken before is unchanged (received included)
    assert store.claim_messages(b.id, b.fence, "0:1:1", T0 + 70) == []
    assert store.messages(status="pending") == [for_c]


def test_claim_messages_limit_counts_what_the_call_took_before(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids), _owned(store, ids)
    m1, m2, m3 = (_post(store, a, b, n) for n in ("one", "two", "three"))
    assert b.fence is not None

    assert [m.id for m in store.claim_messages(b.id, b.fence, "0:1:0", T0, 1)] == [m1.id]
    # Re-run after a crash: still one message, the same one.
    assert [m.id for m in store.claim_messages(b.id, b.fence, "0:1:0", T0, 1)] == [m1.id]
    assert [m.id for m in store.claim_messages(b.id, b.fence, "0:1:0", T0, 2)] == [m1.id, m2.id]
    assert [m.id for m in store.claim_messages(b.id, b.fence, "0:1:1", T0, 0)] == []
    assert [m.id for m in store.claim_messages(b.id, b.fence, "0:2:0", T0, 5)] == [m3.id]
    assert store.messages(status="pending") == []


def test_claiming_leaves_the_runs_row_alone(store_factory: StoreFactory) -> None:
    # A run's status is the fold of its events: the worker commits the waiting run's
    # run.woke (so it stays runnable if it dies holding the messages) before the step
    # claims them; the claim itself changes no run row.
    store, ids = store_factory(), _ids()
    a = _owned(store, ids)
    b = _owned(store, ids, status="waiting")
    _post(store, a, b, "wake up")
    assert b.fence is not None
    assert b.id in store.runnable(T0, 10, lease_now=time.time() + 120)
    before = store.get_run(b.id)
    store.claim_messages(b.id, b.fence, "0:1:0", T0)
    assert store.get_run(b.id) == before


def test_claim_messages_is_fenced_by_the_lease_token(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids), _owned(store, ids)
    never = _started(store, ids)
    m = _post(store, a, b, "for b")
    _post(store, a, never, "for never")
    assert b.fence is not None
    taken = store.acquire(b.id, "w2", 60, time.time() + 120)
    assert taken is not None

    with pytest.raises(LeaseLost, match=b.id):
        store.claim_messages(b.id, b.fence, "0:1:0", T0)
    assert store.messages(recipient=b.id) == [m]  # still pending, unclaimed
    with pytest.raises(LeaseLost, match=never.id):
        store.claim_messages(never.id, 1, "0:1:0", T0)
    assert [x.status for x in store.messages()] == ["pending", "pending"]

    got = store.claim_messages(b.id, taken, "0:1:0", T0)  # the new owner may
    assert [x.id for x in got] == [m.id]


# -- swarm: versions -------------------------------------------------------------

def _version(r: _Run, ns: str, key: str, event: str, **kw: Any) -> VersionRow:
    return VersionRow(ns=ns, key=key, event=event, run=r.id, epoch=r.row.epoch,
                      step=r.row.step, created=T0, **kw)


def _board_write(store: Store, r: _Run, key: str, value: Any, *, ns: str = "board:s1",
                 suspect: bool = False) -> str:
    w = r.emit("blackboard.write", {"key": key, "value": value})
    v = _version(r, ns, key, w.events[0].id, value=value, suspect=suspect)
    v = dataclasses.replace(v, step=w.events[0].step)
    assert store.commit([dataclasses.replace(w, versions=(v,))]) == [None]
    return w.events[0].id


def test_versions_are_numbered_per_namespace_and_key_in_commit_order(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids, swarm="s1"), _owned(store, ids, swarm="s1")
    w1 = _board_write(store, a, "plan", {"v": 1})
    w = b.emit("blackboard.write")
    e = w.events[0].id
    two = (_version(b, "board:s1", "plan", e, value=[2]),
           _version(b, "board:s1", "plan", e, value=None),  # None is a value on the board
           _version(b, "board:s1", "owner", e, value="b"),
           _version(b, "board:s2", "plan", e, value="other swarm"),
           _version(b, "file:/ws", "notes.md", e, hash="ab" * 32),
           _version(b, "file:/ws", "gone.md", e, hash=None))
    assert store.commit([dataclasses.replace(w, versions=two)]) == [None]
    w4 = _board_write(store, a, "plan", "four")

    got = [(v.ns, v.key, v.version, v.event, v.run, v.value, v.hash, v.status, v.suspect)
           for v in store.versions()]
    assert got == [
        ("board:s1", "plan", 1, w1, a.id, {"v": 1}, None, "live", False),
        ("board:s1", "plan", 2, e, b.id, [2], None, "live", False),
        ("board:s1", "plan", 3, e, b.id, None, None, "live", False),
        ("board:s1", "owner", 1, e, b.id, "b", None, "live", False),
        ("board:s2", "plan", 1, e, b.id, "other swarm", None, "live", False),
        ("file:/ws", "notes.md", 1, e, b.id, None, "ab" * 32, "live", False),
        ("file:/ws", "gone.md", 1, e, b.id, None, None, "live", False),
        ("board:s1", "plan", 4, w4, a.id, "four", None, "live", False),
    ]
    assert [v.version for v in store.versions(ns="board:s1", key="plan")] == [1, 2, 3, 4]
    assert [v.key for v in store.versions(ns="file:/ws")] == ["notes.md", "gone.md"]
    assert [v.version for v in store.versions(run=a.id)] == [1, 4]
    assert [v.version for v in store.versions(key="plan", run=b.id)] == [2, 3, 1]
    assert [v.key for v in store.versions(events=[w4, w1])] == ["plan", "plan"]
    assert store.versions(events=[]) == []
    assert store.versions(ns="board:nobody") == []


def test_current_versions_are_the_newest_live_ones(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids, swarm="s1"), _owned(store, ids, swarm="s1")
    w1 = _board_write(store, a, "plan", 1)
    w2 = _board_write(store, b, "plan", 2, suspect=True)
    w3 = _board_write(store, a, "plan", 3)
    wk = _board_write(store, a, "other", "x")

    cur = store.current_versions("board:s1", ["plan", "other", "never"])
    assert sorted(cur) == ["other", "plan"]
    assert (cur["plan"].event, cur["plan"].version, cur["plan"].value) == (w3, 3, 3)
    assert cur["other"].event == wk
    assert store.current_versions("board:s2", ["plan"]) == {}
    assert store.current_versions("board:s1", []) == {}

    # The newest is reverted: the one before it is current again (and says it is suspect).
    assert store.commit([a.write(1, transitions=(
        Transition("versions", (w3,), "status", "reverted", ("live",)),))]) == [None]
    cur = store.current_versions("board:s1", ["plan"])
    assert (cur["plan"].event, cur["plan"].version, cur["plan"].suspect) == (w2, 2, True)
    assert store.commit([a.write(1, transitions=(
        Transition("versions", (w2,), "status", "undone"),
        Transition("versions", (w1,), "suspect", True)))]) == [None]
    cur = store.current_versions("board:s1", ["plan"])
    assert (cur["plan"].event, cur["plan"].suspect) == (w1, True)
    assert [(v.version, v.status) for v in store.versions(key="plan")] == [
        (1, "live"), (2, "undone"), (3, "reverted")]


# -- swarm: transitions ------------------------------------------------------------

def test_a_transition_not_from_an_expected_state_refuses_the_whole_write(
        store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids, swarm="s1"), _owned(store, ids, swarm="s1")
    m1, m2 = _post(store, a, b, "one"), _post(store, a, b, "two")
    assert b.fence is not None
    store.claim_messages(b.id, b.fence, "0:1:0", T0, 1)  # m1 delivered, m2 still pending
    w1 = _board_write(store, a, "plan", 1)
    events, row = store.events(a.id), store.get_run(a.id)
    messages, versions, batches = store.messages(), store.versions(), list(store.batches())

    # A rollback's plan: retract both messages, revert the write, post and write more.
    w, extra = _send(a, b, "more")
    w = dataclasses.replace(w, versions=(_version(a, "board:s1", "plan", w.events[0].id,
                                                  value=2),),
                            transitions=(
                                Transition("versions", (w1,), "status", "reverted", ("live",)),
                                Transition("messages", (m1.id, m2.id), "status", "retracted",
                                           ("pending",))))
    other = b.write(1)
    results = store.commit([w, other])

    assert isinstance(results[0], Conflict)
    assert a.id in str(results[0])
    assert m1.id in str(results[0])
    assert results[1] is None  # the rest of the batch commits
    assert store.events(a.id) == events
    assert store.get_run(a.id) == row
    assert store.messages() == messages
    assert store.event(extra.id) is None
    assert store.versions() == versions
    assert list(store.batches())[:-1] == batches
    assert list(store.batches())[-1].entries == ((b.id, other.events[0].seq,
                                                  other.events[0].seq),)

    # From the state it is really in, it applies.
    a.rewind(store)
    ok = a.write(1, transitions=(
        Transition("messages", (m2.id,), "status", "retracted", ("pending",)),
        Transition("messages", (m1.id,), "status", "pending", ("delivered",)),
        Transition("versions", (w1,), "status", "reverted", ("live",))))
    assert store.commit([ok]) == [None]
    assert [(m.id, m.status) for m in store.messages()] == [(m1.id, "pending"),
                                                            (m2.id, "retracted")]
    assert [v.status for v in store.versions()] == ["reverted"]
    assert store.current_versions("board:s1", ["plan"]) == {}


def test_a_transition_of_another_column_is_refused(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids), _owned(store, ids)
    m = _post(store, a, b, "one")
    before = store.events(a.id)
    for t in (Transition("messages", (m.id,), "recipient", a.id),
              Transition("messages", (m.id,), "body", "changed"),
              Transition("effects", (m.id,), "status", "done"),
              Transition("runs", (a.id,), "status", "done")):
        results = store.commit([a.write(1, transitions=(t,))])
        assert isinstance(results[0], Conflict), t
        a.rewind(store)
    assert store.events(a.id) == before
    assert store.messages() == [m]


# -- swarm: links ------------------------------------------------------------------

def test_links_are_derived_from_causes_that_cross_runs(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids, swarm="s1"), _owned(store, ids, swarm="s1")
    m = _post(store, a, b, "go", step=1)                                  # a step 1
    bw = _board_write(store, a, "plan", 1)                                # a step 2
    fx = a.emit("effect.intent", step=3)                                  # a step 3
    assert store.commit([fx]) == [None]
    intent = fx.events[0].id
    own = b.emit("effect.intent", step=1)
    assert store.commit([own]) == [None]
    mine = own.events[0].id

    writes = [b.emit("message.received", {"messages": [m.id]}, step=2, causes=(m.id,)),
              b.emit("blackboard.read", {"key": "plan"}, step=2, causes=(bw,)),
              b.emit("effect.done", {}, step=3, causes=(mine, intent)),
              b.emit("tool.called", {}, step=4, causes=(intent, "no-such-event")),
              # Causes of other kinds, or within the run, are no links.
              b.emit("model.called", {}, step=4, causes=(m.id, bw)),
              b.emit("effect.failed", {}, step=4, causes=(intent,)),
              b.emit("tool.called", {}, step=4, causes=(mine,))]
    for w in writes:
        assert store.commit([w]) == [None]
    dst = [w.events[0] for w in writes]

    def link(kind: str, src_step: int, src_event: str, d: Event) -> Link:
        return Link(kind=kind, src_run=a.id, src_epoch=0, src_step=src_step,
                    src_event=src_event, dst_run=b.id, dst_epoch=0, dst_step=d.step,
                    dst_event=d.id)

    expected = [link("message", 1, m.id, dst[0]), link("board", 2, bw, dst[1]),
                link("file", 3, intent, dst[2]), link("file", 3, intent, dst[3])]
    assert store.links() == expected
    assert store.links_from(a.id, 0, 0) == expected
    assert store.links_from(a.id, 0, 2) == expected[1:]
    assert store.links_from(a.id, 0, 3) == expected[2:]
    assert store.links_from(a.id, 0, 4) == []
    assert store.links_from(a.id, 1, 0) == []
    assert store.links_from(b.id, 0, 0) == []
    assert store.links_from("no-such-run", 0, 0) == []


def test_a_refused_write_leaves_no_links(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids), _owned(store, ids)
    m = _post(store, a, b, "go")
    assert store.acquire(b.id, "w2", 60, time.time() + 120) is not None
    results = store.commit([b.emit("message.received", causes=(m.id,))])
    assert isinstance(results[0], LeaseLost)
    assert store.links() == []


def test_rollback_and_fork_events_leave_epoch_and_fork_links(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a = _owned(store, ids)
    for step in (1, 2, 3):
        assert store.commit([a.write(1, step=step)]) == [None]
    # A rollback to step 1 starts epoch 1 there.
    a.row = dataclasses.replace(a.row, epoch=1, step=1)
    rb = a.emit("rollback", {"from_epoch": 0, "to_step": 1, "undone": []}, step=2)
    assert store.commit([rb]) == [None]
    # A fork of a's epoch 0 at step 2, and one of a run this store does not have.
    fork = _Run(ids.new(), ids)
    started = fork.chain.make(
        id=ids.new(), kind="run.started", time=iso(T0), epoch=0, step=0, actor="human:ann",
        payload={"name": "fork", "spec": {"agent": "tests:agent",
                                          "forked_from": {"run": a.id, "epoch": 0, "step": 2}}})
    fork.row = dataclasses.replace(fork.row, seq=fork.chain.seq, head=fork.chain.head)
    orphan = _Run(ids.new(), ids)
    o_started = orphan.chain.make(
        id=ids.new(), kind="run.started", time=iso(T0), epoch=0, step=0, actor="human:ann",
        payload={"spec": {"forked_from": {"run": "01NOSUCHRUN0000000000000000", "epoch": 0,
                                          "step": 1}}})
    orphan.row = dataclasses.replace(orphan.row, seq=orphan.chain.seq, head=orphan.chain.head)
    plain = _Run(ids.new(), ids)
    assert store.commit([Write(run=fork.id, fence=None, events=(started,), run_row=fork.row),
                         Write(run=orphan.id, fence=None, events=(o_started,),
                               run_row=orphan.row),
                         plain.create()]) == [None, None, None]

    e = rb.events[0]
    epoch = Link(kind="epoch", src_run=a.id, src_epoch=0, src_step=1, src_event=e.id,
                 dst_run=a.id, dst_epoch=1, dst_step=2, dst_event=e.id)
    forked = Link(kind="fork", src_run=a.id, src_epoch=0, src_step=2, src_event=started.id,
                  dst_run=fork.id, dst_epoch=0, dst_step=0, dst_event=started.id)
    assert store.links() == [epoch, forked]
    assert store.links_from(a.id, 0, 0) == [epoch, forked]
    assert store.links_from(a.id, 0, 2) == [forked]
    assert store.links_from(a.id, 1, 0) == []


# -- the store chain (operator settings) ------------------------------------------
def test_store_events_chain_and_come_back_in_order(store_factory: StoreFactory) -> None:
    from tether.core.settings import STORE_CHAIN, STORE_GENESIS, fold, store_event_hash
    store = store_factory()
    assert store.store_events() == []
    ids = _ids()
    a = store.append_store_event("policy.applied", "store", {"hash": "a"}, actor="human:ada",
                                 time=iso(T0), id=ids.new())
    b = store.append_store_event("policy.applied", "swarm:crew", {"hash": "b"},
                                 actor="human:bob", time=iso(T0), id=ids.new())
    c = store.append_store_event("policy.cleared", "swarm:crew", {}, actor="human:bob",
                                 time=iso(T0), id=ids.new())
    got = store.store_events()
    assert got == [a, b, c] and [e.n for e in got] == [1, 2, 3]
    assert a.prev == STORE_GENESIS and b.prev == a.hash and c.prev == b.hash
    assert all(store_event_hash(dataclasses.replace(e, hash="")) == e.hash for e in got)
    assert store.store_events(after=2) == [c] and store.store_events(after=3) == []
    assert set(fold(got)) == {("policy", "store")}
    # Each append is a batch of its own, naming the event under the store chain's name.
    last = list(store.batches())[-1]
    assert last.entries == ((STORE_CHAIN, 3, 3),)
    assert last.hash == batch_hash(last.prev, [(STORE_CHAIN, 3, c.hash)])


def test_store_events_refuse_unknown_kinds_and_scopes(store_factory: StoreFactory) -> None:
    store = store_factory()
    for kind, scope in (("policy.burned", "store"), ("policy.applied", "run:x"),
                        ("policy.applied", "swarm:")):
        with pytest.raises(ValueError, match="store event"):
            store.append_store_event(kind, scope, {}, actor="human:ada", time=iso(T0),
                                     id=_ids().new())
    assert store.store_events() == []


# -- seals and erasure ----------------------------------------------------------

def test_a_seal_is_stored_and_kept_when_the_payload_is_erased(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    r = _owned(store, ids)
    w = r.emit("message.sent", {"i": 0, "to": r.id, "topic": None, "body": {"secret": 1}})
    sent = w.events[0]
    assert dict(sent.seal) == {"message": message_digest(r.id, None, {"secret": 1})}
    plain = r.emit("tool.called", {"i": 1})
    assert store.commit([w]) == [None]
    assert store.commit([plain]) == [None]
    assert store.events(r.id)[-2:] == [*w.events, *plain.events]
    assert plain.events[0].seal == ()  # no rows made, no seal: hashed as before seals
    store.erase_payload(sent.id)
    got = store.event(sent.id)
    assert got is not None and got.payload is None
    assert (got.seal, got.payload_hash, got.hash) == (sent.seal, sent.payload_hash, sent.hash)
    assert event_hash(dataclasses.replace(got, prev=sent.prev, hash="")) == sent.hash


def test_erase_rewrites_every_checkpoint_and_chunk_holding_the_value(
        store_factory: StoreFactory) -> None:
    """A value of the erased payload leaves every state it was copied into: inline, in a
    string, in a list chunk (restored through the renamed chunks), in another run's state;
    the rewrites are recorded with their hashes, and the runs' live leases are taken."""
    store, ids = store_factory(), _ids()
    card = "card-4111-2222-3333-4444"
    states = [{"n": 0}] + [{"n": s, "card": card, "log": [f"paid with {card}", *map(str, range(s))]}
                           for s in range(1, 6)]
    r, _ = _checkpointed(store, ids, states, keyframe_every=3, chunk_items=2)
    other, _ = _checkpointed(store, ids, [{"seen": [card, "x", "y"]}], keyframe_every=3,
                             chunk_items=2)
    w = r.emit("tool.called", {"i": 0, "tool": "pay", "result": {"card": card}}, step=6)
    assert store.commit([w]) == [None]
    ev = w.events[0].id
    rec = store.erase(ev, reason="leaked", actor="human:dpo", time=iso(time.time()),
                      id=ids.new())
    mark = {"erased": ev}
    text = '{"erased":"' + ev + '"}'
    for step, state in enumerate(states):
        chain = store.checkpoint_chain(r.id, 0, step)
        assert chain is not None
        got = restore(chain.key_body, store.chunk, chain.deltas)
        want = dict(state)
        if step:
            want.update(card=mark, log=[f"paid with {text}", *map(str, range(step))])
        assert got == want
    chain = store.checkpoint_chain(other.id, 0, 0)
    assert chain is not None and restore(chain.key_body, store.chunk, []) == {
        "seen": [mark, "x", "y"]}
    p = rec.payload
    # The bodies that held it: step 1's delta (set), step 3's keyframe, the other run's;
    # the deltas that only appended to the log never held it.
    assert sorted((x[0], x[2]) for x in p["checkpoints"]) == sorted(
        [(r.id, 1), (r.id, 3), (other.id, 0)])
    assert p["fenced"] == sorted([r.id, other.id]) and p["rows"]["checkpoints.body"] == 3
    assert p["rows"]["chunks.body"] >= 1 and p["also_in"] == []
    # The owners' leases are gone: renewing fails, another owner takes the run.
    assert store.renew({r.id: r.fence}, "w1", 60, time.time()) == [r.id]  # type: ignore[dict-item]


# -- signed checkpoints (tether audit seal) --------------------------------------------------

def test_leaf_hashes_are_every_event_in_batch_order(store_factory: StoreFactory) -> None:
    """Run events and store-chain events, in the order the batch chain names them."""
    store, ids = store_factory(), _ids()
    assert store.leaf_hashes() == [] and store.event_count() == 0
    a, b = _Run(ids.new(), ids), _Run(ids.new(), ids)
    first = [a.create(), b.create()]
    assert store.commit(first) == [None, None]
    setting = store.append_store_event("policy.applied", "store", {"hash": "a"},
                                      actor="human:ada", time=iso(T0), id=ids.new())
    a.fence = store.acquire(a.id, "w1", 60, time.time())
    b.fence = store.acquire(b.id, "w1", 60, time.time())
    second = [b.write(2, step=1), a.write(1, step=1)]
    assert store.commit(second) == [None, None]
    want = [e.hash for w in first for e in w.events] + [setting.hash] + \
        [e.hash for w in second for e in w.events]
    assert [h.hex() for h in store.leaf_hashes()] == want
    assert store.event_count() == len(want)


def test_leaf_hashes_name_a_missing_event(store_factory: StoreFactory) -> None:
    store, ids = store_factory(), _ids()
    a = _Run(ids.new(), ids)
    assert store.commit([a.create()]) == [None]
    assert store.leaf_hashes()
    # Not through the protocol: what the audit exists for (an event removed outside tether).
    raw = getattr(store, "_conn", None)
    if raw is None:
        pytest.skip("this backend offers no raw connection to tamper with")
    with raw():
        raw().execute("DELETE FROM events WHERE seq = 1")
    with pytest.raises(StoreCorrupt, match=f"{a.id}#1, which is missing"):
        store.leaf_hashes()


def test_signed_checkpoints_are_appended_in_order_or_refused(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.signed_checkpoints() == []
    one = store.add_signed_checkpoint(3, "ab" * 32, "note one\n", [], 1.5, after=0)
    two = store.add_signed_checkpoint(5, "cd" * 32, "note two\n", ["ef" * 32], 2.5, after=1)
    assert (one.n, two.n) == (1, 2)
    assert store.signed_checkpoints() == [one, two]
    assert store.signed_checkpoints(after=1) == [two]
    assert two.proof == ("ef" * 32,) and two.root == "cd" * 32 and two.created == 2.5
    with pytest.raises(Conflict, match="seal again"):  # two sealers extending the same one
        store.add_signed_checkpoint(6, "00" * 32, "note three\n", [], 3.0, after=1)
    assert len(store.signed_checkpoints()) == 2


def test_leaves_since_a_batch_are_the_events_committed_after_it(
        store_factory: StoreFactory) -> None:
    """What an incremental seal reads: the events after a batch, and the hashes of that
    batch and of the last one, as the batch chain holds them."""
    store, ids = store_factory(), _ids()
    a, b = _Run(ids.new(), ids), _Run(ids.new(), ids)
    assert store.commit([a.create(), b.create()]) == [None, None]
    whole = store.leaves_since(0)
    batches = list(store.batches())
    assert whole.after_hash == "" and whole.hashes == store.leaf_hashes()
    assert (whole.last, whole.last_hash) == (batches[-1].n, batches[-1].hash)
    setting = store.append_store_event("policy.applied", "store", {"hash": "a"},
                                      actor="human:ada", time=iso(T0), id=ids.new())
    a.fence = store.acquire(a.id, "w1", 60, time.time())
    later = a.write(1, step=1)
    assert store.commit([later]) == [None]
    span = store.leaves_since(whole.last)
    assert span.after_hash == whole.last_hash
    assert [h.hex() for h in span.hashes] == [setting.hash, *(e.hash for e in later.events)]
    assert store.leaf_hashes() == whole.hashes + span.hashes
    assert span.last == list(store.batches())[-1].n
    nothing = store.leaves_since(span.last)
    assert (nothing.hashes, nothing.last, nothing.after_hash) == ([], span.last, span.last_hash)
    assert store.leaves_since(span.last + 5).after_hash is None  # no such batch


def test_a_seal_cache_is_kept_beside_the_last_checkpoint(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.seal_cache() is None
    store.add_signed_checkpoint(3, "ab" * 32, "note one\n", [], 1.5, after=0,
                                cache=(4, "cd" * 32, b"x" * 64))
    got = store.seal_cache()
    assert got is not None
    assert (got.checkpoint, got.batch, got.batch_hash, got.frontier) == \
        (1, 4, "cd" * 32, b"x" * 64)
    store.add_signed_checkpoint(5, "ef" * 32, "note two\n", [], 2.5, after=1)
    assert store.seal_cache() is None  # the last checkpoint has none: not an older one's



# -- moving a store (export_rows / import_rows) -------------------------------------------

def _all_rows(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    from tether.store.layout import TABLES
    with store.snapshot():
        return {t.name: [r for b in store.export_rows(t.name).batches for r in b]
                for t in TABLES}


def test_rows_exported_and_imported_make_the_same_store_which_goes_on(
        store_factory: StoreFactory) -> None:
    from tether.store.layout import KNOWN, TABLES
    store, ids = store_factory(), _ids()
    a, b = _owned(store, ids), _owned(store, ids)
    assert store.commit([a.write(3, step=1), b.write(2, step=1)]) == [None, None]
    store.add_command(a.id, "pause", {}, "human:ada", T0)
    store.set_meta("demo.clock", "42")
    assert set(store.table_columns()) == KNOWN
    copy = store_factory()
    with store.snapshot():
        written = copy.import_rows(store.export_rows(t.name) for t in TABLES)
    source = _all_rows(store)
    assert written == {t: len(r) for t, r in source.items()}
    assert _all_rows(copy) == source
    assert copy.events(a.id) == store.events(a.id) and list(copy.batches()) == list(
        store.batches())
    assert copy.get_meta("demo.clock") == "42" and copy.lease_of(a.id) is None
    # Its numbering goes on after the copied rows: new runs, events, commands.
    c = _owned(copy, ids)
    a.fence = copy.acquire(a.id, "w2", 60, time.time())
    assert copy.commit([a.write(1, step=2), c.write(1, step=1)]) == [None, None]
    assert copy.add_command(c.id, "pause", {}, "human:ada", T0) > max(
        r[0] for r in source["commands"])
    with (pytest.raises(Conflict, match="already holds a tether store with rows"),
          store.snapshot()):
        copy.import_rows(store.export_rows(t.name) for t in TABLES)
    assert copy.events(a.id)[-1].step == 2  # the refused import changed nothing


__all__ = [name for name in list(globals()) if name.startswith("test_")]
