"""Storage: one protocol, the SQLite default, and opening a store from a URL."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tether.errors import UsageError
from tether.store.protocol import Store
from tether.store.sqlite import SQLiteStore
from tether.store.urls import without_password

DEFAULT_URL = "tether.db"

# Any "scheme://" (RFC 3986 scheme syntax): only sqlite:// is a store here.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(url: str | None = None, *, create: bool = True,
               readonly: bool | None = False) -> Store:
    """Open the store named by ``url``, ``$TETHER_STORE`` or ``./tether.db``.

    Accepts a file path, ``sqlite:///path`` (``?synchronous=NORMAL`` to trade the
    last commits on power loss for speed), or ``postgresql://[user@]host[:port]/db`` with
    ``?schema=NAME`` (default ``tether``; other options go to libpq) for the shared store
    (needs the ``postgres`` extra). ``readonly``: for commands that only read; the
    store (or a read-only backup of it) is opened without writing anything, never created
    nor migrated. ``readonly=None``: read-only if the file exists and cannot be written.
    """
    if url == "":
        # An empty --store used to mean ./tether.db, silently: a script's unset variable
        # must not read, or write, a store in whatever folder it runs in.
        raise UsageError("--store is empty; give the path of a SQLite file (e.g. ./tether.db), "
                         "sqlite:///path or postgresql://host/dbname?schema=NAME, or leave "
                         "--store out for ./tether.db")
    url = url or os.environ.get("TETHER_STORE") or DEFAULT_URL
    if url.startswith(("postgres://", "postgresql://")):
        return _open_postgres(url, create=create, readonly=bool(readonly))
    return _open_sqlite(url, create=create, readonly=readonly)


def _open_sqlite(url: str, *, create: bool, readonly: bool | None) -> Store:
    """The SQLite store at a path or ``sqlite://`` URL, with its ``?synchronous=`` option."""
    path, sync = sqlite_target(url)
    if readonly is None:
        readonly = path.exists() and not os.access(path, os.W_OK)
    return SQLiteStore(path, create=create and not readonly, synchronous=sync, readonly=readonly)


def sqlite_target(url: str) -> tuple[Path, str]:
    """The file and the ``?synchronous=`` option (default ``FULL``) of a SQLite path or
    ``sqlite://`` URL.

    Raises:
        UsageError: an unknown option, or a URL scheme other than ``sqlite://``.
    """
    sync = "FULL"
    if "?" in url:
        url, _, query = url.partition("?")
        for part in query.split("&"):
            k, _, v = part.partition("=")
            if k == "synchronous":
                sync = v
            else:
                raise UsageError(f"unknown store option {k!r} in {url}?{query}")
    scheme = _SCHEME.match(url)
    if scheme is not None and scheme.group(1).lower() != "sqlite":
        raise UsageError(f"store {url}: the URL scheme {scheme.group(1)}:// is not supported; "
                         "give a SQLite file path (e.g. ./tether.db), sqlite:///path or "
                         "postgresql://host/db?schema=NAME")
    if url.startswith("sqlite://"):
        url = url.removeprefix("sqlite://")
        url = url[1:] if url.startswith("/") else url  # sqlite:///rel.db, sqlite:////abs.db
    return Path(url), sync


def _open_postgres(url: str, *, create: bool, readonly: bool) -> Store:
    """The PostgreSQL store at ``url``; its driver is an optional extra."""
    try:
        from tether.store.postgres import PostgresStore
    except ImportError as exc:
        if (exc.name or "psycopg").partition(".")[0] != "psycopg":
            raise  # tether itself is broken: not a missing extra
        # Named here, not by whichever module first imports psycopg: the same line always.
        raise UsageError(f"store {without_password(url)} needs the PostgreSQL driver psycopg 3, "
                         "the postgres extra: pip install 'tether[postgres]' (in a clone: "
                         ".venv/bin/pip install -e '.[postgres]'); or use a SQLite file path "
                         "(the default is ./tether.db)") from None
    return PostgresStore(url, create=create and not readonly, readonly=readonly)


__all__ = ["DEFAULT_URL", "SQLiteStore", "Store", "open_store", "sqlite_target"]
