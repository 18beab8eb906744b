"""Checking a SQLite store's path before opening it, and opening it read-only.

A wrong ``--store`` must be named for what it is (a file where a folder should be, a dangling
link, an empty file) rather than surface as SQLite's "unable to open database file", and a
read must never turn a file into a store.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from tether.errors import StoreError

STORE_ARG = "--store / TETHER_STORE"
"""What names the store, for messages: the global option, unless a command names it
by its own argument (`tether store copy SRC DST`)."""


def check_path(path: Path, *, create: bool, readonly: bool = False, arg: str = STORE_ARG) -> None:
    """Refuse a store path that cannot be (or must not become) a tether store.

    Args:
        path: the database file.
        create: the command may create the store (``tether run``, ``tether demo``).
        readonly: the store is opened for reading only.
        arg: what named the path, for messages (``SRC`` of ``tether store copy``).

    Raises:
        StoreError: naming what is wrong with the path and how to fix it.
    """
    if path.is_symlink() and not path.exists():
        raise StoreError(f"store {path} is a symbolic link to {os.readlink(path)}, which does "
                         f"not exist (a dangling link); fix the link, or pass the store file "
                         f"itself as {arg}")
    if path.is_dir():
        raise StoreError(f"{path} is a folder; {arg.partition(' ')[0]} names a SQLite file, "
                         "e.g. ./tether.db")
    _check_folder(path, arg)
    if not path.exists():
        if not create:
            raise StoreError(f"no tether store at {path}; " + (
                "start a run first (tether run / tether demo) or pass --store / TETHER_STORE"
                if arg == STORE_ARG else f"fix {arg}: it names an existing store"))
        return
    if not readonly and not os.access(path, os.W_OK):
        # Refused before SQLite opens it: its -wal/-shm files, made by us and never removed
        # (we cannot checkpoint), would then stop the owner's own writes.
        raise StoreError(f"store {path} is read-only for this user and this command writes; "
                         "run it as the store's owner (commands that only read work as is)")
    if not create and path.is_file() and path.stat().st_size == 0:
        # SQLite takes an empty file for an empty database: a read (`tether runs`) would
        # have made it a store without anyone asking for one.
        raise StoreError(f"{path} is empty, not a tether store; `tether run` or `tether demo` "
                         f"create one (or pass the right {arg})")


def _check_folder(path: Path, arg: str) -> None:
    # Walk up to the first ancestor that exists: a file there (README.md/x.db) is not
    # "a folder that does not exist".
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if parent.is_dir():
                break
            raise StoreError(f"{parent} is a file, not a folder, so it cannot hold store "
                             f"{path}; fix {arg}")
    if not path.parent.is_dir():
        # A typo in --store must not quietly grow a tree of folders with a new, empty store
        # in it: the file may be created, its folder must be there already.
        raise StoreError(f"the folder {path.parent} of store {path} does not "
                         f"exist; create it first, or fix {arg}")


def readonly_uri(path: Path) -> str | None:
    """How to read ``path`` without writing anything: a SQLite URI, or None for an ordinary
    connection made read-only with ``PRAGMA query_only``.

    - We can write the file and its folder (our own store): an ordinary connection with
      ``query_only``, which refuses every write; unlike ``mode=ro`` it removes the
      ``-wal``/``-shm`` files on close as any of the owner's connections does (``mode=ro``
      left them beside the store after every ``tether runs``).
    - We cannot, and a ``-wal`` file exists (a worker is running, or was killed): ``mode=ro``
      reads the store and its log through the existing files (SQLite 3.22+ reads with a
      read-only ``-shm``; checked with two users while the owner wrote).
    - We cannot, and there is no ``-wal``: ``immutable=1``. ``mode=ro`` would create ``-wal``
      and ``-shm``: in a folder we cannot write (a read-only backup) that fails ("attempt to
      write a readonly database"), and in a shared folder it leaves files owned by *us*, which
      SQLite does not remove when it cannot write the store and which then make the owner's
      worker fail with that same error (measured with two users, SQLite 3.40). Immutable
      creates nothing and takes no lock. The cost: a writer that starts while we read (another
      user) is not seen, and a checkpoint at that moment could show us a half-copied page; a
      one-off read by a command that only reads is worth that.
    """
    if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK):
        return None
    quoted = _uri_path(path)
    if Path(f"{path}-wal").exists():
        return f"file:{quoted}?mode=ro"
    return f"file:{quoted}?immutable=1"


def _uri_path(path: Path) -> str:
    # '?' and '#' (and '%') in a file name would be read as URI syntax.
    return quote(str(path.absolute()), safe="/")


def connect(path: Path, *, readonly: bool, timeout: float) -> sqlite3.Connection:
    """A connection to ``path`` (read-only as :func:`readonly_uri` says)."""
    uri = readonly_uri(path) if readonly else None
    if uri is not None:
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout,
                               check_same_thread=False)
    c = sqlite3.connect(path, isolation_level=None, timeout=timeout, check_same_thread=False)
    if readonly:
        c.execute("PRAGMA query_only=ON")
    return c
