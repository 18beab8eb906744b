"""The worker's storage failure episodes, on an injected clock: backoff, one log line per
state change, giving up, and no flip-flopping on a nearly full disk."""

from __future__ import annotations

import logging

import pytest

from tether.core.backoff import Backoff
from tether.errors import StorageFull, StoreLocked
from tether.runtime.storage_health import StoreHealth


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def health(clock: Clock, give_up: float | None = 60.0) -> StoreHealth:
    return StoreHealth("w1", Backoff(base=0.1, cap=5.0), give_up_after=give_up, now=clock,
                       rand=lambda: 0.0)


def drive(h: StoreHealth, clock: Clock, seconds: float, *, step: float = 0.01) -> int:
    """A worker loop that tries a pass whenever allowed and fails each time; its attempts."""
    tries, end = 0, clock.t + seconds
    while clock.t < end:
        if h.wait() == 0:
            h.attempt()
            h.failed(StorageFull("disk full"))
            tries += 1
        clock.t += step
    return tries


def test_a_minute_of_failing_storage_is_a_few_dozen_tries_and_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    h = health(clock)
    with caplog.at_level(logging.WARNING, "tether.worker"):
        h.failed(StorageFull("disk full"))
        tries = drive(h, clock, 60.0)
    # Polling every 0.02 s would have been 3,000 tries and as many lines.
    assert tries + 1 <= h.schedule.most_attempts(60.0) == 29
    assert [r.getMessage() for r in caplog.records if "failing" in r.getMessage()] == [
        "worker w1: the store is failing; retrying with backoff (0.1 s doubling to 5 s apart), "
        "no run is failed for it; --until-idle gives up after 60 s: disk full"]
    err = h.exhausted()
    assert isinstance(err, StorageFull) and "gave up after 60.0 s" in str(err)
    assert "disk full" in str(err)


def test_not_exhausted_before_give_up_after_nor_without_a_limit() -> None:
    clock = Clock()
    h, forever = health(clock), health(clock, give_up=None)
    for x in (h, forever):
        x.failed(StorageFull("disk full"))
    drive(h, clock, 59.0)
    assert h.exhausted() is None
    clock.t += 3600
    assert forever.exhausted() is None and forever.failing
    assert h.wait() <= 5.0  # capped: noticed within 5 s once space is freed


def test_a_new_kind_of_failure_is_a_new_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    h = health(clock)
    with caplog.at_level(logging.WARNING, "tether.worker"):
        for _ in range(5):
            h.failed(StorageFull("disk full"))
        h.failed(StoreLocked("locked"))
        h.failed(StoreLocked("locked"))
    assert len(caplog.records) == 2
    assert "now with: locked" in caplog.records[1].getMessage()


def test_a_nearly_full_disk_does_not_flip_the_state_nor_reset_the_backoff(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    h = health(clock)
    with caplog.at_level(logging.WARNING, "tether.worker"):
        h.failed(StorageFull("disk full"))
        for _ in range(50):  # a small write goes through, the next big one fails
            clock.t += h.wait() or 0.01
            h.attempt()
            h.worked()
            h.settle()
            clock.t += 0.5
            h.failed(StorageFull("disk full"))
        assert h.failing and h.attempts == 51
        assert len(caplog.records) == 1
        assert h.exhausted() is None  # writes did go through: not a minute without one
        h.worked()
        clock.t += 5.0
        h.settle()
    assert not h.failing and h.wait() == 0
    assert caplog.records[-1].getMessage().startswith("worker w1: the store works again after")


def test_before_pass_backs_off_gives_up_and_sees_writes_go_through() -> None:
    clock, writes = Clock(), [0]
    h = StoreHealth("w1", Backoff(base=0.1, cap=5.0), give_up_after=10.0, now=clock,
                    rand=lambda: 1.0, writes=lambda: writes[0])
    assert h.before_pass(give_up=True) == 0 and not h.failing
    writes[0] = 3  # writes before the failure say nothing
    h.failed(StorageFull("disk full"))
    assert h.before_pass(give_up=True) == pytest.approx(0.1)
    clock.t += 0.1
    assert h.before_pass(give_up=True) == 0 and h.attempts == 2  # this pass is an attempt
    assert h.before_pass(give_up=True) == pytest.approx(0.2)
    clock.t += 10.0
    assert h.before_pass(give_up=False) == 0  # a worker without --until-idle goes on
    with pytest.raises(StorageFull, match=r"gave up after 10\.1 s of failing storage \(3 attempts"):
        h.before_pass(give_up=True)
    writes[0] = 4  # a group commit went through
    assert h.before_pass(give_up=True) >= 0
    clock.t += 5.0
    assert h.before_pass(give_up=True) == 0 and not h.failing


def test_taking_leases_ends_an_episode_only_with_time_and_never_puts_off_giving_up() -> None:
    clock = Clock()
    h = health(clock, give_up=10.0)
    h.failed(StorageFull("disk full"))
    for _ in range(20):  # leases keep being taken (small writes) while commits keep failing
        clock.t += 0.6
        h.worked(progress=False)
        h.failed(StorageFull("disk full"))
    assert h.failing and isinstance(h.exhausted(), StorageFull)
    h.worked(progress=False)
    clock.t += 5.0
    h.settle()
    assert not h.failing  # nothing failed for a whole cap: the store works


def test_writes_landing_between_two_failures_restart_the_give_up_clock(
        caplog: pytest.LogCaptureFixture) -> None:
    # The worker's pass order: failed(committer.failure) first, then before_pass. Commits that
    # landed between two passes must be seen by the failure, not swallowed by it.
    clock, writes = Clock(), [0]
    h = StoreHealth("w1", Backoff(base=0.1, cap=5.0), give_up_after=20.0, now=clock,
                    rand=lambda: 0.0, writes=lambda: writes[0])
    t0 = clock.t
    h.failed(StorageFull("disk full"))
    clock.t = t0 + 8
    writes[0] = 6  # six group commits land (the tmpfs was remounted larger)
    clock.t = t0 + 9
    h.failed(StorageFull("disk full"))
    clock.t = t0 + 21
    h.before_pass(give_up=True)  # 13 s since a write landed: not 20
    # The writes are seen at the next look (t=9): 20 s from then, with none since, it gives up.
    clock.t = t0 + 28.9
    h.failed(StorageFull("disk full"))
    h.before_pass(give_up=True)
    clock.t = t0 + 29.1
    h.failed(StorageFull("disk full"))
    with pytest.raises(StorageFull, match=r"gave up after 29\.1 s of failing storage "
                       r"\(\d+ attempts; no write landed for 20\.1 s"):
        h.before_pass(give_up=True)


def test_a_worker_ending_after_writes_land_again_says_the_store_works_again(
        caplog: pytest.LogCaptureFixture) -> None:
    clock, writes = Clock(), [0]
    h = StoreHealth("w1", Backoff(base=0.1, cap=5.0), give_up_after=20.0, now=clock,
                    rand=lambda: 0.0, writes=lambda: writes[0])
    with caplog.at_level(logging.WARNING, "tether.worker"):
        h.failed(StorageFull("disk full"))
        clock.t += 3
        writes[0] = 2
        h.before_pass(give_up=True)
        clock.t += 1  # the runs finish; --until-idle ends before a whole cap of quiet
        h.close()
        h.close()  # said once
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[1].startswith("worker w1: the store works again after 3.0 s")


def test_a_worker_ending_while_the_store_still_fails_says_nothing_more(
        caplog: pytest.LogCaptureFixture) -> None:
    clock, writes = Clock(), [0]
    h = StoreHealth("w1", Backoff(base=0.1, cap=5.0), now=clock, rand=lambda: 0.0,
                    writes=lambda: writes[0])
    with caplog.at_level(logging.WARNING, "tether.worker"):
        h.failed(StorageFull("disk full"))
        writes[0] = 1
        h.failed(StorageFull("disk full"))  # the last thing seen was a failure
        h.close()
    assert len(caplog.records) == 1
