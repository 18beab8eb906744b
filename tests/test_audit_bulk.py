"""verify_store reads the chains in bulk (Store.chain_rows, in pages) and decodes only the
payloads its checks read: a tamper anywhere in a long run, across a page boundary or in
the run after it, is still named exactly, and no check reads a payload it is not given.

The store is built as tether builds it (start_run, RunJournal commits), tampered with
through a plain sqlite3 connection as an intruder would.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tether.audit import VerifyReport, verify_store
from tether.audit.chains import PAYLOAD_READ
from tether.audit.rows import RowFacts
from tether.core.clock import FixedClock
from tether.core.events import KINDS, Chain
from tether.core.fold import RunFold, approval_change, effect_change, fold
from tether.core.ids import UlidSource
from tether.core.links import derive_links
from tether.core.seals import SEALED_KINDS
from tether.runtime.agent import StepAgent
from tether.runtime.journal import RunJournal
from tether.runtime.runs import start_run
from tether.store.sqlite import SQLiteStore

LONG_STEPS = 900  # 3 events a step: the long run spans three pages of 1,000 rows


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A store of a short run, a long one and another short one (in that order of ids and
    of the store's run keys); returns its path and the runs."""
    path = tmp_path_factory.mktemp("bulk") / "tether.db"
    clock = FixedClock(1_700_000_000.0)
    rng = random.Random(11)
    ids = UlidSource(clock.now, lambda: rng.getrandbits(80))
    agent = StepAgent(lambda ctx, state: None, name="bulk")
    store = SQLiteStore(path)
    try:
        runs = []
        for i, steps in enumerate((5, LONG_STEPS, 5)):
            rid = start_run(store, agent, agent_ref="tests:bulk", goal=f"goal {i}", clock=clock,
                            ids=ids)
            row = store.get_run(rid)
            assert row is not None
            j = RunJournal(store, row, store.acquire(rid, "w1", 600, time.time()), ids, clock.now)
            for step in range(1, steps + 1):
                started = j.append("step.started", {"step": step}, step=step)
                j.append("model.called", {"text": f"step {step} of run {i}", "n": step},
                         step=step, actor="agent:bulk", causes=(started.id,))
                j.append("step.finished", {"ok": True}, step=step, causes=(started.id,))
                clock.advance(0.001)
                if step % 50 == 0 or step == steps:
                    j.flush_sync()
            runs.append(rid)
    finally:
        store.close()
    return path, runs


def tampered(base: tuple[Path, list[str]], tmp_path: Path, sql: str,
             args: tuple[Any, ...]) -> VerifyReport:
    path = tmp_path / "tampered.db"
    shutil.copyfile(base[0], path)
    raw = sqlite3.connect(path)
    with raw:
        raw.execute(sql, args)
    raw.close()
    store = SQLiteStore(path, create=False)
    try:
        return verify_store(store)
    finally:
        store.close()


_PAYLOAD = ("UPDATE events SET payload = CAST(substr(CAST(payload AS TEXT), 1, length(payload) - 1) "
            "|| ',\"x\":1}' AS BLOB) WHERE rk = (SELECT rk FROM run_keys WHERE id = ?) AND seq = ?")
"""One more key in the stored payload of one event."""


def test_the_untouched_store_verifies_every_event(base: tuple[Path, list[str]]) -> None:
    store = SQLiteStore(base[0], create=False)
    try:
        rep = verify_store(store)
        count = store.event_count()
    finally:
        store.close()
    assert rep.ok, rep.problems
    assert rep.events == count > 3 * LONG_STEPS


@pytest.mark.parametrize("seq", [2, 999, 1000, 1001, 2000, 2001, 1500, 3 * LONG_STEPS + 1])
def test_a_payload_changed_anywhere_in_a_long_run_is_named_alone(
        base: tuple[Path, list[str]], tmp_path: Path, seq: int) -> None:
    long = base[1][1]
    rep = tampered(base, tmp_path, _PAYLOAD, (long, seq))
    assert rep.problems and rep.problems[0].startswith(f"run {long} event #{seq} ("), rep.problems
    assert "hash mismatch" in rep.problems[0]
    assert len(rep.problems) == 1, rep.problems  # its rows are not blamed; the others verify


def test_an_event_deleted_inside_a_page_is_named_by_the_one_after_it(
        base: tuple[Path, list[str]], tmp_path: Path) -> None:
    long = base[1][1]
    rep = tampered(base, tmp_path, "DELETE FROM events WHERE rk = (SELECT rk FROM run_keys "
                   "WHERE id = ?) AND seq = ?", (long, 1001))
    assert rep.first_bad is not None
    assert rep.first_bad.startswith(f"run {long} event #1002 (")
    assert "seq 1002 follows #1000" in rep.first_bad


def test_problems_of_several_runs_are_named_in_the_order_of_their_ids(
        base: tuple[Path, list[str]], tmp_path: Path) -> None:
    first, long, last = base[1]
    path = tmp_path / "two.db"
    shutil.copyfile(base[0], path)
    raw = sqlite3.connect(path)
    with raw:
        for run, seq in ((last, 3), (long, 1000), (first, 4)):
            raw.execute(_PAYLOAD, (run, seq))
    raw.close()
    store = SQLiteStore(path, create=False)
    try:
        rep = verify_store(store)
    finally:
        store.close()
    named = [p.split(" event #")[0] for p in rep.problems]
    assert named == [f"run {r}" for r in sorted((first, long, last))], rep.problems


# -- the payloads verify does not decode ---------------------------------------

_RICH = {
    "until": 5.0, "deferred": True, "reason": "r", "inbox": True, "to": "paused",
    "to_step": 3, "by": "human:x", "state_epoch": 1, "from_epoch": 0, "tool": "t",
    "error": "e", "resolution": "done", "happened": True, "approval": "A1",
    "decision": "approved", "kind": "approval.escalated", "result": {"r": 1}, "undo": {"u": 1},
    "after": {"files": {"f": "h"}}, "recorded": ["f"], "files": {"f": "h"}, "i": 1,
    "spec": {"forked_from": {"run": "R0", "epoch": 0, "step": 1}}, "key": "k", "value": 2,
    "body": "b", "topic": "t", "arguments": {"a": 1}, "effect": "irreversible",
    "checkpoint": {"hash": "a" * 64}, "hash": "a" * 64,
}
"""A payload with every key a check is known to read."""


@pytest.mark.parametrize("kind", sorted(KINDS - PAYLOAD_READ))
def test_no_check_reads_the_payload_of_a_kind_verify_does_not_decode(kind: str) -> None:
    """For every kind outside PAYLOAD_READ, the fold, the statuses, the links and what rows
    must say are the same with the payload as without it (verify leaves it None)."""
    chain = Chain("R1")
    cause = chain.make(id="01H0000000000000000000000C", kind="step.started", time="t",
                       epoch=0, step=1, actor="system", payload={})
    e = chain.make(id="01H0000000000000000000000E", kind=kind, time="t", epoch=1, step=2,
                   actor="system", payload=_RICH, causes=(cause.id,))
    if not e.seal and kind in SEALED_KINDS:
        pytest.skip("verify decodes an event without a seal of this kind")
    bare = replace(e, payload=None)
    at = {cause.id: ("R0", 0, 1)}.get
    for status in ("running", "sleeping", "waiting", "paused", "awaiting_approval"):
        state = RunFold(status=status, reason="x", wake_at=1.0, epoch=1, step=1)
        assert fold(state, e) == fold(state, bare), status
    assert effect_change(e) == effect_change(bare)
    assert approval_change(e) == approval_change(bare)
    assert derive_links(e, at) == derive_links(bare, at)
    with_payload, without = RowFacts(), RowFacts()
    with_payload.note(e, False)
    without.note(bare, False)
    assert (with_payload.outcome, with_payload.files) == (without.outcome, without.files)
    assert {k: v[1] for k, v in with_payload.made.items()} == \
        {k: v[1] for k, v in without.made.items()}
