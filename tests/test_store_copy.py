"""``tether store copy``: a store moved between SQLite and PostgreSQL, either way, and
between files or schemas, faithfully, all or nothing, and verified.

The source is a real store made by the real CLI: the demo's night (a swarm's runs,
effects, an approval waiting, messages, blackboard and file versions, provenance links,
a policy and a swarm budget in the store chain), then a policy applied, a paused run a
worker can finish, an erased payload, an API token and a signed checkpoint. Each copy is
made by the CLI (a subprocess) and compared with its source row by row, table by table,
and through the store's own reads (every event with its hashes, the batch chain, the
signed checkpoints); `tether audit verify --key` passes on it. Crashes are real: the CLI
is killed with SIGKILL while it holds the destination's transaction, stopped there by a
lock a test session holds, so the moment is certain, not timed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import pgkit
from tests.crashkit import SIDE_ENV
from tests.pgkit import SECRET, with_password
from tests.pgkit import one_error as refused
from tests.pgworkers import ROOT, cli, tether_cmd
from tether.copying import copy_store
from tether.store import open_store
from tether.store.layout import BATCH, BATCH_BYTES, FETCH, LEASES, TABLES, in_batches

ALLOW = '[[rule]]\nid = "allow-all"\ndecide = "allow"\n'


def ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert res.returncode == 0, res.stdout + res.stderr
    assert SECRET not in res.stdout + res.stderr
    return res


@dataclass(frozen=True)
class Built:
    """The source store every test copies (never written by a test: clone it first)."""

    db: Path
    pub: Path
    resumable: str
    erased: str


def _event_of(db: Path, run_name: str, kind: str) -> str:
    s = open_store(str(db), create=False, readonly=True)
    try:
        run = next(r for r in s.list_runs() if r.name == run_name)
        return next(e.id for e in s.events(run.id) if e.kind == kind)
    finally:
        s.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("copy-source")
    ok(cli("demo", "--dir", str(base / "demo"), cwd=base))
    db = base / "demo" / "tether.db"
    (base / "allow.toml").write_text(ALLOW)
    made = ok(cli("--store", str(db), "run", "tests.pg_agents:dwelling", "--goal", "steps=2",
                  "--name", "resumable", "--detach", "--policy", str(base / "allow.toml"),
                  cwd=base))
    found = re.search(r"started run (\S+)", made.stdout)
    assert found is not None, made.stdout
    ok(cli("--store", str(db), "pause", found.group(1), cwd=base))
    erased = _event_of(db, "triage", "model.called")
    ok(cli("--store", str(db), "audit", "erase", erased, "--reason", "a copy keeps it",
           cwd=base))
    ok(cli("--store", str(db), "ui", "token", "create", "--name", "ada", "--role", "viewer",
           cwd=base))
    ok(cli("audit", "keygen", str(base / "k"), cwd=base))
    ok(cli("--store", str(db), "audit", "seal", "--key", str(base / "k.key"), cwd=base))
    return Built(db, base / "k.pub", found.group(1), erased)


def clone(built: Built, tmp_path: Path) -> Path:
    """A copy of the source file of our own (SQLite's backup), to change or to lease."""
    dest = tmp_path / "clone.db"
    with sqlite3.connect(built.db) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    a.close()
    b.close()
    return dest


@pytest.fixture
def pg() -> Iterator[str]:
    with pgkit.fresh_store_url("copy") as url:
        yield url


def rows(url: str | Path, *, leases: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every copied table's rows as stored, in their order (``leases``: the leases too)."""
    s = open_store(str(url), create=False, readonly=True)
    try:
        with s.snapshot():
            return {t.name: [r for b in s.export_rows(t.name).batches for r in b]
                    for t in (*TABLES, *([LEASES] if leases else []))}
    finally:
        s.close()


def reads(url: str | Path) -> dict[str, Any]:
    """What the store's own reads give: every event of every run (hashes, links to the
    one before, seals), the store chain, the batch chain, signed checkpoints, leaves."""
    s = open_store(str(url), create=False, readonly=True)
    try:
        return {"events": {r: s.events(r) for r in sorted(s.all_run_ids())},
                "store_events": s.store_events(), "batches": list(s.batches()),
                "signed": s.signed_checkpoints(), "leaves": s.leaf_hashes(),
                "runs": s.list_runs(), "effects": s.effects(), "approvals": s.approvals(),
                "messages": s.messages(), "versions": s.versions(), "links": s.links(),
                "tokens": s.tokens(), "fingerprint": s.get_meta("fingerprint_key")}
    finally:
        s.close()


def shown(url: str | Path, run: str) -> list[str]:
    """``tether runs``, ``tether show`` and ``tether events`` of ``run``, as JSON text."""
    return [ok(cli("--store", str(url), *args)).stdout
            for args in (("runs", "--json"), ("show", run, "--json"),
                         ("events", run, "--json"))]


def copied(src: str | Path, dst: str | Path, *extra: str) -> dict[str, Any]:
    res = ok(cli("store", "copy", str(src), str(dst), "--json", *extra))
    rep: dict[str, Any] = json.loads(res.stdout)
    assert rep["ok"] and not rep["mismatched"], rep
    assert all(v["source"] == v["destination"] for v in rep["rows"].values()), rep
    assert rep["verify"]["ok"] and rep["verify"]["checkpoints"] >= 1, rep
    assert len(rep["verify"]["erasures"]) == 1, rep
    return rep


@pytest.mark.workers
def test_sqlite_to_postgresql_and_back_is_the_same_store(built: Built, pg: str,
                                                         tmp_path: Path) -> None:
    there = copied(built.db, with_password(pg), "--key", str(built.pub))
    assert there["verify"]["signatures_checked"]
    assert there["verify"]["erasures"][0]["event"] == built.erased
    assert there["rows"]["events"]["source"] > 300
    back = tmp_path / "back.db"
    text = ok(cli("store", "copy", with_password(pg), str(back), "--key", str(built.pub)))
    assert "verify ok" in text.stdout and "signatures checked" in text.stdout, text.stdout
    for store in (pg, back):
        verified = ok(cli("--store", str(store), "audit", "verify", "--key", str(built.pub)))
        assert "signed checkpoint" in verified.stdout, verified.stdout
    source = rows(built.db)
    assert all(source[t.name] for t in TABLES if t.name not in ("commands", "chunks"))
    assert rows(pg) == source
    assert rows(back) == source
    assert reads(pg) == reads(built.db) == reads(back)
    assert shown(pg, built.resumable) == shown(built.db, built.resumable) == \
        shown(back, built.resumable)


@pytest.mark.workers
def test_a_worker_finishes_a_paused_run_on_the_copy(built: Built, pg: str,
                                                    tmp_path: Path) -> None:
    copied(built.db, pg)
    env = {SIDE_ENV: str(tmp_path / "side.log")}
    ok(cli("--store", pg, "resume", built.resumable, cwd=tmp_path))
    ok(cli("--store", pg, "worker", "--until-idle", cwd=tmp_path, env=env))
    status = json.loads(ok(cli("--store", pg, "show", built.resumable, "--json")).stdout)
    assert status["status"] == "done", status
    verified = json.loads(ok(cli("--store", pg, "audit", "verify", "--json", "--key",
                                 str(built.pub))).stdout)
    assert verified["ok"] and verified["unsealed"] > 0, verified
    # And back: the new steps are there, and the copy's copy goes on as well.
    back = tmp_path / "back.db"
    copied(pg, back)
    ok(cli("--store", str(back), "audit", "seal", "--key", str(built.pub.with_suffix(".key"))))
    ok(cli("--store", str(back), "audit", "verify", "--key", str(built.pub)))


def test_sqlite_to_sqlite_and_schema_to_schema(built: Built, tmp_path: Path) -> None:
    one = tmp_path / "one.db"
    copied(built.db, one)
    assert rows(one) == rows(built.db)
    with pgkit.fresh_store_url("copy_a") as a, pgkit.fresh_store_url("copy_b") as b:
        rep = copy_store(str(one), a)  # the operation itself, as a Python caller has it
        assert rep.ok and rep.total == sum(len(v) for v in rows(one).values())
        copied(a, b)
        assert rows(b) == rows(one)
        assert reads(b) == reads(one)


def test_a_destination_that_holds_rows_is_refused_untouched(built: Built, pg: str,
                                                            tmp_path: Path) -> None:
    full = clone(built, tmp_path)
    before = rows(full)
    line = refused(cli("store", "copy", str(built.db), str(full)))
    assert str(full) in line and "already holds a tether store with rows" in line, line
    assert "new SQLite path" in line and "?schema=NEW_NAME" in line, line
    assert rows(full) == before
    line = refused(cli("store", "copy", str(tmp_path / "none.db"), str(tmp_path / "new.db")))
    assert "no tether store at" in line and "none.db" in line, line
    assert not (tmp_path / "new.db").exists()  # a source that is not there makes nothing
    copy_store(str(built.db), pg)
    line = refused(cli("store", "copy", str(full), with_password(pg)))
    assert pgkit.schema_of(pg) in line, line
    assert "already holds a tether store with rows (in run_keys, runs, events" in line, line
    line = refused(cli("store", "copy", str(full), str(full)))
    assert "the source store itself" in line, line


@pytest.mark.raw_rows
def test_a_live_lease_is_refused_naming_the_run(built: Built, tmp_path: Path) -> None:
    src, dst = clone(built, tmp_path), tmp_path / "dst.db"
    s = open_store(str(src), create=False)
    token = s.acquire(built.resumable, "host-a:4242", 600.0, time.time())
    assert token is not None
    line = refused(cli("store", "copy", str(src), str(dst)))
    assert "resumable" in line and built.resumable in line and "host-a:4242" in line, line
    assert "Stop the workers" in line and "SIGTERM" in line and " UTC)" in line, line
    assert not dst.exists()
    s.release(built.resumable, "host-a:4242", token)
    s.close()
    rep = copied(src, dst)
    assert rep["skipped_leases"] >= 1 and rows(dst, leases=True)["leases"] == []


@pytest.mark.raw_rows
@pytest.mark.parametrize("change", [
    pytest.param("CREATE TABLE notes(x TEXT)", id="table"),
    pytest.param("ALTER TABLE runs ADD COLUMN owner_team TEXT", id="column"),
])
def test_what_the_copier_does_not_know_is_refused(built: Built, tmp_path: Path,
                                                  change: str) -> None:
    src, dst = clone(built, tmp_path), tmp_path / "dst.db"
    with sqlite3.connect(src) as c:
        c.execute(change)
    c.close()
    line = refused(cli("store", "copy", str(src), str(dst)))
    named = "table notes" if "notes" in change else "table runs has column owner_team"
    assert named in line and "does not know" in line, line
    assert not dst.exists()


@pytest.mark.raw_rows
def test_an_unknown_postgresql_table_is_refused(built: Built, pg: str, tmp_path: Path) -> None:
    copy_store(str(built.db), pg)
    with pgkit.connect(autocommit=True) as c:
        c.execute(f"CREATE TABLE {pgkit.schema_of(pg)}.later_feature(x bigint)")
    line = refused(cli("store", "copy", pg, str(tmp_path / "dst.db")))
    assert "table later_feature" in line and "does not know" in line, line


@pytest.mark.raw_rows
def test_another_schema_version_is_refused(built: Built, tmp_path: Path) -> None:
    src = clone(built, tmp_path)
    with sqlite3.connect(src) as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    c.close()
    line = refused(cli("store", "copy", str(src), str(tmp_path / "dst.db")))
    assert "schema version 99" in line and "upgrade tether" in line, line
    assert not (tmp_path / "dst.db").exists()



@pytest.mark.raw_rows
def test_a_source_that_does_not_verify_is_copied_as_it_is_and_said(built: Built,
                                                                  tmp_path: Path) -> None:
    src, dst = clone(built, tmp_path), tmp_path / "dst.db"
    with sqlite3.connect(src) as c:
        c.execute("UPDATE events SET payload = CAST('{\"forged\":1}' AS BLOB) WHERE rowid = "
                  "(SELECT max(rowid) FROM events WHERE kind = 'tool.called')")
    c.close()
    res = cli("store", "copy", str(src), str(dst))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "verify FAILED" in res.stdout and "hash mismatch" in res.stdout, res.stdout
    assert "does not check out" in res.stdout and "audit verify" in res.stdout, res.stdout
    assert rows(dst) == rows(src)  # as it is: a copy does not mend, nor hide, a forgery

def _spawn_copy(src: str | Path, dst: str | Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_STORE"}
    env["PYTHONPATH"] = str(ROOT)
    with open(tmp_path / "copy.out", "wb") as out:
        return subprocess.Popen([*tether_cmd(), "store", "copy", str(src), str(dst)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_blocked(proc: subprocess.Popen[bytes], query: str) -> None:
    """Until a session runs ``query...`` and waits on a lock (the copy's, held by us)."""
    deadline = time.monotonic() + 120  # a bound against a hang, not a timed assertion
    with pgkit.connect(autocommit=True) as c:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the copy ended before it reached the lock"
            row = c.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND query LIKE %s", (query + "%",)).fetchone()
            if row:
                return
            time.sleep(0.05)
    pytest.fail(f"no session waited on the lock at {query!r}")


def _killed(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def _empty(url: str | Path, built: Built) -> None:
    left = rows(url, leases=True)
    assert {t: r for t, r in left.items() if r and t != "meta"} == {}
    assert {k for k, _ in left["meta"]} == {"schema_version", "x.fingerprint_key"}
    assert reads(url)["fingerprint"] != reads(built.db)["fingerprint"]


@pytest.mark.crash
def test_a_copy_killed_while_writing_postgresql_leaves_it_empty(built: Built, pg: str,
                                                                tmp_path: Path) -> None:
    open_store(pg).close()  # an empty store: the copy writes into it, or leaves it so
    with pgkit.connect() as holder:
        # SHARE lets the copy read the table (it checks it is empty) but not write it:
        # the copy stops at its last table, every other one written in its transaction.
        holder.execute(f"LOCK TABLE {pgkit.schema_of(pg)}.tokens IN SHARE MODE")
        proc = _spawn_copy(built.db, pg, tmp_path)
        try:
            _wait_blocked(proc, "COPY \"tokens\"")
            _killed(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        holder.rollback()
    _empty(pg, built)
    copied(built.db, pg)  # and a copy into it now goes through
    assert rows(pg) == rows(built.db)


@pytest.mark.crash
def test_a_copy_killed_while_writing_sqlite_leaves_it_empty(built: Built, pg: str,
                                                            tmp_path: Path) -> None:
    copy_store(str(built.db), pg)
    dst = tmp_path / "dst.db"
    with pgkit.connect() as holder:
        # The copy reads the source table by table in one snapshot: locked, the last
        # one stops it with every other table written into the SQLite file's transaction.
        holder.execute(f"LOCK TABLE {pgkit.schema_of(pg)}.tokens IN ACCESS EXCLUSIVE MODE")
        proc = _spawn_copy(pg, dst, tmp_path)
        try:
            _wait_blocked(proc, "SELECT count(*) FROM tokens")
            _killed(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        holder.rollback()
    _empty(dst, built)
    copied(pg, dst)
    assert rows(dst) == rows(built.db)


def test_copy_help_says_what_it_does() -> None:
    res = ok(cli("store", "copy", "--help"))
    text = " ".join(res.stdout.replace("│", " ").split())
    for part in ("SRC", "DST", "--key", "--json", "one snapshot", "one transaction",
                 "stop the workers", "docs/postgres.md#moving-a-store"):
        assert part in text, res.stdout


class _Spy:
    """A real SQLite cursor that remembers how many rows each fetch asked for."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur, self.asked = cur, []  # type: list[int]

    def fetchmany(self, size: int) -> list[Any]:
        self.asked.append(size)
        return self.cur.fetchmany(size)


def test_batches_stay_bounded_in_rows_and_bytes(tmp_path: Path) -> None:
    big = 3 << 20
    values = [b"s"] * 5000 + [bytes(big)] + [b"s"] * 10 + [bytes(big)] * 5 + [b"s"] * 10
    with sqlite3.connect(tmp_path / "t.db") as c:
        c.execute("CREATE TABLE t(b BLOB)")
        c.executemany("INSERT INTO t VALUES(?)", [(v,) for v in values])
        spy = _Spy(c.execute("SELECT b FROM t ORDER BY rowid"))
        batches = list(in_batches(spy))
    c.close()
    assert [r[0] for b in batches for r in b] == values
    assert all(len(b) <= BATCH for b in batches)
    assert all(sum(len(r[0]) for r in b) < BATCH_BYTES + big for b in batches)
    assert max(spy.asked) == FETCH  # small rows: few round trips
    first_big = next(i for i, n in enumerate(spy.asked) if sum(spy.asked[:i + 1]) > 5000)
    assert set(spy.asked[first_big + 1:]) == {1}  # then one at a time, never a table whole
