"""Per-request guards: the Host check (middleware), who is asking, may they, CSRF.

Routes take :func:`reader` (anyone recognised may read) or :func:`actor` with the
action's name (recognised, permitted, and, unless authenticated by a Bearer header,
carrying the CSRF token in the ``X-CSRF-Token`` header or the form's ``csrf`` field).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.ops import Tether
from tether.ui.auth import Credentials, Principal, permits
from tether.ui.context import UiContext
from tether.ui.errors import error_response
from tether.ui.security import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, csrf_ok, csrf_token, origin_ok

__all__ = ["HostGuard", "actor", "context", "csrf_for", "principal", "reader", "require",
           "set_csrf_cookie"]

_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
_SAFE = ("GET", "HEAD", "OPTIONS")


class HostGuard:
    """Refuse a request whose ``Host`` is not one of the dashboard's own names (DNS
    rebinding), or whose ``Origin``, when a change is asked, is another site's."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").lower()
        problem = None
        if host not in self.hosts:
            problem = (f"Host {host or '(none)'!r} is not this dashboard's; open it as "
                       f"http://{sorted(self.hosts)[0]}/ (other names are refused: DNS "
                       "rebinding)")
        elif scope["method"] not in _SAFE and not origin_ok(headers.get("origin"), self.hosts):
            problem = f"a change asked from another site ({headers.get('origin')}) is refused"
        if problem is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        await error_response(request, 403 if host in self.hosts else 400,
                             "Forbidden" if host in self.hosts else "BadHost",
                             problem)(scope, receive, send)


def context(request: Request) -> UiContext:
    ctx: UiContext = request.app.state.ctx
    return ctx


def credentials(request: Request) -> Credentials:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return Credentials(bearer=token.strip() if scheme.lower() == "bearer" and token else None,
                       session=request.cookies.get("tether_session"),
                       peer=request.client.host if request.client else None)


def principal(request: Request, ctx: UiContext = Depends(context)) -> Principal:  # noqa: B008
    """Who is asking (401 when no resolver knows them)."""
    p = ctx.auth.resolve(credentials(request))
    if p is None:
        raise HTTPException(401, "sign in: this dashboard needs an access token "
                                 "(Authorization: Bearer TOKEN)",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = p
    return p


def reader(ctx: UiContext = Depends(context),  # noqa: B008
           who: Principal = Depends(principal)) -> Tether:  # noqa: B008
    """The façade for a read."""
    if not permits(who.role, "view"):
        raise HTTPException(403, f"{who.name} ({who.role}) may not view this dashboard")
    return ctx.ops(who)


async def _check_csrf(request: Request, secret: bytes) -> None:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(_FORMS):
        form = await request.form()  # parsed once; the route's Form fields reuse it
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not csrf_ok(secret, request.cookies.get(CSRF_COOKIE), given):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again "
                                 "(API clients: GET /api/session for the token, send it as "
                                 "X-CSRF-Token with the cookie it sets, or use a Bearer token)")


def actor(action: str) -> Callable[..., Awaitable[Tether]]:
    """A dependency giving the façade acting as the principal, for ``action``."""
    async def dep(request: Request, ctx: UiContext = Depends(context),  # noqa: B008
                  who: Principal = Depends(principal)) -> Tether:  # noqa: B008
        if not permits(who.role, action):
            raise HTTPException(403, f"{who.name} ({who.role}) may not {action}")
        if who.via != "bearer":
            await _check_csrf(request, ctx.secret)
        return ctx.ops(who)
    return dep


def require(request: Request, action: str) -> None:
    """Refuse (403) unless the request's principal may take ``action`` too (a route whose
    action depends on its body: a rollback that cascades)."""
    who: Principal = request.state.principal
    if not permits(who.role, action):
        raise HTTPException(403, f"{who.name} ({who.role}) may not {action}")


def csrf_for(request: Request, ctx: UiContext) -> tuple[str, str | None]:
    """The CSRF token for this browser, and the new cookie seed to set (None: it has one)."""
    seed = request.cookies.get(CSRF_COOKIE)
    fresh = None
    if not seed:
        seed = fresh = secrets.token_urlsafe(32)
    return csrf_token(ctx.secret, seed), fresh


def set_csrf_cookie(response: Any, seed: str | None) -> None:
    """Give the browser its CSRF seed: HttpOnly (scripts never read it), SameSite=Strict
    (never sent with another site's request)."""
    if seed is not None:
        response.set_cookie(CSRF_COOKIE, seed, httponly=True, samesite="strict", path="/")
