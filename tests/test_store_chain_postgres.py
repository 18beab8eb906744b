"""The store chain on a real PostgreSQL store: API tokens and a swarm's settings are
store-chain events with their rows as the projection, hashed as on SQLite, so
``audit verify`` holds the rows to the chain; two operators at once (separate
connections, as separate processes) get one token, and appends never fork the chain.

Each test has its own schema of database ``test`` at 127.0.0.1:5432 (``TETHER_TEST_PG``
overrides), dropped afterwards; the rows are changed through a plain psycopg connection.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from tests import pgkit
from tether import verify_store
from tether.control import set_swarm_budget, set_swarm_pause_points
from tether.core.ids import UlidSource, iso
from tether.core.settings import STORE_GENESIS
from tether.errors import UsageError
from tether.identity import authenticate, create_token, revoke_token
from tether.store.postgres import PostgresStore


@pytest.fixture
def url() -> Iterator[str]:
    """A fresh schema's store URL, the schema dropped afterwards."""
    with pgkit.fresh_store_url("chain") as u:
        yield u


def _raw(url: str, sql: str) -> None:
    """Change the store's rows as an intruder would: a plain connection, no tether."""
    with pgkit.connect(autocommit=True) as c:
        c.execute(f'SET search_path TO "{pgkit.schema_of(url)}"')
        c.execute(sql)


@pytest.mark.parametrize(("sql", "named"), [
    ("UPDATE tokens SET role = 'admin' WHERE name = 'ada'",
     "role: stored admin, the store chain says viewer"),
    ("UPDATE tokens SET hash = '\\x{forged}' WHERE name = 'ada'", "hash: stored"),
    ("UPDATE tokens SET revoked = NULL, revoked_by = NULL WHERE name = 'cy'",
     "revoked: stored None, the store chain says"),
    ("DELETE FROM tokens WHERE name = 'ada'", "its row is missing"),
])
def test_a_token_row_changed_outside_the_chain_is_named(url: str, sql: str,
                                                        named: str) -> None:
    store = PostgresStore(url)
    try:
        _, secret = create_token(store, "ada", "viewer", who="human:root")
        create_token(store, "cy", "operator", who="human:root")
        revoke_token(store, "cy", who="human:root")
        assert authenticate(store, secret) is not None
        assert [t.name for t in store.tokens(active=True)] == ["ada"]
        assert verify_store(store).ok
        _raw(url, sql.format(forged=hashlib.sha256(b"tth_known").hexdigest()))
        rep = verify_store(store)
    finally:
        store.close()
    assert not rep.ok and any(named in p for p in rep.problems), rep.problems
    who = "cy" if "cy" in sql else "ada"
    assert any(f"token '{who}'" in p for p in rep.problems), rep.problems


def test_a_swarm_row_and_a_store_event_changed_outside_the_chain_are_named(url: str) -> None:
    store = PostgresStore(url)
    try:
        set_swarm_budget(store, "crew", {"steps": 5.0}, [], who="human:a")
        set_swarm_pause_points(store, "crew", {"every_steps": 2}, who="human:a")
        assert store.swarm_budget("crew") == {"steps": 5.0}
        assert verify_store(store).ok
        _raw(url, "UPDATE swarms SET budget = convert_to('{}', 'UTF8') WHERE name = 'crew'")
        rep = verify_store(store)
        assert not rep.ok and "budget: stored {}" in rep.problems[0], rep.problems
        _raw(url, "UPDATE swarms SET budget = convert_to('{\"steps\":5.0}', 'UTF8')")
        assert verify_store(store).ok
        _raw(url, "UPDATE store_events SET actor = 'human:eve' WHERE n = 1")
        rep = verify_store(store)
    finally:
        store.close()
    assert not rep.ok and any("store chain event #1" in p for p in rep.problems), rep.problems


def test_two_creating_the_same_name_at_once_get_one_token(url: str) -> None:
    PostgresStore(url).close()
    results: list[object] = []
    start = threading.Barrier(4)

    def make() -> None:
        s = PostgresStore(url)  # each its own connection, as separate processes would
        start.wait()
        try:
            results.append(create_token(s, "ada", "operator", who="human:root"))
        except UsageError as exc:
            results.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([r for r in results if isinstance(r, tuple)]) == 1 and len(results) == 4
    assert all("exists already" in str(r) for r in results if isinstance(r, UsageError))
    store = PostgresStore(url)
    try:
        assert len(store.tokens()) == 1 and len(store.store_events()) == 1
        assert verify_store(store).ok
    finally:
        store.close()


def test_appends_from_many_connections_at_once_make_one_line(url: str) -> None:
    PostgresStore(url).close()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def append(i: int) -> None:
        s = PostgresStore(url)
        ids = UlidSource(time.time)
        start.wait()
        try:
            for k in range(10):
                s.append_store_event("swarm.budget", f"swarm:s{i}", {"budget": {"steps": k}},
                                     actor=f"human:{i}", time=iso(1_700_000_000.0 + k),
                                     id=ids.new())
        except BaseException as exc:  # the assertion below names it
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=append, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = PostgresStore(url)
    try:
        chain = store.store_events()
        assert [e.n for e in chain] == list(range(1, 41))
        assert chain[0].prev == STORE_GENESIS
        assert all(b.prev == a.hash for a, b in itertools.pairwise(chain))
        assert store.store_events(after=39)[0].prev == chain[38].hash
        assert {n: r["budget"] for n, r in store.swarm_rows().items()} == {
            f"s{i}": {"steps": 9} for i in range(4)}
        rep = verify_store(store)
        assert rep.ok and rep.batches == 40, rep.problems
    finally:
        store.close()
