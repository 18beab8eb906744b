"""The dashboard's application factory: one FastAPI app over one store.

Example:
    >>> from tether import open_store
    >>> from tether.ui.app import create_app
    >>> app = create_app(open_store("tether.db"), port=8765)  # doctest: +SKIP

Serve it with :func:`tether.ui.server.serve` (``tether ui serve``), which also refuses a
bind beyond loopback; a test may drive the app in process with an ASGI client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tether._version import __version__
from tether.runtime.agent import AgentLike
from tether.store.protocol import Store
from tether.ui import api, errors
from tether.ui.auth import Auth
from tether.ui.context import UiContext
from tether.ui.deps import BodyLimit, HostGuard, check_routes
from tether.ui.pages import graph, needs, overview, report, run, signin
from tether.ui.security import is_loopback

__all__ = ["create_app"]

_STATIC = Path(__file__).resolve().parent / "static"
_DESCRIPTION = ("Operate always-on agent runs: the web dashboard's JSON API. Shapes are the "
                'CLI\'s --json ones; errors are {"error": {"status", "kind", "message"}}.')


def create_app(store: Store, *, host: str = "127.0.0.1", port: int = 8765,
               agents: Mapping[str, AgentLike] | None = None, auth: Auth | None = None,
               poll_interval: float = 0.25) -> FastAPI:
    """The dashboard over ``store``, answering as ``host:port``.

    Args:
        store: the store to show and operate on (the app does not close it).
        host, port: where it is served: the ``Host`` headers it answers follow.
        agents: agents by reference, for operations that need a run's agent (edited
            approval arguments are checked against its tool's schema; a rollback runs its
            undo tools); a reference not in it is imported as ``module:attr``.
        auth: who may ask (:mod:`tether.ui.auth`); default :meth:`Auth.for_store`: access
            tokens (Bearer header, or a browser's session), and on a loopback ``host`` the
            OS user who started it, as admin, while the store has no valid token.
        poll_interval: seconds between the live poller's reads of the store.
    """
    ctx = UiContext(store, host, port, auth or Auth.for_store(store, loopback=is_loopback(host)),
                    dict(agents or {}), poll_interval)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await ctx.poller.start()
        try:
            yield
        finally:
            await ctx.poller.stop()

    # No /docs page: Swagger UI would load its scripts from a CDN. The schema is enough.
    app = FastAPI(title="tether", version=__version__, lifespan=lifespan,
                  openapi_url="/api/openapi.json", docs_url=None, redoc_url=None,
                  description=_DESCRIPTION)
    app.state.ctx = ctx
    errors.install(app)
    app.include_router(api.router)
    for module in (overview, needs, run, graph, report, signin):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")
    _guard(app, ctx)
    return app


def _guard(app: FastAPI, ctx: UiContext) -> None:
    app.add_middleware(BodyLimit)
    app.add_middleware(HostGuard, hosts=ctx.hosts)  # added last: runs first
    check_routes(app)  # a route that checks no permission fails here, in every test
