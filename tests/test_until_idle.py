"""``tether worker --until-idle`` with other workers on the same store: it ends when no run
is runnable or held by another live worker, not when it finds nothing to take.

Workers started together race for the oldest runs; one that loses every lease on its first
pass used to exit at once, as if the store were idle, while the others still drove the
runs. Here the race's outcome is made certain (the first worker has taken every run before
the second starts), on a SQLite file and on PostgreSQL, with real ``tether worker``
subprocesses: the second stays until every run is done, or, when the first is killed,
takes its runs over once their leases expire and stays until they are at rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import crashkit as ck
from tests import pg_agents
from tests.pgworkers import CliWorker, spawn
from tether import start_run
from tether.store import open_store
from tether.store.protocol import Store
from tether.testing import allow_tools

pytestmark = pytest.mark.workers

TTL = 1.0
"""The workers' lease: short, so a killed worker's runs are free again soon."""


@pytest.fixture
def shared(backend_url: str) -> Iterator[tuple[str, Store]]:
    """A store of each backend whose policy allows every tool."""
    store = open_store(backend_url)
    allow_tools(store)
    yield backend_url, store
    store.close()


def start(store: Store, n: int, steps: int) -> list[str]:
    """``n`` runs of the dwelling agent, half a second a step."""
    return [start_run(store, pg_agents.dwelling, agent_ref="tests.pg_agents:dwelling",
                      goal=f"steps={steps} dwell=0.5 #{i}") for i in range(n)]


def stop_all(*workers: CliWorker | None) -> None:
    for w in workers:
        if w is not None and w.proc.poll() is None:
            w.stop()


def test_a_worker_that_took_nothing_stays_until_every_run_is_done(
        shared: tuple[str, Store], tmp_path: Path) -> None:
    url, store = shared
    runs = start(store, 3, steps=4)
    side = tmp_path / "side.log"
    first = spawn(url, tmp_path, "first", side=side, ttl=TTL, until_idle=True)
    second = None
    try:
        first.wait_took(runs)  # the first pass of the second finds every lease held
        second = spawn(url, tmp_path, "second", side=side, ttl=TTL, until_idle=True)
        assert second.wait(timeout=120) == 0, second.logs()
        # It ended only once the runs had: none was still being driven.
        assert {r: ck.status_of(store, r) for r in runs} == dict.fromkeys(runs, "done"), \
            second.logs()
        assert second.took() == {}, second.logs()
        assert first.wait(timeout=60) == 0, first.logs()
    finally:
        stop_all(first, second)
    assert set(first.took()) == set(runs)
    ck.check_store(store, side, final=True)


def test_a_waiting_worker_takes_over_a_killed_workers_runs(
        shared: tuple[str, Store], tmp_path: Path) -> None:
    url, store = shared
    runs = start(store, 2, steps=20)  # still going when the second is up and the first killed
    side = tmp_path / "side.log"
    first = spawn(url, tmp_path, "first", side=side, ttl=TTL, until_idle=True)
    second = None
    try:
        first.wait_took(runs)
        second = spawn(url, tmp_path, "second", side=side, ttl=TTL, until_idle=True)
        second.wait_started()
        first.kill()  # SIGKILL: its leases stay until they expire
        assert second.wait(timeout=120) == 0, second.logs()
        # It waited for the dead worker's leases, took the runs and brought them to rest
        # (done, or paused with an effect in doubt that the kill cut short).
        assert ck.at_rest(store, runs), ({r: ck.status_of(store, r) for r in runs},
                                         second.logs())
        assert set(second.took()) == set(runs), second.logs()
    finally:
        stop_all(first, second)
    ck.check_store(store, side, final=False)
