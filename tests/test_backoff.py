"""The pure backoff schedule shared by the worker, the notifier and the model client."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.backoff import Backoff
from tether.errors import UsageError


def test_doubles_from_base_up_to_the_cap() -> None:
    b = Backoff(base=0.05, cap=1.0)
    assert [b.delay(n, 1.0) for n in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.delay(10_000, 1.0) == 1.0  # a long outage neither overflows nor grows past the cap


@given(attempt=st.integers(0, 500), rand=st.floats(-1, 2, allow_nan=False))
def test_jitter_stays_in_the_upper_half_of_the_full_wait(attempt: int, rand: float) -> None:
    b = Backoff(base=0.3, cap=20.0)
    full = b.full(attempt)
    assert full / 2 <= b.delay(attempt, rand) <= full <= 20.0


@given(seconds=st.floats(0, 120, allow_nan=False))
def test_most_attempts_bounds_any_loop_on_the_schedule(seconds: float) -> None:
    b = Backoff(base=0.05, cap=2.0)
    n = b.most_attempts(seconds)
    # n attempts fit with the shortest waits; n + 1 never do.
    assert sum(b.delay(i, 0.0) for i in range(n - 1)) <= seconds
    assert sum(b.delay(i, 0.0) for i in range(n)) > seconds


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(UsageError, match="base <= cap"):
        Backoff(base=2.0, cap=1.0)
    with pytest.raises(UsageError, match="factor"):
        Backoff(base=1.0, cap=2.0, factor=0.5)
    with pytest.raises(UsageError, match="never waits"):
        Backoff(base=0.0, cap=1.0).most_attempts(1.0)
