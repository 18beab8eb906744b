"""The backend-neutral halves of the store (store/leases.py, writes.py, leaves.py,
chains.py, erase_rows.py, run_keys.py), on their own: the rules both backends call.

Both conformance suites run them through real SQLite files and a real PostgreSQL;
these pin the decisions themselves, including the paths a healthy store never takes
(rows out of commit order, a batch naming a missing event).
"""

from __future__ import annotations

from typing import Any

import pytest

from tether.core.canonical import dumps
from tether.core.events import BATCH_GENESIS, batch_hash
from tether.errors import LeaseLost, NotFound, StoreCorrupt, UsageError
from tether.store.chains import all_chunks, batches_from, next_batch
from tether.store.erase_rows import blanks, in_flight
from tether.store.leases import granted_token
from tether.store.leaves import LeafReads, leaf_span
from tether.store.records import Write
from tether.store.rows import usage_scope
from tether.store.run_keys import RunKeys
from tether.store.writes import apply_writes, fence_refusal


def test_a_lease_goes_to_whoever_asks_when_free_expired_or_their_own() -> None:
    assert granted_token(None, "w1", now=10.0) == 1
    assert granted_token(("w2", 4, 9.0), "w1", now=10.0) == 5  # expired
    assert granted_token(("w1", 4, 99.0), "w1", now=10.0) == 5  # our own, renewed
    assert granted_token(("w2", 4, 99.0), "w1", now=10.0) is None  # another's, live
    assert granted_token(("w2", 4, 0.0), "w1", now=10.0) == 5  # released


def test_a_write_is_refused_for_a_taken_lease_a_gap_or_a_run_that_exists() -> None:
    new, old = Write("r1", None, ()), Write("r1", 3, ())
    assert fence_refusal(new, None) is None
    assert isinstance(fence_refusal(new, (5, 3)), UsageError)
    assert isinstance(fence_refusal(old, None), NotFound)
    taken = fence_refusal(old, (5, 4))
    assert isinstance(taken, LeaseLost) and "token 3" in str(taken)
    assert "token now 4" in str(taken)
    assert fence_refusal(old, (5, 3)) is None


def test_refused_writes_are_skipped_and_the_rest_name_their_events_in_order() -> None:
    writes = [Write("a", 1, ()), Write("b", 1, ()), Write("c", 1, ())]
    refusal = UsageError("no")
    applied: list[str] = []

    def apply(w: Write) -> int:
        applied.append(w.run)
        return len(applied)

    results, entries, hashes = apply_writes(
        writes, lambda w: refusal if w.run == "b" else None, apply)
    assert results == [None, refusal, None]
    assert applied == ["a", "c"]
    assert entries == [] and hashes == []  # no events: nothing for a batch to name


def test_the_batch_chain_links_each_batch_to_the_hash_before_it() -> None:
    n, h = next_batch(None, [("r", 1, "ab")])
    assert n == 1 and h.hex() == batch_hash(BATCH_GENESIS, [("r", 1, "ab")])
    n2, h2 = next_batch((n, h), [("r", 2, "cd")])
    assert n2 == 2 and h2.hex() == batch_hash(h.hex(), [("r", 2, "cd")])
    read = list(batches_from([(1, h, dumps([(7, 1, 1)])), (2, h2, dumps([(7, 2, 2)]))],
                             BATCH_GENESIS, lambda rk: f"run{rk}"))
    assert [b.prev for b in read] == [BATCH_GENESIS, h.hex()]
    assert read[1].entries == (("run7", 2, 2),)


def _reads(rows: list[tuple[Any, ...]], by_index: dict[int, list[tuple[Any, ...]]]
           ) -> LeafReads:
    return LeafReads(rows_from=lambda rk, seq: rows, settings=lambda a, z: {},
                     span=lambda rk, a, z: by_index.get(rk, []),
                     run_of=lambda rk: f"run{rk}")


def test_leaves_follow_the_batches_even_when_the_pass_finds_rows_elsewhere() -> None:
    batches = [(1, dumps([(1, 1, 2)]), b"\x01" * 32), (2, dumps([(2, 1, 1)]), b"\x02" * 32)]
    # Insertion order has run 2's event first (a store copied row by row): run 1's
    # entry is not where the pass expects it and is looked up by index instead.
    rows = [(2, 1, b"c"), (1, 1, b"a"), (1, 2, b"b")]
    span = leaf_span(0, batches, None, _reads(rows, {1: [(1, b"a"), (2, b"b")],
                                                     2: [(1, b"c")]}))
    assert span.hashes == [b"a", b"b", b"c"]
    assert (span.last, span.last_hash) == (2, (b"\x02" * 32).hex())


def test_a_batch_naming_a_missing_event_names_it() -> None:
    batches = [(1, dumps([(1, 1, 3)]), b"\x01" * 32)]
    with pytest.raises(StoreCorrupt, match="run1#2, which is missing"):
        leaf_span(0, batches, None, _reads([], {1: [(1, b"a"), (3, b"c")]}))


def test_leaves_after_a_batch_the_store_does_not_hold_say_so() -> None:
    span = leaf_span(5, [], None, _reads([], {}))
    assert span.after_hash is None and span.hashes == []


def test_chunks_asked_for_must_all_be_there() -> None:
    assert all_chunks("s", ["a"], {"a": b"1"}) == {"a": b"1"}
    with pytest.raises(StoreCorrupt, match="chunk b is missing"):
        all_chunks("s", ["a", "b"], {"a": b"1"})


def test_usage_is_asked_of_exactly_one_scope_by_minute() -> None:
    assert usage_scope("r", None, 125.0) == ("run", "r", 2)
    assert usage_scope(None, "s", 60.0) == ("swarm", "s", 1)
    with pytest.raises(UsageError, match="exactly one"):
        usage_scope("r", "s", 0.0)


def test_an_erasure_blanks_each_copy_its_kind_made() -> None:
    got = blanks("E1", "r", "effect.intent", {"i": 2}, [], 1, 4)
    assert got == [("effects", "arguments", "id", ("E1",)),
                   ("approvals", "arguments", "step", ("r", 1, 4, 2)),
                   ("outbox", "body", "id", ("E1",))]
    decided = blanks("E2", "r", "approval.decided", {"approval": "A1"}, [], 1, 4)
    assert ("approvals", "edited_arguments", "edited", ("A1",)) in decided
    assert blanks("E3", "r", "step.completed", {}, [], 1, 4) == [
        ("outbox", "body", "id", ("E3",))]


def test_only_a_live_runs_unfinished_step_is_in_flight() -> None:
    assert in_flight((1, 3, "running"), 1, 4)
    assert not in_flight((1, 4, "running"), 1, 4)  # completed
    assert not in_flight((1, 3, "done"), 1, 4)  # the run cannot go on
    assert not in_flight((2, 3, "running"), 1, 4)  # an older epoch
    assert not in_flight(None, 1, 4)


def test_an_unknown_run_key_is_named_and_not_kept() -> None:
    keys = RunKeys()
    assert keys.found(7, []) == "(unknown run key 7)"
    assert keys.run(7) is None
    assert keys.found(7, [("r7",)]) == "r7" and keys.run(7) == "r7"
    assert keys.remember("r8", 8) == 8 and keys.key("r8") == 8
    keys.forget()
    assert keys.key("r8") is None and keys.run(7) is None
