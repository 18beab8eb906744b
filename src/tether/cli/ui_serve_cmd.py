"""``tether ui serve``: the web dashboard (docs/ui.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli.common import console, handle_errors, store
from tether.errors import TetherError


def _tokens_exist() -> bool:
    """Whether the store has a valid token; False when there is no store to read yet."""
    from tether.identity import tokens_exist
    try:
        s = store(readonly=True)
    except TetherError:
        return False  # no store (or none readable): no token either
    try:
        return tokens_exist(s)
    finally:
        s.close()


@handle_errors
def serve(host: Annotated[str, typer.Option(
              help="Address to listen on: loopback by default; any other needs an access "
                   "token to exist first (then every request needs one; put a reverse "
                   "proxy with TLS in front).", metavar="HOST")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port to listen on.", metavar="PORT",
                                            min=1, max=65535)] = 8765) -> None:
    """Serve the dashboard over the store until Ctrl-C.

    Pages update live (server-sent events); every page's data and action is also JSON
    under /api/ (schema at /api/openapi.json). On loopback with no access token it acts
    as the OS user who started it; once a token exists every request needs one."""
    from tether.ui.security import check_bind, is_loopback
    if not is_loopback(host):  # refused before anything is created or written
        check_bind(host, tokens=_tokens_exist())
    from tether.ui import require
    require()
    from tether.ui.server import serve as run_server
    run_server(store(), host=host, port=port,
               say=lambda line: console.print(line, markup=False, highlight=False,
                                              soft_wrap=True))
