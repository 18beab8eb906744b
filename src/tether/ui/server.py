"""Serving the dashboard: checks first (where it may listen, the web stack installed),
then uvicorn on the port asked."""

from __future__ import annotations

import socket
from collections.abc import Callable
from types import FrameType

from tether.errors import UsageError
from tether.identity import os_user, tokens_exist
from tether.store.protocol import Store
from tether.ui import require
from tether.ui.security import check_bind, is_loopback

__all__ = ["serve"]


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a port in use is one clear error (uvicorn would
    log it and exit 3), with no gap for another process to take it in between."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except (OSError, OverflowError) as exc:  # taken, not ours to bind, out of range
        sock.close()
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot serve the dashboard on {host}:{port} ({why}); choose a free "
                         "port with --port") from None
    sock.set_inheritable(True)
    return sock


def _who(store: Store, host: str) -> str:
    """Who the dashboard will take requests from, for its first line."""
    if not is_loopback(host):
        return ("every request needs an access token (Bearer header, or sign in at /signin); "
                "put a reverse proxy with TLS in front")
    if tokens_exist(store):
        return "every request needs an access token (sign in at /signin)"
    return (f"acting as human:{os_user()} (admin: loopback, no access tokens yet; the first "
            "`tether ui token create` makes every request need one)")


def serve(store: Store, *, host: str = "127.0.0.1", port: int = 8765,
          say: Callable[[str], None] = print) -> None:
    """Serve the dashboard over ``store`` until interrupted.

    On loopback, while the store has no valid token, every request acts as the OS user
    who started it; once a token exists (even one created while it runs), every request
    needs one. Beyond loopback every request needs one from the start.

    Raises:
        UsageError: a bind beyond loopback while no access token exists, a port in use,
            or the ``ui`` extra not installed.
    """
    check_bind(host, tokens=tokens_exist(store))
    require()
    import uvicorn

    from tether.ui.app import create_app
    sock = _bind(host, port)
    app = create_app(store, host=host, port=port)
    shown = f"[{host}]" if ":" in host else host
    say(f"tether dashboard on http://{shown}:{port}/ (store {store.url}); {_who(store, host)}; "
        "Ctrl-C stops")
    # Open live pages hold their connections: give them 2 s to go, then close them.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=2, proxy_headers=False,
                            server_header=False)
    poller = app.state.ctx.poller

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            poller.close_streams()  # open pages' event streams end, so the server can
            super().handle_exit(sig, frame)

    Server(config).run(sockets=[sock])
