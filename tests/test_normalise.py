"""The monitors' normaliser: volatile parts (timestamps, UUIDs, ULIDs, digests, long
counters, id- and time-like keys) stripped; what names a thing kept."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.monitors.loops import call_key
from tether.core.monitors.normalise import digest, maybe_fresh, normalise, skeleton, text_key

ULID_CHARS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

ulids = st.builds(lambda a, b: a + b, st.sampled_from("01234567"),
                  st.text(ULID_CHARS, min_size=25, max_size=25))
times = st.builds(lambda y, mo, d, h, mi, s, us, z: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:"
                  f"{s:02d}.{us:06d}{z}", st.integers(1970, 2100), st.integers(1, 12),
                  st.integers(1, 28), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59),
                  st.integers(0, 999_999), st.sampled_from(["Z", "+01:00", "-0530", ""]))
uuids = st.uuids().map(str)
counters = st.integers(10_000_000, 10**15).map(str)
volatile = st.one_of(ulids, times, uuids, counters)
words = st.text("abcdefghij ,.:", max_size=12)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), prefix=words, suffix=words)
def test_values_that_differ_only_by_volatile_parts_compare_equal(data: st.DataObject, prefix: str,
                                                                 suffix: str) -> None:
    kind = data.draw(st.sampled_from([ulids, times, uuids, counters]))
    a, b = data.draw(kind), data.draw(kind)
    left = {"text": f"{prefix} {a} {suffix}", "items": [f"job {a}"], "id": a, "created_at": a}
    right = {"text": f"{prefix} {b} {suffix}", "items": [f"job {b}"], "id": b, "created_at": b}
    assert digest(left) == digest(right)
    assert text_key(f"{prefix} {a} {suffix}") == text_key(f"{prefix}   {b} {suffix}")
    # The cheap pre-check never tells apart what normalising makes equal.
    assert skeleton(f"{prefix} {a} {suffix}") == skeleton(f"{prefix}   {b} {suffix}")


@settings(max_examples=100, deadline=None)
@given(a=words, b=words)
def test_values_that_differ_otherwise_stay_different(a: str, b: str) -> None:
    if " ".join(a.split()) == " ".join(b.split()):
        return
    assert digest({"text": a}) != digest({"text": b})
    assert call_key("look", {"path": a}) != call_key("look", {"path": b})


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), words, volatile),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(words | st.sampled_from(["nonce", "ts", "id"]), inner,
                                      max_size=3), max_leaves=12))
def test_normalising_is_idempotent(value: Any) -> None:
    once = normalise(value)
    assert normalise(once) == once
    assert normalise(normalise(value, ids=False), ids=False) == normalise(value, ids=False)
    if not maybe_fresh(value):  # the fast path skips only what normalising would not change
        assert normalise(value, ids=False) == value


@pytest.mark.parametrize(("text", "expected"), [
    ("queued at 2026-12-04T10:00:00Z", "queued at <time>"),
    ("at 2026-12-04 10:00", "at <time>"),
    ("job 01M8Q43S408EPJAC6445Y4X5QH done", "job <ulid> done"),
    (f"req {uuid.UUID(int=7)}", "req <uuid>"),
    ("sha 0123456789abcdef0123", "sha <hex>"),
    ("seq 1733300000123", "seq <n>"),
    # regressions: a 16-digit counter is a counter, a digest that starts with digits a digest
    ("n 1000000000000000", "n <n>"),
    ("sha 12345678abcdef0123", "sha <hex>"),
    # kept: short numbers (a count, a version, a time of day), words, short hex
    ("3 items, v2, at 21:30, page 1234567", "3 items, v2, at 21:30, page 1234567"),
    ("cafe beef", "cafe beef"),
    ("TICKET-01M8Q43S408EPJAC6445Y4X5QHX", "TICKET-01M8Q43S408EPJAC6445Y4X5QHX"),  # 27 chars
])
def test_what_a_result_loses_and_keeps(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_arguments_keep_ids_and_lose_only_what_is_fresh_per_call() -> None:
    a = {"ticket": "01M8Q43S408EPJAC6445Y4X5QH", "request_id": "r1", "at": "2026-12-04T10:00Z"}
    b = {"ticket": "01M8Q43S408EPJAC6445Y4X5QH", "request_id": "r2", "at": "2026-12-05T11:00Z"}
    c = {**a, "ticket": "01M8Q43S408EPJAC6445Y4X5QJ"}
    assert call_key("mark", a) == call_key("mark", b)
    assert call_key("mark", a) != call_key("mark", c)  # another ticket: another call
    assert call_key("mark", a) != call_key("unmark", a)
    # In a result the same ids are volatile.
    assert digest({"ticket": a["ticket"]}) == digest({"ticket": c["ticket"]})


def test_big_numbers_and_id_keys_are_volatile_in_results() -> None:
    assert normalise({"n": 1_733_300_000, "count": 12, "id": 5, "run_id": "x", "sent_at": 1,
                      "ok": True}) == {"n": "<n>", "count": 12, "id": "<v>", "run_id": "<v>",
                                       "sent_at": "<v>", "ok": True}
