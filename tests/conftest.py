"""Shared fixtures. Tests use real SQLite files and real loopback servers."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.testing

from tether.audit.projections import FoldFacts, check_projections
from tether.errors import StoreError
from tether.store.protocol import Store
from tether.store.sqlite import SQLiteStore

# No test may reach a real model provider: point the OpenAI client at the discard
# port on loopback and drop any real key, so a stray call fails at once, locally.
os.environ.pop("OPENAI_API_KEY", None)
os.environ["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
os.environ.pop("TETHER_STORE", None)

# typer's CliRunner rebuilds the whole Click command tree from the app's signatures at every
# `invoke` (about 40 ms of `get_type_hints` for tether's ~25 commands): most of the time of
# the in-process CLI tests, 8 s of the fuzz test's 10. The app is fully registered at import
# and never changed by a test, so one build per app serves every invocation; what runs is
# the same command, options and callbacks `tether` itself builds once per process.
_build_command = typer.testing._get_command
assert callable(_build_command), "typer.testing no longer builds the command this way"
typer.testing._get_command = functools.cache(_build_command)  # type: ignore[assignment]

MODEL_SETTINGS = ("TETHER_MODEL_TIMEOUT", "TETHER_MODEL_RETRIES", "TETHER_PRICES")
"""What `tether run/worker/demo --model-timeout/--model-retries/--prices` set in the process
environment (for the models and agents it builds later)."""


@pytest.fixture(autouse=True)
def _no_model_settings_leak() -> Iterator[None]:
    """A CLI command invoked in this process (CliRunner) may set the model settings; each
    test starts without them, and what it set is gone after it."""
    for var in MODEL_SETTINGS:
        os.environ.pop(var, None)
    yield
    for var in MODEL_SETTINGS:
        os.environ.pop(var, None)


@pytest.fixture
def chromium() -> str:
    """The system's Chromium for the browser tests (tests/browserkit.py): skips where there
    is none, fails under CI."""
    from tests.browserkit import require_chromium
    return require_chromium()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh PostgreSQL store: its own schema of database ``test``, dropped
    with CASCADE after the test (tests/pgkit.py). Skips where the server cannot be reached,
    fails under CI. Unless the test is marked ``raw_rows``, the store's projections are
    checked to be the folds of its events before the schema goes, as the SQLite stores a
    test leaves in its tmp_path are."""
    from tests.pgkit import fresh_store_url
    with fresh_store_url(request.node.name) as url:
        yield url
        if not request.node.get_closest_marker("raw_rows"):
            problems = _pg_fold_problems(url)
            assert not problems, f"{url}: {problems}"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store's URL on each backend in turn: a SQLite file in the test's tmp_path,
    then a PostgreSQL schema (``pg_url``: skips where the server cannot be reached, fails
    under CI)."""
    if request.param == "sqlite":
        return str(tmp_path / "tether.db")
    return str(request.getfixturevalue("pg_url"))


def _pg_fold_problems(url: str) -> list[str]:
    from tether.store import open_store
    try:
        store = open_store(url, create=False, readonly=True)
    except StoreError:
        return []  # the test never made a store there, or broke it on purpose
    return fold_problems(store)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "tether.db")
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _projections_are_folds(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test, every store it left in its tmp_path holds runs, effects and
    approvals rows that are the folds of their events (:mod:`tether.core.fold`): the
    property the journal keeps by folding each event it appends, checked on every
    scenario the suite plays. A test that writes rows itself (tampering, the store's
    conformance tests) says so with ``@pytest.mark.raw_rows``."""
    if "tmp_path" not in request.fixturenames or request.node.get_closest_marker("raw_rows"):
        yield
        return
    tmp: Path = request.getfixturevalue("tmp_path")  # now, so it outlives this fixture
    yield
    # A few stores say it: a crash test that leaves one per kill point would spend its
    # timeout here.
    for db in sorted(tmp.rglob("*.db"))[:_FOLD_CHECKS]:
        problems = _fold_problems(db)
        assert not problems, f"{db}: {problems}"


_FOLD_CHECKS = 6


def _fold_problems(db: Path) -> list[str]:
    try:
        store = SQLiteStore(db, create=False, readonly=True)
    except (StoreError, OSError):
        return []  # not a store, or one the test left unreadable on purpose
    return fold_problems(store)


def fold_problems(store: Store) -> list[str]:
    """Where ``store``'s runs, effects and approvals rows are not the folds of their events
    (closes the store). Any backend: the PostgreSQL tests' stores are checked so too."""
    try:
        facts = FoldFacts()
        for row in store.list_runs():
            for e in store.events(row.id):
                if e.seq > row.seq:
                    break  # committed after the row was read
                facts.note(e, e.payload is None)
        problems: list[str] = []
        check_projections(store, facts, set(), store.effects(), problems)
        return problems
    except StoreError:
        return []
    finally:
        store.close()
