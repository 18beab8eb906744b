"""Ctrl-C in ``tether store copy``: a line saying what the destination holds, no traceback.

The copy commits before it verifies, so an interrupt means one of two things: nothing was
copied (the destination's transaction is rolled back), or the whole copy is written but
not yet verified. The moment is made certain, not timed: the copy waits on a lock a test
session holds on the destination's last table, and is interrupted there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests import pg_agents, pgkit
from tests.pgkit import SECRET, with_password
from tests.pgworkers import ROOT, tether_cmd
from tether import start_run
from tether.store import open_store
from tether.testing import allow_tools


def _wait_blocked(proc: subprocess.Popen[str] | None, query: str) -> None:
    """Until a session (the copy's, or any with ``proc`` None) waits on a lock at ``query``."""
    deadline = time.monotonic() + 120  # a bound against a hang, not a timed assertion
    with pgkit.connect(autocommit=True) as c:
        while time.monotonic() < deadline:
            assert proc is None or proc.poll() is None, "the copy ended before the lock"
            if c.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                         "AND query LIKE %s", (query + "%",)).fetchone():
                return
            time.sleep(0.05)
    pytest.fail(f"no session waited on the lock at {query!r}")


@pytest.mark.raw_rows
def test_ctrl_c_before_the_commit_says_nothing_was_copied(pg_url: str,
                                                         tmp_path: Path) -> None:
    src = tmp_path / "src.db"
    s = open_store(str(src))
    allow_tools(s)
    start_run(s, pg_agents.dwelling, agent_ref="tests.pg_agents:dwelling", goal="steps=1")
    s.close()
    open_store(pg_url).close()  # an empty store: the copy writes into it, or leaves it so
    dst = with_password(pg_url)
    env = {k: v for k, v in os.environ.items() if k != "TETHER_STORE"}
    env["PYTHONPATH"] = str(ROOT)
    with pgkit.connect() as holder:
        holder.execute(f"LOCK TABLE {pgkit.schema_of(pg_url)}.tokens IN SHARE MODE")
        proc = subprocess.Popen([*tether_cmd(), "store", "copy", str(src), dst], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_blocked(proc, 'COPY "tokens"')
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        holder.rollback()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and SECRET not in out + err, err
    text = " ".join(err.split())
    assert text.startswith("interrupted: nothing was copied"), err
    assert "run the command again" in text, err
    d = open_store(pg_url, create=False, readonly=True)
    try:
        assert d.list_runs() == []
    finally:
        d.close()


@pytest.mark.raw_rows
def test_ctrl_c_while_verifying_says_the_copy_is_whole_and_how_to_remove_it(
        pg_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src.db"
    s = open_store(str(src))
    allow_tools(s)
    start_run(s, pg_agents.dwelling, agent_ref="tests.pg_agents:dwelling", goal="steps=1")
    s.close()
    open_store(pg_url).close()
    dst = with_password(pg_url)
    schema = pgkit.schema_of(pg_url)
    env = {k: v for k, v in os.environ.items() if k != "TETHER_STORE"}
    env["PYTHONPATH"] = str(ROOT)
    # The copy is held at its last table; a second session then asks for the events table
    # outright, queued behind the copy's transaction: granted the moment the copy commits,
    # it holds the verify's first read of the events there.
    with pgkit.connect() as holder, pgkit.connect() as blocker:
        holder.execute(f"LOCK TABLE {schema}.tokens IN SHARE MODE")
        proc = subprocess.Popen([*tether_cmd(), "store", "copy", str(src), dst], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_blocked(proc, 'COPY "tokens"')
            queued = threading.Thread(target=blocker.execute, args=(
                f"LOCK TABLE {schema}.events IN ACCESS EXCLUSIVE MODE",))
            queued.start()
            _wait_blocked(None, f"LOCK TABLE {schema}.events")
            holder.rollback()  # the copy goes on, commits, and its verify waits on events
            queued.join(timeout=60)
            _wait_blocked(proc, "SELECT")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        blocker.rollback()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and SECRET not in out + err, err
    text = " ".join(err.split())
    assert text.startswith("interrupted while verifying the copy"), err
    assert "audit verify" in text and f"DROP SCHEMA {schema} CASCADE" in text, err
    d = open_store(pg_url, create=False, readonly=True)
    try:
        assert len(d.list_runs()) == 1  # the whole copy, committed before the verify
    finally:
        d.close()

