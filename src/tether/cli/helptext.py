"""Help that reads like a manual, not like a type signature.

Typer shows each parameter's Python type in ``--help`` (``<str>``, ``<bool>``,
``<list[str]>``). Every command's options name their value instead (``RUN``,
``SECONDS``, ``KEY=NUMBER``), set where they are declared; this module makes the
rest follow: a flag shows no value at all, and an argument shows its metavar
once, in the name column, not again as ``<str>``. :func:`apply` is called once
on the app after every command is registered, so a command added later gets
the same treatment (and ``tests/test_cli_readable.py`` fails on any option still
shown as a Python type).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


class _Argument(TyperArgument):
    """An argument whose help row shows its metavar (``RUN``) and no ``<str>`` beside it."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _plain(params: list[Any]) -> None:
    for p in params:
        if isinstance(p, TyperArgument) and not isinstance(p, _Argument):
            p.__class__ = _Argument
        elif isinstance(p, TyperOption) and p.is_flag and p.metavar is None:
            p.metavar = ""  # a flag takes no value: say nothing rather than <bool>


class TetherCommand(TyperCommand):
    """A command whose help shows metavars, never Python types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)
        if opt is not None:
            _plain([opt])
        return opt


class TetherGroup(TyperGroup):
    """A command group (``tether``, ``tether policy``) with the same help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)
        if opt is not None:
            _plain([opt])
        return opt


def apply(app: typer.Typer) -> None:
    """Give every command and group of ``app`` (recursively) the plain help."""
    # Typer's own classes (or its "not given" placeholder) are replaced; a command that
    # chose a class of its own keeps it.
    if not isinstance(app.info.cls, type) or app.info.cls is TyperGroup:
        app.info.cls = TetherGroup
    for info in app.registered_commands:
        if info.cls is None or info.cls is TyperCommand:
            info.cls = TetherCommand
    for group in app.registered_groups:
        if isinstance(group.typer_instance, typer.Typer):
            apply(group.typer_instance)
