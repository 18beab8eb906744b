"""Serving the dashboard: checks first (where it may listen, the web stack installed),
then uvicorn on the port asked."""

from __future__ import annotations

import socket
from collections.abc import Callable
from types import FrameType

from tether.errors import UsageError
from tether.store.protocol import Store
from tether.ui import require
from tether.ui.auth import LoopbackOwner
from tether.ui.security import check_bind

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


def serve(store: Store, *, host: str = "127.0.0.1", port: int = 8765,
          say: Callable[[str], None] = print) -> None:
    """Serve the dashboard over ``store`` until interrupted.

    Raises:
        UsageError: a bind beyond loopback (no access tokens exist), a port in use, or
            the ``ui`` extra not installed.
    """
    check_bind(host, tokens=False)
    require()
    import uvicorn

    from tether.ui.app import create_app
    sock = _bind(host, port)
    owner = LoopbackOwner()
    app = create_app(store, host=host, port=port, resolvers=[owner])
    shown = f"[{host}]" if ":" in host else host
    say(f"tether dashboard on http://{shown}:{port}/ (store {store.url}); acting as "
        f"human:{owner.name} (admin: loopback, no access tokens); Ctrl-C stops")
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
