"""The checkpoint codec: deltas and keyframes restore exactly the state that was checkpointed."""

from __future__ import annotations

import copy
import dataclasses
import enum
import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.canonical import dumps, loads
from tether.core.checkpoint import Checkpoint, CheckpointEncoder, restore
from tether.errors import InvalidState, UsageError

State = dict[str, Any]


class Archive:
    """What a store keeps of one run's checkpoints: encoded steps and chunks by hash."""

    def __init__(self, encoder: CheckpointEncoder) -> None:
        self.encoder = encoder
        self.checkpoints: list[Checkpoint] = []
        self.chunks: dict[str, bytes] = {}
        self.snapshots: list[State] = []

    def encode(self, state: State) -> Checkpoint:
        ck = self.encoder.encode(len(self.checkpoints), state)
        self.checkpoints.append(ck)
        for h, body in ck.chunks:
            self.chunks.setdefault(h, body)
        self.snapshots.append(copy.deepcopy(state))  # the agent keeps mutating `state`
        return ck

    def restore(self, step: int) -> State:
        key = max(s for s in range(step + 1) if self.checkpoints[s].kind == "key")
        return restore(self.checkpoints[key].body, self.chunks.__getitem__,
                       [c.body for c in self.checkpoints[key + 1:step + 1]])

    @property
    def size(self) -> int:
        return sum(len(c.body) for c in self.checkpoints) + sum(map(len, self.chunks.values()))


# -- random agents -------------------------------------------------------------

KEYS = ("messages", "notes", "plan", "memo", "count")
CHARS = st.characters(exclude_categories=("Cs",))  # lone surrogates are not UTF-8
LEAF = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False) | st.text(CHARS, max_size=12))
ITEM = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "tool"]),
                           "content": st.text(CHARS, max_size=20)}),
    st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(CHARS, max_size=4), inner, max_size=3), max_leaves=6),
)
VALUE = st.lists(ITEM, max_size=6) | ITEM
OP = st.one_of(
    # Growing at the end is what agents do most, so it is drawn most often.
    *[st.tuples(st.just("grow"), st.sampled_from(KEYS), st.lists(ITEM, min_size=1, max_size=4))] * 4,
    st.tuples(st.just("edit"), st.sampled_from(KEYS), st.integers(0, 50), ITEM),
    st.tuples(st.just("edit_inside"), st.sampled_from(KEYS), st.integers(0, 50), ITEM),
    st.tuples(st.just("shrink"), st.sampled_from(KEYS), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("replace"), st.sampled_from(KEYS), VALUE),
    st.tuples(st.just("scalar"), st.sampled_from(KEYS), LEAF),
    st.tuples(st.just("nested"), st.sampled_from(KEYS), st.sampled_from(["a", "b", "c"]), VALUE),
    st.tuples(st.just("remove"), st.sampled_from(KEYS)),
)
STEPS = st.lists(st.lists(OP, min_size=1, max_size=3), min_size=1, max_size=25)


def apply(state: State, op: tuple[Any, ...]) -> None:
    """Mutate ``state`` in place, as a step function would."""
    kind, key, *args = op
    value = state.get(key)
    if kind == "grow":
        if isinstance(value, list):
            value.extend(copy.deepcopy(args[0]))
        else:
            state[key] = copy.deepcopy(args[0])
    elif kind in ("edit", "edit_inside") and isinstance(value, list) and value:
        i = args[0] % len(value)
        if kind == "edit_inside" and isinstance(value[i], dict):
            value[i]["content"] = copy.deepcopy(args[1])  # an old message edited in place
        else:
            value[i] = copy.deepcopy(args[1])
    elif kind == "shrink" and isinstance(value, list):
        n, from_end = args
        if from_end:
            del value[max(len(value) - n, 0):]
        else:
            del value[:n]
    elif kind == "nested":
        if isinstance(value, dict):
            value[args[0]] = copy.deepcopy(args[1])
        else:
            state[key] = {args[0]: copy.deepcopy(args[1])}
    elif kind in ("replace", "scalar"):
        state[key] = copy.deepcopy(args[0])
    elif kind == "remove":
        state.pop(key, None)


@settings(max_examples=150, deadline=None)
@given(initial=st.dictionaries(st.sampled_from(KEYS), VALUE, max_size=4), steps=STEPS,
       keyframe_every=st.integers(1, 6), chunk_items=st.integers(1, 5))
def test_any_step_restores_to_the_state_checkpointed_there(
        initial: State, steps: list[list[tuple[Any, ...]]], keyframe_every: int,
        chunk_items: int) -> None:
    archive = Archive(CheckpointEncoder(keyframe_every=keyframe_every, chunk_items=chunk_items))
    state = copy.deepcopy(initial)
    archive.encode(state)
    for ops in steps:
        for op in ops:
            apply(state, op)
        archive.encode(state)

    assert archive.checkpoints[0].kind == "key"
    for step, expected in enumerate(archive.snapshots):
        assert archive.restore(step) == expected, f"step {step}"


@settings(max_examples=75, deadline=None)
@given(initial=st.dictionaries(st.sampled_from(KEYS), VALUE, max_size=4), steps=STEPS,
       resume_at=st.integers(0, 24), keyframe_every=st.integers(1, 6),
       chunk_items=st.integers(1, 5))
def test_an_encoder_primed_with_a_restored_state_continues_the_chain(
        initial: State, steps: list[list[tuple[Any, ...]]], resume_at: int, keyframe_every: int,
        chunk_items: int) -> None:
    # After a crash the worker restores step `resume_at` and checkpoints on from there.
    first = Archive(CheckpointEncoder(keyframe_every=keyframe_every, chunk_items=chunk_items))
    state = copy.deepcopy(initial)
    first.encode(state)
    resume_at = min(resume_at, len(steps))
    for ops in steps[:resume_at]:
        for op in ops:
            apply(state, op)
        first.encode(state)
    state = first.restore(resume_at)
    last_key = max(s for s in range(resume_at + 1) if first.checkpoints[s].kind == "key")
    enc = CheckpointEncoder(keyframe_every=keyframe_every, chunk_items=chunk_items)
    enc.prime(state, last_key_step=last_key)
    resumed = Archive(enc)
    resumed.checkpoints, resumed.chunks = list(first.checkpoints), dict(first.chunks)
    resumed.snapshots = list(first.snapshots)
    for ops in steps[resume_at:]:
        for op in ops:
            apply(state, op)
        resumed.encode(state)

    for step, expected in enumerate(resumed.snapshots):
        assert resumed.restore(step) == expected, f"step {step}"


# -- what the deltas look like -------------------------------------------------

def test_a_list_that_only_grows_is_stored_as_appends_of_constant_size() -> None:
    enc = CheckpointEncoder(keyframe_every=10_000)
    state: State = {"goal": "summarise the inbox", "messages": []}
    assert enc.encode(0, state).kind == "key"
    sizes = []
    for step in range(1, 301):
        state["messages"].append({"role": "assistant", "content": f"reply {step:04d} " + "x" * 80})
        ck = enc.encode(step, state)
        assert ck.kind == "delta"
        assert loads(ck.body) == {"app": {"messages": [state["messages"][-1]]}}
        sizes.append(len(ck.body))
    assert len(set(sizes)) == 1  # the 300th step costs what the first did
    state["messages"] += [{"role": "tool", "content": "a"}, {"role": "tool", "content": "b"}]
    assert loads(enc.encode(301, state).body) == {"app": {"messages": state["messages"][-2:]}}
    assert enc.encode(302, state).body == dumps({})  # nothing changed: an empty delta


def test_keyframes_reference_chunks_instead_of_copying_the_history() -> None:
    archive = Archive(CheckpointEncoder(keyframe_every=32, chunk_items=64))
    text = ("The quarterly numbers look fine, but the vendor invoice from March is missing; "
            "I will ask accounts payable and check the shared drive before the next step. -- ops bot")
    state: State = {"goal": "reconcile invoices", "messages": []}
    for step in range(1000):
        message = {"role": "user" if step % 2 else "assistant", "content": f"{step:05d} {text}"}
        assert 190 <= len(dumps(message)) <= 210
        state["messages"].append(message)
        archive.encode(state)

    keyframes = [c for c in archive.checkpoints if c.kind == "key"]
    assert len(keyframes) == 1000 // 32 + 1
    refs = [loads(k.body)["messages"]["l"] for k in keyframes[2:]]
    assert len(refs[-1]) == 1000 // 64
    # A keyframe reuses the chunk hashes of the one before it and only adds new ones.
    assert all(later[:len(earlier)] == earlier for earlier, later in itertools.pairwise(refs))
    assert set(refs[-1]) <= set(archive.chunks)
    assert len(archive.chunks) <= len(refs[-1]) + 1  # + the step-32 list, short but > 512 bytes
    assert max(len(k.body) for k in keyframes) < 64 * 210 + (1000 // 64) * 70 + 200
    assert archive.size / 1000 < 1200, f"{archive.size / 1000:.0f} bytes per step"
    assert archive.restore(999) == state
    assert archive.restore(500) == archive.snapshots[500]


def test_in_place_mutation_of_an_old_element_is_stored_as_set() -> None:
    archive = Archive(CheckpointEncoder(keyframe_every=100))
    state: State = {"messages": [{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "hello"}]}
    archive.encode(state)
    state["messages"][0]["content"] = "hi, edited"  # same list, same length, old element changed
    ck = archive.encode(state)
    assert loads(ck.body) == {"set": {"messages": state["messages"]}}
    state["messages"][1]["content"] = "hello again"
    state["messages"].append({"role": "user", "content": "and a new one"})  # edit + append
    ck = archive.encode(state)
    assert loads(ck.body) == {"set": {"messages": state["messages"]}}
    state["messages"][-1] = {"role": "user", "content": "and a new one", "extra": 1}
    assert "set" in loads(archive.encode(state).body)
    assert [archive.restore(s) for s in range(4)] == archive.snapshots


def test_added_removed_and_replaced_keys() -> None:
    archive = Archive(CheckpointEncoder(keyframe_every=100))
    state: State = {"a": [1, 2], "b": "x", "c": {"d": 1}}
    archive.encode(state)
    del state["b"]
    state["c"]["d"] = 2
    state["e"] = []
    state["a"] = [1]
    assert loads(archive.encode(state).body) == {
        "set": {"a": [1], "c": {"d": 2}, "e": []}, "del": ["b"]}
    state["e"].append("first")
    assert loads(archive.encode(state).body) == {"app": {"e": ["first"]}}
    assert [archive.restore(s) for s in range(3)] == archive.snapshots


# -- what cannot be checkpointed -------------------------------------------------

class Note:
    """Not JSON."""


@pytest.mark.parametrize(("state", "where"), [
    ({"seen": {1, 2}}, "seen (a set)"),
    ({"plan": {"steps": ["read", Note()]}}, "plan.steps[1] (a Note)"),
    ({"index": {"by_id": {3: "x"}}}, "index.by_id[3] (keys must be strings)"),
    ({"ok": 1, 5: "x"}, "state key 5 is not a string"),
], ids=["set", "object", "nested-int-key", "top-level-int-key"])
def test_non_json_state_raises_invalid_state_naming_key_and_step(state: State, where: str) -> None:
    enc = CheckpointEncoder(run="01RUN")
    enc.encode(6, {"ok": 1})
    with pytest.raises(InvalidState) as info:
        enc.encode(7, state)
    message = str(info.value)
    assert where in message
    assert "step 7" in message
    assert "01RUN" in message
    assert isinstance(info.value, UsageError)
    # The failed step left nothing behind: the next checkpoint is a delta from step 6.
    assert loads(enc.encode(8, {"ok": 2}).body) == {"set": {"ok": 2}}


@dataclasses.dataclass
class Point:
    x: int


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize("value", [
    datetime(2024, 5, 1, tzinfo=UTC), Point(1), uuid.UUID(int=7), Colour.RED,
    float("nan"), float("inf"),
], ids=["datetime", "dataclass", "uuid", "enum", "nan", "infinity"])
def test_values_json_cannot_hold_are_refused_not_silently_converted(value: Any) -> None:
    # orjson encodes these (as a string, a dict or null), so they would come back from a
    # restore as something else and a resumed step would see a different state.
    enc = CheckpointEncoder(run="01RUN")
    with pytest.raises(InvalidState, match=r"step 3: state key when"):
        enc.encode(3, {"when": [value]})


@pytest.mark.parametrize("state", [[1, 2], None, "state", [("a", 1)]])
def test_the_state_must_be_a_dict(state: Any) -> None:
    with pytest.raises(InvalidState, match="step 4: state must be a dict"):
        CheckpointEncoder(run="01RUN").encode(4, state)
