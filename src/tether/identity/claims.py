"""Who the CLI records as acting: the OS user, or a name claimed where the store allows it.

``--as NAME`` and ``$TETHER_USER`` let anyone record any name, so they are refused
unless the store's settings allow them: the ``store.allow_as`` store-chain event,
set by ``tether settings allow-as on|off`` and journaled with who changed it.
``TETHER_ALLOW_AS=0`` refuses them in one environment even where the store allows.
"""

from __future__ import annotations

import getpass
import os

from tether.core.identity import Principal, Role
from tether.core.ids import UlidSource, iso
from tether.core.settings import ALLOW_AS_KIND, STORE_SCOPE, StoreEvent, fold
from tether.store.protocol import Store
from tether.system_clock import SYSTEM_CLOCK


def os_user() -> str:
    """The name of the OS user running this process (``uidN`` when it has none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def os_principal() -> Principal:
    """The OS user running this process, as an admin: whoever can run tether on the store's
    files can do anything the CLI does (the web UI acts as it on loopback with no token)."""
    return Principal(os_user(), Role.ADMIN, "os")


def allow_as_event(store: Store) -> StoreEvent | None:
    """The store event that set the allow-as setting in force, or None (never set)."""
    return fold(store.store_events()).get(("allow_as", STORE_SCOPE))


def as_allowed(store: Store) -> bool:
    """Whether this store records names claimed with ``--as`` / ``$TETHER_USER``."""
    e = allow_as_event(store)
    return e is not None and isinstance(e.payload, dict) and e.payload.get("allow") is True


def set_allow_as(store: Store, allow: bool, *, who: str) -> StoreEvent | None:
    """Allow (or refuse) claimed names on this store, journaled as ``store.allow_as`` by
    ``who``. Returns the event, or None when the setting is that already."""
    if as_allowed(store) == allow:
        return None
    now = SYSTEM_CLOCK.now()
    return store.append_store_event(ALLOW_AS_KIND, STORE_SCOPE, {"allow": allow}, actor=who,
                                    time=iso(now), id=UlidSource(lambda: now).new())
