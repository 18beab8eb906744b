"""``tether store copy`` of a source that moves on while it is read.

The copy reads the source in one snapshot: consistent, but old once a worker (or a
command) writes to the source after it began. A copy that kept that old state and said
"ok" would have its runs resumed from before what the source's worker did meanwhile: an
irreversible effect done twice, once per store. So the copy looks again before the
destination commits, and refuses, leaving the destination empty. Here the source is
written at a moment made certain (from the copy's own progress callback, while it reads
the events table), on each backend, by a real second process or a second store handle.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import pg_agents
from tests.pgworkers import cli
from tether import start_run
from tether.copying import copy_store
from tether.errors import UsageError
from tether.store import open_store
from tether.testing import allow_tools


def _source(url: str) -> str:
    s = open_store(url)
    try:
        allow_tools(s)
        return start_run(s, pg_agents.dwelling, agent_ref="tests.pg_agents:dwelling",
                         goal="steps=2 dwell=0")
    finally:
        s.close()


def _runs(url: str | Path) -> list[str]:
    s = open_store(str(url), create=False, readonly=True)
    try:
        return [r.id for r in s.list_runs()]
    finally:
        s.close()


def _copy_while(src: str, dst: Path, write: object) -> str:
    """Copy ``src`` to ``dst``, calling ``write()`` once the events table is being read;
    the refusal's text."""
    done: list[bool] = []

    def progress(what: str, _done: int, _total: int) -> None:
        if what == "events" and not done:
            done.append(True)
            write()  # type: ignore[operator]

    with pytest.raises(UsageError) as err:
        copy_store(src, str(dst), progress=progress)
    assert done
    return str(err.value)


def test_a_worker_taking_a_run_mid_copy_undoes_the_copy(backend_url: str,
                                                        tmp_path: Path) -> None:
    run = _source(backend_url)
    dst = tmp_path / "dst.db"
    other = open_store(backend_url, create=False)
    try:
        msg = _copy_while(backend_url, dst,
                          lambda: other.acquire(run, "host-b:77", 600.0, time.time()))
    finally:
        other.close()
    assert "took, while the copy read the source, 1 run(s)" in msg and run in msg, msg
    assert "host-b:77" in msg and "nothing was copied" in msg, msg
    assert _runs(dst) == []  # the destination never committed
    assert _runs(backend_url) == [run]


def test_a_command_written_mid_copy_undoes_the_copy_and_a_later_copy_works(
        backend_url: str, tmp_path: Path) -> None:
    run = _source(backend_url)
    dst = tmp_path / "dst.db"

    def pause() -> None:
        res = cli("--store", backend_url, "pause", run)
        assert res.returncode == 0, res.stdout + res.stderr

    msg = _copy_while(backend_url, dst, pause)
    assert "changed while it was copied" in msg and "commands" in msg, msg
    assert "nothing was copied" in msg and "Stop every worker" in msg, msg
    assert _runs(dst) == []
    rep = copy_store(backend_url, str(dst))  # the empty destination takes the copy now
    assert rep.ok and rep.rows["commands"] == (1, 1), rep.to_json()


def test_the_report_says_to_run_workers_on_the_copy_only(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    _source(str(src))
    res = cli("store", "copy", str(src), str(dst))
    assert res.returncode == 0, res.stdout + res.stderr
    text = " ".join(res.stdout.split())
    assert f"next: run the workers on sqlite:///{dst} only" in text, text
    assert "a second time" in text, text
