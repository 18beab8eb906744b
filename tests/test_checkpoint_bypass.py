"""Edits that bypass the tracked containers' methods still reach the checkpoint.

``heapq`` writes list slots from C and never calls a method of the list it is given, and
``list.append(x, v)`` calls the base class's; neither marks a tracked list. The encoder
compares the lists it adopted with a snapshot of them at each step boundary, so a run
restored from its checkpoints (after a crash, a wake-up, a handover) has the edit. Each
case below runs a few steps on an adopted state, with the edit at one of three depths,
and restores the chain at every step.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import pytest

from tests.test_checkpoint_tracking import Chain, State
from tether.core.canonical import dumps

Edit = Callable[[list[Any]], object]

HEAPQ: dict[str, Edit] = {
    "heappush": lambda h: heapq.heappush(h, [0, "urgent"]),
    "heappop": heapq.heappop,
    "heapify": heapq.heapify,
    "heapreplace": lambda h: heapq.heapreplace(h, [9, "later"]),
    "heappushpop": lambda h: heapq.heappushpop(h, [7, "soon"]),
    # Public from Python 3.14, private C functions before; whichever this Python has.
    **{name.strip("_"): getattr(heapq, name) for name in (
        "heapify_max", "_heapify_max", "heappop_max", "_heappop_max")
       if hasattr(heapq, name)},
    **{name.strip("_"): (lambda f: lambda h: f(h, [8, "max"]))(getattr(heapq, name))
       for name in ("heapreplace_max", "_heapreplace_max", "heappush_max",
                    "heappushpop_max") if hasattr(heapq, name)},
}

BASE: dict[str, Edit] = {
    "list.append": lambda x: list.append(x, [5, "appended"]),
    "list.extend": lambda x: list.extend(x, [[5, "extended"]]),
    "list.insert": lambda x: list.insert(x, 0, [5, "inserted"]),
    "list.setitem": lambda x: list.__setitem__(x, 1, [5, "set"]),
    "list.setslice": lambda x: list.__setitem__(x, slice(0, 2), [[5, "sliced"]]),
    "list.delitem": lambda x: list.__delitem__(x, 0),
    "list.pop": list.pop,
    "list.remove": lambda x: list.remove(x, x[1]),
    "list.sort": lambda x: list.sort(x, reverse=True),
    "list.reverse": list.reverse,
    "list.clear": list.clear,
    "list.iadd": lambda x: list.__iadd__(x, [[5, "added"]]),
    "list.imul": lambda x: list.__imul__(x, 2),
    "list.setitem_same_length": lambda x: list.__setitem__(x, 0, [3, "swapped"]),
}

# Where the list sits: (the state, a function from the state to the list).
PLACES: dict[str, tuple[Callable[[list[Any]], State], Callable[[State], list[Any]]]] = {
    "top": (lambda h: {"queue": h, "n": 0}, lambda s: s["queue"]),
    "in_dict": (lambda h: {"plan": {"queue": h, "name": "p"}}, lambda s: s["plan"]["queue"]),
    "in_list": (lambda h: {"work": [{"queue": h}, [1]]}, lambda s: s["work"][0]["queue"]),
}


def _heap() -> list[Any]:
    """Not a heap yet (heapify moves items), its items lists as after a restore."""
    return [[4, "d"], [2, "b"], [3, "c"], [1, "a"], [6, "f"]]


def _run(place: str, edit: Edit, *, restart: bool) -> None:
    build, get = PLACES[place]
    chain = Chain(keyframe_every=100, chunk_items=2)
    state = build(_heap())
    chain.encode(state)
    if restart:  # adopted by a primed encoder, as after a crash
        state = chain.restart()
    else:  # adopted because it is the same object at a second boundary
        chain.encode(state)
    for step in range(3):
        edit(get(state))
        chain.encode(state)
        assert chain.restore() == state, f"{place} step {step}"
    get(state).append([0, "by the method"])  # the marks still work afterwards
    chain.encode(state)
    assert chain.restore() == state


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("name", sorted(HEAPQ))
def test_heapq_on_a_state_list_reaches_the_checkpoint(name: str, place: str) -> None:
    _run(place, HEAPQ[name], restart=False)


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("name", sorted(BASE))
def test_a_base_class_edit_of_a_state_list_reaches_the_checkpoint(name: str, place: str) -> None:
    _run(place, BASE[name], restart=False)


@pytest.mark.parametrize("name", ["heappush", "heapify", "heapreplace", "list.setitem"])
def test_a_bypass_after_a_restart_reaches_the_checkpoint(name: str) -> None:
    _run("in_dict", {**HEAPQ, **BASE}[name], restart=True)


def test_an_equal_container_put_in_by_a_bypass_is_seen_when_it_changes_later() -> None:
    # The list still equals its snapshot after the bypass, so the step stores nothing;
    # the plain list it put in is edited in a later step, behind every mark.
    chain = Chain(keyframe_every=100, chunk_items=64)
    state: State = {"q": [[1], [2]]}
    chain.encode(state)
    chain.encode(state)
    list.__setitem__(state["q"], 0, [1])
    chain.encode(state)
    state["q"][0].append(5)
    chain.encode(state)
    assert chain.restore() == state == {"q": [[1, 5], [2]]}


def test_a_bypass_in_a_value_changed_by_its_methods_too_is_tracked_from_then_on() -> None:
    chain = Chain(keyframe_every=100, chunk_items=64)
    state: State = {"m": {"a": [[1]], "b": 0}}
    chain.encode(state)
    chain.encode(state)
    state["m"]["b"] = 1  # the whole value is stored: the bypass below is in it
    list.append(state["m"]["a"], [2])
    chain.encode(state)
    state["m"]["a"][1].append(3)  # the list the bypass put in, edited by its method
    chain.encode(state)
    assert chain.restore() == state == {"m": {"a": [[1], [2, 3]], "b": 1}}


def test_lists_that_left_are_let_go_and_looked_into_when_they_come_back() -> None:
    chain = Chain(keyframe_every=100, chunk_items=64)
    state: State = {"plan": {"steps": [[0], [1]]}}
    chain.encode(state)
    chain.encode(state)
    steps = state["plan"]["steps"]
    kept = steps.pop()  # out of the state, still held
    for i in range(150):  # a new list every step: the old one leaves
        steps[0] = [i]
        chain.encode(state)
    assert len(chain.encoder._roots["plan"].lists) < 100  # let go, not all 150 held
    steps.append(kept)  # back where it was, unchanged: is it still watched?
    chain.encode(state)
    heapq.heappush(steps[1], -1)
    chain.encode(state)
    assert chain.restore() == state == {"plan": {"steps": [[149], [-1, 1]]}}


def test_known_limit_a_number_swapped_for_an_equal_one_of_another_type() -> None:
    # Documented in core/tracked.py: the snapshot comparison is ==, and 1.0 == 1.
    chain = Chain(keyframe_every=100, chunk_items=64)
    state: State = {"heap": [1, 2, 3]}
    chain.encode(state)
    chain.encode(state)
    heapq.heapreplace(state["heap"], 1.0)
    chain.encode(state)
    assert dumps(state) == b'{"heap":[1.0,2,3]}'
    assert dumps(chain.restore()) == b'{"heap":[1,2,3]}'
