"""A NUL character (``\\x00``) in agent- or user-controlled text, on both backends.

PostgreSQL's text cannot hold NUL; SQLite's can. Both must behave alike and lose nothing:
a failure whose exception text holds NUL fails its run with the reason escaped; a
blackboard key holding NUL fails the step, as any invalid key does; ``start_run`` refuses
NUL in each field, naming it. Anything that still reaches the PostgreSQL store holding NUL
fails its run, naming the run and the column, instead of being retried for ever. The runs
are driven by the real ``tether`` CLI (subprocesses); each store's rows are checked to be
the folds of its events when the test ends (tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.nul_agents import RENAME_ENV, fine
from tests.pgworkers import cli
from tether.core.ids import UlidSource
from tether.errors import Unstorable, UsageError
from tether.runtime.holding import must_get
from tether.runtime.journal import RunJournal
from tether.runtime.operator import send_command
from tether.runtime.runs import start_run
from tether.store import open_store


@pytest.fixture
def url(backend_url: str) -> str:
    """A fresh store of each backend (tests/conftest.py)."""
    return backend_url


def started(res: object) -> str:
    out = getattr(res, "stdout", "")
    m = re.search(r"started run (\S+)", out)
    assert m is not None, out
    return m.group(1)


def shown(url: str, run: str) -> dict[str, object]:
    res = cli("--store", url, "show", run, "--json")
    assert res.returncode == 0, res.stderr
    got: dict[str, object] = json.loads(res.stdout)
    return got


@pytest.mark.workers
def test_an_exception_holding_nul_fails_its_run_with_the_reason(url: str) -> None:
    t0 = time.monotonic()
    res = cli("--store", url, "run", "tests.nul_agents:failer", "--goal", "x", timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr  # failed, not given up on (2)
    assert time.monotonic() - t0 < 30  # at once, not after 60 s of retries
    assert "Traceback" not in res.stderr
    row = shown(url, started(res))
    assert row["status"] == "failed"
    assert r"RuntimeError: boom\x00boom" in str(row["reason"])
    assert "\x00" not in str(row["reason"])
    after = cli("--store", url, "run", "tests.nul_agents:fine", "--goal", "x", timeout=60)
    assert after.returncode == 0, after.stdout + after.stderr
    assert shown(url, started(after))["status"] == "done"


@pytest.mark.workers
def test_a_blackboard_key_holding_nul_fails_the_step(url: str) -> None:
    res = cli("--store", url, "run", "tests.nul_agents:board_nul", "--goal", "x",
              "--swarm", "s", timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    row = shown(url, started(res))
    assert row["status"] == "failed"
    reason = str(row["reason"])
    assert "step 1: ctx.board.set: the blackboard key 'k\\x00ey' contains a NUL" in reason
    assert "remove it" in reason
    after = cli("--store", url, "run", "tests.nul_agents:fine", "--goal", "x", "--swarm", "s",
                timeout=60)
    assert after.returncode == 0, after.stdout + after.stderr
    assert shown(url, started(after))["status"] == "done"


@pytest.mark.parametrize("field", ["goal", "name", "swarm", "parent", "actor"])
def test_start_run_refuses_nul_in_each_field(url: str, field: str) -> None:
    store = open_store(url)
    try:
        args: dict[str, Any] = {"goal": "x", field: "a\x00b"}
        with pytest.raises(UsageError) as err:
            start_run(store, fine, agent_ref="tests.nul_agents:fine", **args)
        msg = str(err.value)
        assert f"its {field} 'a\\x00b' contains a NUL character" in msg
        assert "remove it" in msg
        assert store.list_runs() == []
    finally:
        store.close()


@pytest.mark.workers
def test_nul_that_reaches_the_postgresql_store_fails_the_run_naming_the_column(
        pg_url: str) -> None:
    # Started under an agent named plainly; driven by a worker whose agent's name (its
    # events' actor) holds NUL: nothing before the store refuses it.
    bad = started(cli("--store", pg_url, "run", "tests.nul_agents:renamed", "--goal", "x",
                      "--detach"))
    good = started(cli("--store", pg_url, "run", "tests.nul_agents:fine", "--goal", "x",
                       "--detach"))
    t0 = time.monotonic()
    res = cli("--store", pg_url, "worker", "--until-idle", env={RENAME_ENV: "1"}, timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    assert time.monotonic() - t0 < 30  # one try, not a retry every 4 s for a minute
    assert "the store is failing" not in res.stdout + res.stderr
    row = shown(pg_url, bad)
    assert row["status"] == "failed"
    assert f"run {bad}: cannot store events.actor 'agent:nul\\x00named'" in str(row["reason"])
    assert shown(pg_url, good)["status"] == "done"  # other runs are not held up


def test_a_command_from_an_actor_holding_nul_is_refused(url: str) -> None:
    store = open_store(url)
    try:
        rid = start_run(store, fine, agent_ref="tests.nul_agents:fine", goal="x")
        with pytest.raises(UsageError, match=r"cannot queue pause: the actor 'ops\\x00' "
                                             "contains a NUL character"):
            send_command(store, rid, "pause", who="ops\x00")
        assert store.pending_commands([rid]) == []
    finally:
        store.close()


def test_the_postgresql_store_refuses_only_the_write_holding_nul(pg_url: str) -> None:
    # One batch, two runs' writes: the one whose event's actor holds NUL is refused
    # (Unstorable, naming run, table and column); the other commits.
    store = open_store(pg_url)
    try:
        runs = [start_run(store, fine, agent_ref="tests.nul_agents:fine", goal="x")
                for _ in range(2)]
        writes = []
        for rid, who in zip(runs, ["human:a\x00b", "human:ab"], strict=True):
            token = store.acquire(rid, "test", 30.0, time.time())
            assert token is not None
            j = RunJournal(store, must_get(store, rid), token, UlidSource(time.time), time.time)
            j.append("run.paused", {"reason": "by hand"}, actor=who)
            writes.append(j.take())
        bad, good = store.commit(writes)
        assert isinstance(bad, Unstorable)
        assert str(bad).startswith(f"run {runs[0]}: cannot store events.actor 'human:a\\x00b'")
        assert good is None
        assert [r.status for r in (must_get(store, rid) for rid in runs)] == ["running",
                                                                              "paused"]
    finally:
        store.close()
