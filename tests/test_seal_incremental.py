"""Incremental sealing on a real SQLite store: each seal hashes only the events since the
last checkpoint, from the frontier cached beside it, and signs the same roots and
consistency proofs as a seal from scratch; the cache is never trusted (a broken, stale or
missing one is rebuilt from the events) and verification never reads it."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.audit import verify_store
from tether.core.clock import FixedClock
from tether.core.compact import Frontier
from tether.core.ids import UlidSource
from tether.core.merkle import Tree
from tether.core.note import Signer
from tether.runtime.agent import StepAgent
from tether.runtime.journal import RunJournal
from tether.runtime.runs import start_run
from tether.sealing import seal
from tether.store.sqlite import SQLiteStore

pytestmark = pytest.mark.raw_rows  # the cache is broken by hand
T0 = 1_700_000_000.0
SIGNER = Signer.generate("ops.example/tether", bytes(range(32)))


class Swarm:
    """A real store with two runs that commit events on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = SQLiteStore(path)
        self.clock = FixedClock(T0)
        rng = random.Random(5)
        ids = UlidSource(self.clock.now, lambda: rng.getrandbits(80))
        agent = StepAgent(lambda ctx, state: None, name="incr")
        self.journals = []
        for i in range(2):
            rid = start_run(self.store, agent, agent_ref="tests:incr", goal=f"g{i}",
                            clock=self.clock, ids=ids, state={})
            row = self.store.get_run(rid)
            assert row is not None
            self.journals.append(RunJournal(self.store, row, self.store.acquire(
                rid, "w1", 600, time.time()), ids, self.clock.now))

    def commit(self, counts: tuple[int, int]) -> None:
        for j, k in zip(self.journals, counts, strict=True):
            for i in range(k):
                j.append("model.called", {"text": f"t{i}", "tokens": i}, step=0,
                         actor="agent:incr")
                self.clock.advance(0.01)
        if any(counts):
            self.store.commit([j.take() for j, k in zip(self.journals, counts, strict=True)
                               if k])

    def raw(self, sql: str) -> None:
        con = sqlite3.connect(self.path)
        with con:
            con.execute(sql)
        con.close()


def _check_against_scratch(store: SQLiteStore) -> None:
    """Every checkpoint's root and proof are what the whole tree gives."""
    tree = Tree.from_data(store.leaf_hashes())
    cps = store.signed_checkpoints()
    for prev, cp in zip([None, *cps], cps, strict=False):
        assert cp.root == tree.root(cp.size).hex()
        want = [] if prev is None else tree.consistency_proof(prev.size, cp.size)
        assert list(cp.proof) == [h.hex() for h in want]
    cache = store.seal_cache()
    assert cache is not None and cache.checkpoint == cps[-1].n
    assert Frontier.decode(cps[-1].size, cache.frontier) == Frontier.of_tree(tree, cps[-1].size)


commits = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(commits, min_size=1, max_size=5), st.lists(st.sampled_from(
    ["keep", "null", "garbage", "wrong-root"]), min_size=5, max_size=5))
def test_incremental_seals_equal_seals_from_scratch(tmp_path_factory: pytest.TempPathFactory,
                                                    rounds: list[list[tuple[int, int]]],
                                                    caches: list[str]) -> None:
    swarm = Swarm(tmp_path_factory.mktemp("incr") / "s.db")
    try:
        for batch, cache in zip(rounds, caches, strict=False):
            for counts in batch:
                swarm.commit(counts)
            seal(swarm.store, SIGNER, now=T0)
            _check_against_scratch(swarm.store)
            if cache == "null":  # an old store's row, or one written by hand
                swarm.raw("UPDATE signed_checkpoints SET frontier = NULL")
            elif cache == "garbage":
                swarm.raw("UPDATE signed_checkpoints SET frontier = x'0102'")
            elif cache == "wrong-root":  # well formed, but not the signed tree's
                swarm.raw("UPDATE signed_checkpoints SET frontier = randomblob(length(frontier))"
                          " WHERE length(frontier) > 0")
        rep = verify_store(swarm.store, key=SIGNER.verifier)
        assert rep.ok, rep.problems
    finally:
        swarm.store.close()


def test_a_seal_reads_only_the_batches_since_the_last(tmp_path: Path) -> None:
    """What the cache saves, counted in events read: the second seal reads the new batch."""
    swarm = Swarm(tmp_path / "s.db")
    try:
        swarm.commit((5, 5))
        seal(swarm.store, SIGNER, now=T0)
        cache = swarm.store.seal_cache()
        assert cache is not None
        swarm.commit((2, 1))
        span = swarm.store.leaves_since(cache.batch)
        assert len(span.hashes) == 3 and span.after_hash == cache.batch_hash
        assert swarm.store.leaf_hashes()[-3:] == span.hashes
        cp, new = seal(swarm.store, SIGNER, now=T0)
        assert new and cp.size == swarm.store.event_count()
        _check_against_scratch(swarm.store)
    finally:
        swarm.store.close()


def test_a_rechained_history_makes_the_seal_look_at_everything(tmp_path: Path) -> None:
    """The last covered batch's hash changed (batches re-hashed after a rewrite): the cache
    is not used, the seal reads every event and refuses, naming the checkpoint."""
    from tether.errors import VerificationFailed

    swarm = Swarm(tmp_path / "s.db")
    try:
        swarm.commit((3, 3))
        seal(swarm.store, SIGNER, now=T0)
        swarm.raw("UPDATE events SET hash = randomblob(32) WHERE rowid = "
                  "(SELECT min(rowid) FROM events)")
        swarm.raw("UPDATE batches SET hash = randomblob(32)")
        swarm.commit((1, 0))
        with pytest.raises(VerificationFailed, match="no longer hash to signed checkpoint 1"):
            seal(swarm.store, SIGNER, now=T0)
    finally:
        swarm.store.close()
