"""Serving the dashboard: checks first (where it may listen, the web stack installed),
then uvicorn on the port asked."""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType

from tether.store.protocol import Store
from tether.ui import require
from tether.ui.auth import LoopbackOwner
from tether.ui.security import check_bind

__all__ = ["serve"]


def serve(store: Store, *, host: str = "127.0.0.1", port: int = 8765,
          say: Callable[[str], None] = print) -> None:
    """Serve the dashboard over ``store`` until interrupted.

    Raises:
        UsageError: a bind beyond loopback (no access tokens exist), or the ``ui`` extra
            not installed.
    """
    check_bind(host, tokens=False)
    require()
    import uvicorn

    from tether.ui.app import create_app
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

    Server(config).run()
