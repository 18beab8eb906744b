"""``tether settings``: the store's own settings, journaled in the store chain.

``allow-as``: whether commands may record a name given with ``--as NAME`` or
``$TETHER_USER`` instead of the OS user. Off until turned on: anyone could claim
any name, which an approval trail must not allow where it matters.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from tether.cli.common import console, handle_errors, store
from tether.errors import UsageError
from tether.identity import allow_as_event, os_principal, set_allow_as

settings_app = typer.Typer(no_args_is_help=True,
                           help="Show or change the store's settings (journaled).")


@settings_app.command("allow-as")
@handle_errors
def allow_as(value: Annotated[str | None, typer.Argument(
        metavar="ON|OFF", help="on: record --as NAME / $TETHER_USER; off: the OS user only. "
                               "Omitted: show the setting.")] = None) -> None:
    """Allow --as NAME and $TETHER_USER on this store, or refuse them (the default)."""
    if value is not None:
        value = value.lower()
        if value not in ("on", "off"):
            raise UsageError(f"allow-as {value!r}: say on or off")
    s = store(create=value is not None, readonly=value is None)
    if value is not None:
        # Recorded as the OS user, whatever --as or $TETHER_USER claim: a claimed name
        # cannot vouch for allowing claimed names.
        set_allow_as(s, value == "on", who=os_principal().actor)
    e = allow_as_event(s)
    on = e is not None and isinstance(e.payload, dict) and e.payload.get("allow") is True
    since = f" (set by {escape(e.actor)} at {e.time}, store event #{e.n})" if e else \
        " (never set: the default)"
    console.print(f"allow-as: {'on' if on else 'off'}{since}", highlight=False, soft_wrap=True)
