"""A fresh PostgreSQL store for a test: its own schema of the test database, dropped after.

Every store lives in a schema of its own (``?schema=NAME`` of the store URL) in database
``test`` of the server at ``$TETHER_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``, trust auth), named after the xdist worker,
the process and a random part, so parallel tests and parallel sessions never share one. At
the end the schema is dropped with ``CASCADE``, whatever the test left in it.

Where the server cannot be reached, or psycopg (the ``postgres`` extra) is not installed,
the tests that need it skip and say why, except under CI (``CI`` set, as ``.ci/run`` runs):
there they are required, and the missing server fails them (as tests/browserkit.py does for
Chromium). That rule lives here only (``require``): every PostgreSQL test module reaches the
server through ``pg_url``, ``fresh_store_url``, or ``require_server()`` at its top.

    def test_x(pg_url: str) -> None:           # the fixture (tests/conftest.py)
        store = open_store(pg_url)

    with fresh_store_url("mine") as url:       # or as a context manager, e.g. two stores
        ...

    with connect(autocommit=True) as raw:      # the test database as an intruder sees it
        raw.execute(f'SET search_path TO "{schema_of(url)}"')
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

SERVER_ENV = "TETHER_TEST_PG"
"""The server and database the tests use, as a libpq URL without ``schema``."""
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT = 3
"""Seconds to wait for the server before calling it unreachable (libpq ``connect_timeout``)."""
PREFIX = "tt_"

SECRET = "s3cret-pw"  # noqa: S105  # not a credential: trust auth ignores it
"""A password tests put in store URLs, to check no output ever shows it."""


def with_password(url: str) -> str:
    """``url`` (the test server's, user ``postgres``) with :data:`SECRET` as its password."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)


def one_error(res: subprocess.CompletedProcess[str]) -> str:
    """The single ``error:`` line a refused command prints (exit 2), nothing else: never a
    traceback, never the password."""
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert SECRET not in res.stdout + res.stderr
    return lines[0]
"""Every test schema's name starts so (and nothing of tether's own default, ``tether``)."""


def server_url() -> str:
    """The test database's URL (``$TETHER_TEST_PG`` or the default), without a schema."""
    return os.environ.get(SERVER_ENV) or DEFAULT_SERVER


def store_url(schema: str) -> str:
    """The tether store URL of ``schema`` in the test database."""
    base = server_url()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema}"


def new_schema_name(tag: str = "") -> str:
    """A schema name no other test (process, xdist worker, session) will pick: lower case,
    within PostgreSQL's 63 characters, a valid unquoted identifier."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    clean = re.sub(r"[^a-z0-9_]", "_", tag.lower())[:20]
    name = f"{PREFIX}{worker}_{os.getpid()}_{secrets.token_hex(4)}"
    return f"{name}_{clean}" if clean else name


@functools.cache
def unreachable() -> str | None:
    """Why the test server cannot be used (None when it can); asked once per process."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev,postgres]')"
    try:
        with psycopg.connect(server_url(), connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {_shown(server_url())} cannot be reached: {first}"
    return None


def require_server() -> None:
    """Skip the calling test (or, called at a module's top, the whole module) when the
    server cannot be used; fail it instead under CI."""
    require(unreachable())


def require(why: str | None, *, env: str = SERVER_ENV) -> None:
    """The one rule for a PostgreSQL test whose server is missing (``why`` says what is,
    None when nothing): skip, except under CI (``CI`` set), where that is a failure. ``env``
    names the variable that points the test at another server."""
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI requires the PostgreSQL tests (start the server, or set "
                    f"${env})", pytrace=False)
    pytest.skip(f"{why}: start one (trust auth, database test) or set ${env}",
                allow_module_level=True)


def database_url(dbname: str) -> str:
    """The URL of database ``dbname`` on the test server (the same user and options)."""
    parts = urlsplit(server_url())
    return parts._replace(path=f"/{dbname}").geturl()


def drop_schema(schema: str) -> None:
    """``DROP SCHEMA ... CASCADE`` (if it exists), on a connection of its own."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url(), connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def schema_exists(schema: str) -> bool:
    """Whether ``schema`` exists in the test database."""
    import psycopg

    with psycopg.connect(server_url(), connect_timeout=CONNECT_TIMEOUT) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


@contextmanager
def fresh_store_url(tag: str = "") -> Iterator[str]:
    """The URL of a store in a new schema of the test database, dropped on exit.

    Skips (fails under CI) when the server cannot be used. The schema is not created here:
    the store creates it, as it does for a user's first ``tether run``.
    """
    require_server()
    schema = new_schema_name(tag)
    try:
        yield store_url(schema)
    finally:
        drop_schema(schema)


def schema_of(url: str) -> str:
    """The ``schema`` option of a store URL made here."""
    m = re.search(r"[?&]schema=([^&]+)", url)
    assert m is not None, url
    return m.group(1)


def _shown(url: str) -> str:
    # The test server's URL as a message may show it: never its password.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def connect(**kw: Any) -> Any:
    """A psycopg connection to the test database (the caller closes it)."""
    import psycopg

    return psycopg.connect(server_url(), connect_timeout=CONNECT_TIMEOUT, **kw)


def write_lock_held(url: str) -> bool:
    """Whether some session holds the write lock of the store at ``url`` now (the advisory
    lock every write transaction of the PostgreSQL store takes first)."""
    return write_lock_holder(url) is not None


def write_lock_holder(url: str) -> str | None:
    """The last statement of the session holding the write lock of the store at ``url``
    (None when no session holds it)."""
    from tether.store.postgres_base import lock_key

    with connect(autocommit=True) as conn:
        held = lock_session(conn, lock_key(schema_of(url).lower()))
    return None if held is None else held[2]


def lock_session(conn: Any, key: int) -> tuple[int, str, str] | None:
    """(backend pid, state, last statement) of the session holding advisory lock ``key``,
    asked on ``conn`` (a caller polling in a loop keeps one), or None when none holds it."""
    row = conn.execute(
        "SELECT a.pid, a.state, a.query FROM pg_locks l JOIN pg_stat_activity a "
        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchone()
    return None if row is None else (int(row[0]), str(row[1]), str(row[2]))
