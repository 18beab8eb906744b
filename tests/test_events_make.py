"""``make_event`` (the audit's fast constructor) makes the very Event ``Event(...)`` does."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

from tether.core.events import Event, make_event


def test_make_event_takes_every_field_in_order() -> None:
    # A field added to Event must be added here too, or the audit would make events without it.
    params = list(inspect.signature(make_event).parameters)
    assert params == [f.name for f in dataclasses.fields(Event)]


@pytest.mark.parametrize("args", [
    ("01JEXAMPLE0000000000000000", "run-a", 1, 0, 0, "run.started", "2026-12-05T06:00:00.000001Z",
     "system", (), {"goal": "g"}, "ab" * 32, "cd" * 32, "ef" * 32, ()),
    ("01JEXAMPLE0000000000000001", "run-b", 7, 2, 3, "effect.done", "2026-12-05T06:00:01.000000Z",
     "agent:x", ("01JEXAMPLE0000000000000000",), None, "12" * 32, "34" * 32, "56" * 32,
     (("outcome", "78" * 32), ("files", "9a" * 32))),
])
def test_make_event_is_the_dataclass_event(args: tuple[object, ...]) -> None:
    made, built = make_event(*args), Event(*args)  # type: ignore[arg-type]
    assert made == built and repr(made) == repr(built)
    assert dataclasses.astuple(made) == dataclasses.astuple(built)
    assert made.to_json() == built.to_json()
    assert pickle.loads(pickle.dumps(made)) == built  # noqa: S301 (our own bytes)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.kind = "changed"  # type: ignore[misc]
