"""The ``tether ui`` group, defined once here so its commands can live in their own modules:
``tether ui token ...`` (cli/ui_token_cmd.py) and the web dashboard's commands."""

from __future__ import annotations

import typer

ui_app = typer.Typer(no_args_is_help=True,
                     help="The web dashboard and the API tokens its users sign in with.")
"""The ``ui`` group; cli/app.py adds it to ``tether`` (and ``token`` to it)."""
