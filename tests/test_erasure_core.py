"""What an erasure removes from a state (core/erasure.py): the rules on single values,
and, by property, that rewriting a run's checkpoints one body and one chunk at a time
restores, at every step, exactly the rewritten state (keyframes, deltas, list chunks
and value chunks alike)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.canonical import dumps, loads
from tether.core.checkpoint import CheckpointEncoder, restore
from tether.core.erasure import (
    REPLAYED,
    chunk_name,
    needles,
    scrub,
    scrub_checkpoint,
    scrub_chunk,
)
from tether.runtime.context import CALL_KINDS, RESULT_KINDS
from tether.runtime.oversight import GATE_KINDS

EV = "01M0000000000000000000000A"
CARD = "card-4111-2222-3333-4444"
N = needles(EV, {"i": 3, "tool": "charge_the_card", "fp": "tool:charge:0123456789abcdef",
                 "arguments": {"card": CARD, "amount": 12, "account": 1234567890,
                               "memo": 'say "hi"\\now'}})
MARK = {"erased": EV}
TEXT = dumps(MARK).decode()


def test_the_kinds_a_replay_reads_are_the_runtimes() -> None:
    # What RunExecutor.load indexes from the step in flight (and refuses once erased).
    assert {*CALL_KINDS, *RESULT_KINDS, *GATE_KINDS, "alert"} == REPLAYED


def test_which_values_are_erased() -> None:
    # Long strings and long integers of the data; never the fields that name things,
    # nor short values that would match unrelated parts of every state.
    assert N.exact == {CARD, 1234567890, 'say "hi"\\now'}
    assert "charge_the_card" not in N.exact and 12 not in N.exact
    # The JSON-escaped form is looked for too (JSON text kept inside a string).
    assert 'say \\"hi\\"\\\\now' in N.texts
    assert not needles(EV, {"i": 1, "result": "ok"})


def test_values_equal_become_the_marker_and_strings_keep_their_type() -> None:
    state = {"card": CARD, "n": 1234567890, "short": 12, "flag": True,
             "log": [f"charged {CARD} ok", {"raw": '{"memo": "say \\"hi\\"\\\\now"}'}],
             f"seen-{CARD}": 1}
    out = scrub(state, N)
    assert out == {"card": MARK, "n": MARK, "short": 12, "flag": True,
                   "log": [f"charged {TEXT} ok", {"raw": f'{{"memo": "{TEXT}"}}'}],
                   f"seen-{TEXT}": 1}
    untouched = {"a": ["x", {"b": 2}]}
    assert scrub(untouched, N) is untouched  # nothing copied when nothing changed


values = st.one_of(st.sampled_from(["ok", CARD, f"id {CARD}", "plain text", ""]),
                   st.integers(0, 3), st.just(1234567890))
items = st.lists(st.one_of(values, st.dictionaries(st.sampled_from(["k", CARD]), values,
                                                   max_size=2)), max_size=3)
steps = st.lists(st.tuples(st.sampled_from(["a", "b", f"k-{CARD}"]),
                           st.sampled_from(["set", "append", "del", "big"]), items),
                 min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_rewriting_bodies_and_chunks_apart_restores_the_rewritten_state(
        plan: list[tuple[str, str, list[Any]]]) -> None:
    enc = CheckpointEncoder(keyframe_every=3, chunk_items=2, run="r")
    state: dict[str, Any] = {}
    enc.prime(state)
    stored: list[tuple[str, bytes]] = []
    chunks: dict[str, bytes] = {}
    expected: list[Any] = []
    for i, (key, how, xs) in enumerate(plan):
        if how == "set":
            state[key] = xs
        elif how == "append":
            cur = state.get(key)
            if isinstance(cur, list):
                cur.extend(xs)
            else:
                state[key] = list(xs)
        elif how == "del":
            state.pop(key, None)
        else:  # a value larger than the inline limit: a chunk of its own in a keyframe
            state[key] = {"pad": "p" * 600, "xs": xs}
        ck = enc.encode(i + 1, state, force_key=(i == 0))
        stored.append((ck.kind, ck.body))
        chunks.update(ck.chunks)
        expected.append(scrub(loads(dumps(state)), N))  # as a restore gives it back
    renamed: dict[str, str] = {}
    new_chunks = dict(chunks)
    for h, b in chunks.items():
        nb = scrub_chunk(b, N)
        if nb is not None:
            renamed[h] = chunk_name(nb)
            new_chunks[renamed[h]] = nb
    bodies = [(k, scrub_checkpoint(k, b, N, renamed) or b) for k, b in stored]
    for n in range(len(bodies)):
        key = max(j for j in range(n + 1) if bodies[j][0] == "key")
        got = restore(bodies[key][1], new_chunks.__getitem__,
                      [b for _, b in bodies[key + 1:n + 1]])
        assert got == expected[n]
    for _, b in bodies:
        assert CARD.encode() not in b
    for h in renamed:
        assert CARD.encode() not in new_chunks[renamed[h]]
