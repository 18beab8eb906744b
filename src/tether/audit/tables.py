"""The projection rows the audit compares with the events, read once up front.

Reading them (a Python object per row) needs nothing from the chains, so verify
reads them while its helper process walks the later runs
(:mod:`tether.audit.share`), in the same snapshot as everything else. A read
that fails keeps its error, and the check that needs the rows reports it where
it would have read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tether.errors import StoreError
from tether.store.protocol import Store
from tether.store.records import EffectRow, Link, MessageRow, VersionRow

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Tables:
    """Links, effect, message and version rows, or the error reading each."""

    links: list[Link] | StoreError
    effects: list[EffectRow] | StoreError
    messages: list[MessageRow] | StoreError
    versions: list[VersionRow] | StoreError


def read_tables(store: Store) -> Tables:
    """Read the rows (inside the audit's snapshot)."""
    return Tables(_read(store.links), _read(store.effects), _read(store.messages),
                  _read(store.versions))


def _read(what: Callable[[], list[T]]) -> list[T] | StoreError:
    try:
        return what()
    except StoreError as exc:
        return exc
