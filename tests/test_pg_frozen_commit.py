"""A writer frozen (SIGSTOP) in the middle of a PostgreSQL commit, while it holds the
store's write lock: the server must be able to end its session.

The store relies on ``idle_in_transaction_session_timeout`` to free a lock whose holder
stalled. The server arms that timer only once it has answered a whole message sequence
(ReadyForQuery, after a Sync); a commit that sent its rows as a pipelined batch
(psycopg's ``executemany``) and froze before the batch's Sync would leave the server
waiting with the timer off and the lock held for ever. A commit sends each statement
whole, so wherever its process freezes the server is idle in the transaction, and
another process's commit goes through once the stall timeout has passed; the frozen
process, resumed, writes nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests import pgkit

pytest.register_assert_rewrite("tests.store_conformance")  # as the store tests import it

from tests.store_conformance import _ids, _Run  # noqa: E402
from tests.test_crash import stopped  # noqa: E402
from tether.errors import StoreLocked  # noqa: E402
from tether.store.postgres import PostgresStore  # noqa: E402
from tether.store.postgres_base import lock_key  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.crash, pytest.mark.raw_rows,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                 reason="reads process states in /proc")]

# The writer: one run, commits of 40 events (a pipelined batch would be 40 Bind/Execute
# pairs long; one statement of them passes libpq's 8 KiB write) and of 2, in turn, its
# lease renewed between commits; it prints its run's id, then exits at its first
# failure, saying which.
WRITER = """
import sys, time
from tests.store_conformance import _Run, _ids
from tether.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
ids = _ids()
r = _Run(ids.new(), ids)
assert store.commit([r.create()]) == [None]
r.fence = store.acquire(r.id, "frozen", 2.0, time.time())
print(r.id, flush=True)
try:
    for i in range(10**9):
        res = store.commit([r.write(40 if i % 2 else 2)])
        if res != [None]:
            print("refused", type(res[0]).__name__, res[0], flush=True)
            sys.exit(3)
        if store.renew({r.id: r.fence}, "frozen", 2.0, time.time()):
            print("lease lost", flush=True)
            sys.exit(3)
except Exception as exc:
    print("failed", type(exc).__name__, exc, flush=True)
    sys.exit(4)
"""


EVENTS = ("INSERT INTO events", "WITH s0 AS (INSERT INTO events")
"""How the statement that sends a commit's events begins (alone, or with the rest of
its write)."""


def _freeze_holding_the_lock(proc: subprocess.Popen[str], c: Any, key: int) -> tuple[int, str]:
    """SIGSTOP the writer until it is frozen holding the lock, best right after (or in)
    sending its events; the server session's (pid, state) then."""
    caught: tuple[int, str, str] | None = None
    for i in range(3000):
        os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not stopped(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        held = pgkit.lock_session(c, key)
        # Frozen while (or right after) sending its events is the case that matters;
        # after 1000 tries any moment inside the transaction will do.
        if held is not None and (held[2].lstrip().startswith(EVENTS) or i > 1000):
            caught = held
            break
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.002)
    assert caught is not None, "never caught the writer inside its write transaction"
    # The server may still be running what it was sent: wait for it to be idle. Frozen
    # mid-batch it would stay "active" (waiting for the Sync) and the timer stay off.
    deadline = time.monotonic() + 5
    while caught[1] != "idle in transaction" and time.monotonic() < deadline:
        time.sleep(0.05)
        caught = pgkit.lock_session(c, key) or caught
    return caught[0], caught[1]


def test_a_writer_frozen_mid_commit_holds_the_lock_only_until_the_stall_timeout(
        pg_url: str) -> None:
    url = pg_url
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    other = None
    try:
        assert proc.stdout is not None
        run = proc.stdout.readline().strip()
        assert run, proc.stderr.read() if proc.stderr else "the writer printed nothing"
        other = PostgresStore(url, lock_timeout=1.0)
        while other.latest_batch() < 5:  # let it commit a few times first
            time.sleep(0.05)
        key = lock_key(other.schema)
        with pgkit.connect(autocommit=True) as c:
            pid, state = _freeze_holding_the_lock(proc, c, key)
            assert state == "idle in transaction", (
                f"the frozen writer's session is {state!r}: the server is waiting for more "
                "of a message sequence, with the idle-in-transaction timer off")
            row = other.get_run(run)
            assert row is not None
            seq, batches = row.seq, other.latest_batch()

            # Another process commits: refused while the lock is held, through once the
            # server has ended the frozen session (stall timeout: 30 s).
            ids = _ids()
            mine = _Run(ids.new(), ids)
            t0 = time.monotonic()
            while True:
                try:
                    assert other.commit([mine.create()]) == [None]
                    break
                except StoreLocked:
                    assert time.monotonic() - t0 < 50, "the frozen writer held the lock > 50 s"
            waited = time.monotonic() - t0
            assert waited < 45, waited
            # The backend frees its locks as it aborts, then exits: give it a moment.
            deadline = time.monotonic() + 10
            while (gone := c.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                     (pid,)).fetchone()) != (0,) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert gone == (0,), "the frozen writer's session is still there"

        # Its lease (2 s) expired long ago: taken over, then the writer wakes.
        assert other.acquire(run, "taker", 60, time.time()) is not None
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode in (3, 4), (proc.returncode, out, err)
        row = other.get_run(run)
        assert row is not None and row.seq == seq, "the frozen writer wrote after it woke"
        assert [e.seq for e in other.events(run)][-1] == seq
        assert other.latest_batch() == batches + 1  # only the other process's commit
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.communicate()  # reaped, its pipes closed
        if other is not None:
            other.close()
