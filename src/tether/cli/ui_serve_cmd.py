"""``tether ui serve``: the web dashboard (docs/ui.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli.common import console, handle_errors, store


@handle_errors
def serve(host: Annotated[str, typer.Option(
              help="Address to listen on; loopback only (anything else needs access "
                   "tokens).", metavar="HOST")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port to listen on.", metavar="PORT",
                                            min=1, max=65535)] = 8765) -> None:
    """Serve the dashboard over the store until Ctrl-C.

    Pages update live (server-sent events); every page's data and action is also JSON
    under /api/ (schema at /api/openapi.json). It acts as the OS user who started it."""
    from tether.ui.security import check_bind
    check_bind(host)  # before the store is opened: a refused bind touches nothing
    from tether.ui import require
    require()
    from tether.ui.server import serve as run_server
    run_server(store(), host=host, port=port,
               say=lambda line: console.print(line, markup=False, highlight=False,
                                              soft_wrap=True))
