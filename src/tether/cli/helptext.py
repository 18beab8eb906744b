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


class _PlainHelp:
    """Mixed into a command or group class (Typer's, or one of tether's own such as the root
    group's one-line errors): its help shows metavars, never Python types."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the Click class's
        _plain(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        opt = super().get_help_option(ctx)  # type: ignore[misc]  # the Click class's
        if opt is not None:
            _plain([opt])
        return opt


def _plain_class(cls: Any, default: type[Any]) -> type[Any]:
    """``cls`` (or ``default``, for Typer's "not given") with plain help mixed in."""
    base = cls if isinstance(cls, type) else default
    if issubclass(base, _PlainHelp):
        return base
    return type(base.__name__, (_PlainHelp, base), {"__doc__": base.__doc__,
                                                    "__module__": base.__module__})


def apply(app: typer.Typer) -> None:
    """Give every command and group of ``app`` (recursively) the plain help, keeping the
    classes they chose."""
    app.info.cls = _plain_class(app.info.cls, TyperGroup)
    for info in app.registered_commands:
        info.cls = _plain_class(info.cls, TyperCommand)
    for group in app.registered_groups:
        if isinstance(group.typer_instance, typer.Typer):
            apply(group.typer_instance)
