"""PostgresStore: the conformance suite on a real PostgreSQL server, then what only it has.

Each store lives in a fresh schema of database ``test`` at 127.0.0.1:5432 (user
``postgres``, trust auth; ``TETHER_TEST_PG`` names another server), unique per test
and per xdist worker, dropped with CASCADE at teardown. Where no server answers, the
module is skipped with the reason, except under CI, where that is a failure.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import pgkit
from tether.core.checkpoint import CheckpointEncoder
from tether.errors import SchemaTooNew, StorageError, StoreError, StoreLocked, UsageError
from tether.store import open_store, postgres_schema, schema
from tether.store.postgres import PostgresStore
from tether.store.protocol import Store

pgkit.require_server()  # the whole module is about the server: skips it (fails it under CI)
SERVER = pgkit.server_url()

pytest.register_assert_rewrite("tests.store_conformance")

# The shared tests, collected here once for this backend; __all__ there lists only tests.
from tests.store_conformance import *  # noqa: E402, F403
from tests.store_conformance import _ids, _Run  # noqa: E402

# The conformance tests write rows of their own making, without the events they fold from.
pytestmark = pytest.mark.raw_rows


def _admin(sql: str, *args: object) -> None:
    with pgkit.connect(autocommit=True) as c:
        c.execute(sql, args)


@pytest.fixture
def schemas() -> Iterator[Callable[[], str]]:
    """Fresh schema names for a test, every one dropped at teardown."""
    made: list[str] = []

    def make() -> str:
        made.append(pgkit.new_schema_name())
        return made[-1]

    yield make
    for name in made:
        pgkit.drop_schema(name)


url_of = pgkit.store_url


@pytest.fixture
def store_factory(schemas: Callable[[], str]) -> Iterator[Callable[[], Store]]:
    stores: list[PostgresStore] = []

    def make() -> Store:
        stores.append(PostgresStore(url_of(schemas())))
        return stores[-1]

    yield make
    for s in stores:
        s.close()


@pytest.fixture
def open_backup() -> Iterator[Callable[[str], Store]]:
    """Restores what ``backup`` wrote (a pg_dump archive) into a new database and opens
    the store there, as an operator restoring it would."""
    opened: list[PostgresStore] = []
    databases: list[str] = []

    def open_(path: str) -> Store:
        db = pgkit.new_schema_name("restore")
        _admin(f'CREATE DATABASE "{db}"')
        databases.append(db)
        target = pgkit.database_url(db)
        subprocess.run(["pg_restore", "--no-owner", f"--dbname={target}", path], check=True,
                       capture_output=True)
        with psycopg.connect(target) as c:
            (name,), = c.execute("SELECT table_schema FROM information_schema.tables "
                                 "WHERE table_name = 'meta'").fetchall()
        opened.append(PostgresStore(f"{target}?schema={name}", create=False))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()
    for db in databases:
        _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if shutil.which("pg_restore") is None:  # pragma: no cover - the client tools are in the image
    test_backup_is_a_readable_copy_and_refuses_an_existing_path = pytest.mark.skip(
        reason="pg_restore is not installed")(
        test_backup_is_a_readable_copy_and_refuses_an_existing_path)  # noqa: F405


# -- what only PostgreSQL has ----------------------------------------------------

def test_the_schema_matches_the_sqlite_schema_version() -> None:
    """A SQLite migration must land with its PostgreSQL counterpart (postgres_schema)."""
    assert postgres_schema.VERSION == schema.VERSION


def test_every_sqlite_table_and_column_exists_alike(tmp_path: Path,
                                                    schemas: Callable[[], str]) -> None:
    """Same table and column names as SQLite at its current version, so the row codecs
    and the other helper's mixins address both alike (PostgreSQL adds only ``rowid``)."""
    from tether.store.sqlite import SQLiteStore
    lite = SQLiteStore(tmp_path / "s.db")
    try:
        want = {t: [r[1] for r in lite._conn().execute(f"PRAGMA table_info({t})")]
                for (t,) in lite._conn().execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'")}
    finally:
        lite.close()
    name = schemas()
    store = PostgresStore(url_of(name))
    try:
        got: dict[str, list[str]] = {}
        for t, col in store._read("SELECT table_name, column_name FROM information_schema.columns "
                                  "WHERE table_schema = %s ORDER BY ordinal_position", (name,)):
            got.setdefault(t, []).append(col)
        assert set(got) == set(want) == set(postgres_schema.TABLES)
        for t, cols in want.items():
            assert [c for c in got[t] if c != "rowid"] == cols, t
        assert store.check_integrity() == []
    finally:
        store.close()


def test_open_store_takes_a_postgresql_url_with_a_schema(schemas: Callable[[], str]) -> None:
    name = schemas()
    for scheme in ("postgresql", "postgres"):
        store = open_store(f"{scheme}{SERVER.partition(':')[1]}{SERVER.partition(':')[2]}"
                           f"?schema={name}&application_name=tether-tests")
        try:
            assert isinstance(store, PostgresStore) and store.schema == name
            assert store.get_meta("fingerprint_key") is not None
        finally:
            store.close()


@pytest.mark.parametrize("bad", ["1abc", "a-b", "x;drop", "a b", "", "é"])
def test_a_schema_that_is_not_a_plain_identifier_is_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="not a plain identifier"):
        open_store(f"{SERVER}?schema={bad}")


def test_a_password_is_never_shown(schemas: Callable[[], str]) -> None:
    """Not in ``url`` (what messages print), nor in the error of a failed connection."""
    with pytest.raises(StorageError) as info:
        PostgresStore("postgresql://someone:s3cret-pw@127.0.0.1:1/test?schema=x")
    assert "s3cret" not in str(info.value) and "cannot reach the database" in str(info.value)
    store = PostgresStore(SERVER.replace("postgres@", "postgres:hunter2@") +
                          f"?schema={schemas()}")  # trust auth: the password is not needed
    try:
        assert "hunter2" not in store.url and store.url.startswith("postgresql://postgres@")
    finally:
        store.close()


def test_stores_in_two_schemas_are_apart(store_factory: Callable[[], Store]) -> None:
    a, b = store_factory(), store_factory()
    a.set_meta("who", "a")
    assert b.get_meta("who") is None and a.get_meta("who") == "a"


def test_a_missing_store_is_not_created_when_asked_not_to(schemas: Callable[[], str]) -> None:
    with pytest.raises(StoreError, match="no tether store in schema"):
        open_store(url_of(schemas()), create=False)
    with pytest.raises(StoreError, match="no tether store in schema"):
        open_store(url_of(schemas()), readonly=True)


def test_readonly_reads_and_refuses_to_write(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    assert isinstance(store, PostgresStore)
    store.set_meta("k", "v")
    ro = open_store(store.url, readonly=True)
    try:
        assert ro.get_meta("k") == "v"
        with pytest.raises(StoreError, match="read-only"):
            ro.set_meta("k", "w")
    finally:
        ro.close()


def test_a_newer_store_is_refused(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    assert isinstance(store, PostgresStore)
    with store._tx() as c:
        c.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'",
                  (str(postgres_schema.VERSION + 1),))
    with pytest.raises(SchemaTooNew, match="upgrade tether"):
        PostgresStore(store.url)


def test_a_writer_waits_for_the_lock_then_gives_up(store_factory: Callable[[], Store]) -> None:
    """Commits serialize on the store's advisory lock; a second process's writer waits at
    most lock_timeout, then StoreLocked names the store."""
    store = store_factory()
    assert isinstance(store, PostgresStore)
    other = PostgresStore(store.url, lock_timeout=0.3)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._tx():
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        began = time.monotonic()
        with pytest.raises(StoreLocked, match="locked by another writer"):
            other.set_meta("k", "v")
        assert 0.25 < time.monotonic() - began < 5
    finally:
        release.set()
        t.join()
        other.close()
    other = PostgresStore(store.url, lock_timeout=0.3)
    try:
        other.set_meta("k", "v")  # free again
    finally:
        other.close()


def test_backup_names_pg_dump_when_it_fails(store_factory: Callable[[], Store],
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_factory()
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_dump to be found
    with pytest.raises(UsageError, match="needs pg_dump"):
        store.backup(str(tmp_path / "copy.dump"))
    assert not (tmp_path / "copy.dump").exists()



def test_backup_into_a_missing_folder_is_a_usage_error(store_factory: Callable[[], Store],
                                                       tmp_path: Path) -> None:
    """Was a FileNotFoundError traceback (adversarial review)."""
    with pytest.raises(UsageError, match="does not exist"):
        store_factory().backup(str(tmp_path / "no-such-folder" / "copy.dump"))
    assert not (tmp_path / "no-such-folder").exists()

_RACER = """
import json, sys, time
from tether.store.postgres import PostgresStore
from tests.store_conformance import _Run, _ids
url, me, writes = sys.argv[1], sys.argv[2], int(sys.argv[4])
runs = sys.argv[3].split(",") if sys.argv[3] else []
store = PostgresStore(url)
got = store.acquire_many(runs, me, 60, time.time())
refused = 0
if writes:  # append to the run this process created, then say what it got
    ids = _ids()
    r = _Run(ids.new(), ids)
    assert store.commit([r.create()]) == [None]
    r.fence = store.acquire(r.id, me, 60, time.time())
    for step in range(1, writes + 1):
        refused += store.commit([r.write(2, step=step)]) != [None]
print(json.dumps({"got": got, "refused": refused}))
store.close()
"""


def _race(url: str, args: list[list[str]]) -> list[dict[str, Any]]:
    """Start one process per argument list at once; what each printed."""
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, url, *a], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
             for a in args]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    return outs


def test_leases_and_the_batch_chain_hold_across_processes(
        store_factory: Callable[[], Store]) -> None:
    """Four processes take the same 40 free runs at once: each run goes to exactly one
    of them (the write lock serializes the takeovers). Then each appends to a run of its
    own, all at once: every commit lands, and the batch chain is one line holding every
    event once."""
    store = store_factory()
    assert isinstance(store, PostgresStore)
    runs = [f"01HRACE{n:019d}" for n in range(40)]
    outs = _race(store.url, [[f"p{i}", ",".join(runs), "0"] for i in range(4)])
    owners: dict[str, list[str]] = {}
    for i, out in enumerate(outs):
        for run in out["got"]:
            owners.setdefault(run, []).append(f"p{i}")
    assert sorted(owners) == runs and all(len(o) == 1 for o in owners.values())
    for run, (owner,) in owners.items():
        lease = store.lease_of(run)
        assert lease is not None and lease[:2] == (owner, 1)

    outs = _race(store.url, [[f"w{i}", "", "25"] for i in range(3)])
    assert [o["refused"] for o in outs] == [0, 0, 0]
    batches = list(store.batches())
    assert [b.n for b in batches] == list(range(1, 3 * 26 + 1))
    assert all(b.prev == a.hash for a, b in itertools.pairwise(batches))
    seen = [(run, seq) for b in batches for run, first, last in b.entries
            for seq in range(first, last + 1)]
    assert len(seen) == len(set(seen)) == 3 * (1 + 25 * 2)


def test_a_lost_connection_is_a_storage_error_then_the_next_call_reconnects(
        store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    assert isinstance(store, PostgresStore)
    store.set_meta("k", "v")
    pid = store._read("SELECT pg_backend_pid()")[0][0]
    _admin("SELECT pg_terminate_backend(%s)", pid)
    with pytest.raises(StorageError, match="cannot reach the database") as info:
        store.set_meta("k", "w")
    assert store.url in str(info.value)
    assert store.get_meta("k") == "v"  # a new connection; the failed write changed nothing
    store.set_meta("k", "w")
    assert store.get_meta("k") == "w"


def test_check_integrity_names_a_missing_table(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    assert isinstance(store, PostgresStore)
    assert store.check_integrity() == []
    with store._tx() as c:
        c.execute("DROP TABLE tokens")
    assert store.check_integrity() == ["table tokens is missing"]


def test_without_psycopg_the_cli_says_what_to_install(tmp_path: Path) -> None:
    """The driver is an optional extra: one error line with the install hint."""
    code = ("import sys; sys.modules['psycopg'] = None; "
            "from tether.cli.app import main; sys.exit(main())")
    done = subprocess.run([sys.executable, "-c", code, "--store", url_of("nothing_here"),
                           "runs"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "pip install 'tether[postgres]'" in done.stderr and "Traceback" not in done.stderr


def test_a_nested_transaction_is_a_savepoint_that_keeps_its_error(
        store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    assert isinstance(store, PostgresStore)
    with store._tx() as c:
        c.execute("INSERT INTO meta VALUES('x.outer', '1')")
        def failing() -> None:
            with store._tx() as inner:
                inner.execute("INSERT INTO meta VALUES('x.inner', '1')")
                raise ValueError("inner")

        with pytest.raises(ValueError, match="inner"):
            failing()
        with pytest.raises(StoreError, match="duplicate key"), store._tx() as inner:
            inner.execute("INSERT INTO meta VALUES('x.outer', '2')")  # a psycopg error
    assert (store.get_meta("outer"), store.get_meta("inner")) == ("1", None)


_STALLER = """
import sys, time
from tether.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
store._stall_timeout = 1.0
try:
    with store._tx() as c:
        c.execute("INSERT INTO meta VALUES('x.stalled', 'yes')")
        print("held", flush=True)
        time.sleep(4)  # idle in the transaction, holding the store's write lock
        c.execute("INSERT INTO meta VALUES('x.after', 'yes')")
except Exception as exc:
    print(type(exc).__name__, flush=True)
"""


def test_a_writer_stalled_in_its_transaction_loses_it_and_the_lock(
        store_factory: Callable[[], Store]) -> None:
    """A frozen lock holder cannot stop the store: the server ends its session once it has
    sat idle in its transaction too long, rolling back what it wrote."""
    store = store_factory()
    assert isinstance(store, PostgresStore)
    proc = subprocess.Popen([sys.executable, "-c", _STALLER, store.url], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parent.parent)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        other = PostgresStore(store.url, lock_timeout=0.2)
        try:
            with pytest.raises(StoreLocked):
                other.set_meta("k", "v")
            began = time.monotonic()
            while True:  # the lock is freed about a second after the holder went idle
                try:
                    other.set_meta("k", "v")
                    break
                except StoreLocked:
                    assert time.monotonic() - began < 10, "the stalled writer kept the lock"
        finally:
            other.close()
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert out.strip() == "StorageError"
    assert (store.get_meta("k"), store.get_meta("stalled"), store.get_meta("after")) == \
        ("v", None, None)


def test_a_large_write_is_stored_as_given(store_factory: Callable[[], Store]) -> None:
    """A write larger than one of libpq's 8 KiB writes goes as one simple-protocol message,
    its values quoted in (execute_whole): they must come back exactly as given, quotes,
    braces, percent signs, backslashes and non-ASCII text included."""
    store = store_factory()
    ids = _ids()
    r = _Run(ids.new(), ids)
    assert store.commit([r.create()]) == [None]
    r.fence = store.acquire(r.id, "w1", 60, time.time())
    odd = "it's {a} 100%% %s \\x00 \"q\" é✓ " * 600  # ~20 KB of what quoting must keep
    ck = CheckpointEncoder(run=r.id).encode(1, {"text": odd, "n": 1.5e-300}, force_key=True)
    w = r.emit("tool.called", {"text": odd, "n": [1, 2.25, None, True]}, checkpoint=(0, ck))
    assert store.commit([w]) == [None]
    assert store.events(r.id)[-1] == w.events[0]
    row = store.get_run(r.id)
    assert row == r.row
    chain = store.checkpoint_chain(r.id, 0, 1)
    assert chain is not None and chain.key_body == ck.body
