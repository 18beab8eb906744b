"""Storage: one protocol, the SQLite default, and opening a store from a URL."""

from __future__ import annotations

import os
from pathlib import Path

from tether.errors import UsageError
from tether.store.protocol import Store
from tether.store.sqlite import SQLiteStore

DEFAULT_URL = "tether.db"


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """Open the store named by ``url``, ``$TETHER_STORE`` or ``./tether.db``.

    Accepts a file path, ``sqlite:///path`` (``?synchronous=NORMAL`` to trade the
    last commits on power loss for speed).
    """
    url = url or os.environ.get("TETHER_STORE") or DEFAULT_URL
    sync = "FULL"
    if "?" in url:
        url, _, query = url.partition("?")
        for part in query.split("&"):
            k, _, v = part.partition("=")
            if k == "synchronous":
                sync = v
            else:
                raise UsageError(f"unknown store option {k!r} in {url}?{query}")
    if url.startswith(("postgres://", "postgresql://")):
        raise UsageError("the PostgreSQL store is not available in this version; use a SQLite "
                         "file path (the default is ./tether.db)")
    if url.startswith("sqlite://"):
        url = url.removeprefix("sqlite://")
        url = url[1:] if url.startswith("/") else url  # sqlite:///rel.db, sqlite:////abs.db
    return SQLiteStore(Path(url), create=create, synchronous=sync)


__all__ = ["DEFAULT_URL", "SQLiteStore", "Store", "open_store"]
