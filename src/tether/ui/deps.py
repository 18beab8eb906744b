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

from tether.identity import PERMISSIONS, Role, permits
from tether.ops import Tether
from tether.ui.auth import Caller, Credentials
from tether.ui.context import UiContext
from tether.ui.errors import error_response
from tether.ui.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    csrf_ok,
    csrf_token,
    origin_ok,
)

__all__ = ["OPEN", "HostGuard", "actor", "check_csrf", "check_routes", "context", "csrf_for", "principal",
           "reader", "require", "route_permissions", "set_csrf_cookie"]

_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
_SAFE = ("GET", "HEAD", "OPTIONS")


MAX_BODY = 1 << 20
"""The largest request body taken (1 MiB): far more than any form or JSON action needs,
and a bound on what one request can make the journal keep for good (a note, a reason)."""


class BodyLimit:
    """Refuse a change whose body is over :data:`MAX_BODY` with 413, before any route
    reads it (the body is read here, at most one byte past the limit, and handed on)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE:
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        body = b""
        if length.isdigit() and int(length) <= self.limit:
            more = True
            while more and len(body) <= self.limit:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body += msg.get("body", b"")
                more = msg.get("more_body", False)
        if not length.isdigit() or int(length) > self.limit or len(body) > self.limit:
            await error_response(Request(scope), 413, "TooLarge",
                                 f"the request body is over {self.limit:,} bytes; send less "
                                 "(a note or a reason of a few lines)")(scope, receive, send)
            return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.app(scope, replay, send)


_HARDENING = (
    # No other site may frame the dashboard (clickjacking its buttons), guess a response's
    # type, or learn its URLs from a link followed out of it.
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


def _hardened(send: Send) -> Send:
    """``send`` adding :data:`_HARDENING`'s headers to every response."""
    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *_HARDENING]}
        await send(message)
    return wrapped


class HostGuard:
    """Refuse a request whose ``Host`` is not one of the dashboard's own names (DNS
    rebinding), or whose ``Origin``, when a change is asked, is another site's."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts
        """The ``Host`` values answered; None: any (a wildcard bind, where every request
        needs a token)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").lower()
        problem = None
        known = self.hosts is None or host in self.hosts
        if not known:
            problem = (f"Host {host or '(none)'!r} is not this dashboard's; open it as "
                       f"http://{sorted(self.hosts or ())[0]}/ (other names are refused: DNS "
                       "rebinding)")
        elif scope["method"] not in _SAFE and not origin_ok(headers.get("origin"), host):
            problem = f"a change asked from another site ({headers.get('origin')}) is refused"
        if problem is None:
            await self.app(scope, receive, _hardened(send))
            return
        request = Request(scope, receive)
        await error_response(request, 403 if known else 400,
                             "Forbidden" if known else "BadHost", problem)(scope, receive, send)


def context(request: Request) -> UiContext:
    ctx: UiContext = request.app.state.ctx
    return ctx


_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def credentials(request: Request) -> Credentials:
    """The request's credentials, as :mod:`tether.ui.auth` takes them."""
    auth = request.headers.get("authorization")
    bearer = None
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        # A Bearer header is a claim to be judged (an empty one is a bad token). Another
        # scheme is not ours: a proxy's Basic auth (nginx passes it on) is left alone, so
        # the browser's session still answers.
        bearer = token.strip() if scheme.lower() == "bearer" else None
    return Credentials(bearer=bearer, session=request.cookies.get(SESSION_COOKIE) or None,
                       forwarded=any(h in request.headers for h in _PROXY_HEADERS))


def _unknown(creds: Credentials) -> str:
    """Why nobody was recognised, and what to do."""
    if creds.bearer is not None:
        return ("the Bearer token is not valid (mistyped, or revoked): `tether ui token list` "
                "shows the valid ones; `tether ui token create` makes one")
    if creds.session is not None:
        return ("your session has ended (signed out, expired, the server restarted, or its "
                "token was revoked): sign in again at /signin")
    if creds.forwarded:
        return ("this request came through a proxy, so it needs an access token: create one "
                "with `tether ui token create --name NAME --role ROLE` and sign in at /signin")
    return ("sign in: this dashboard needs an access token (Authorization: Bearer TOKEN, or "
            "sign in at /signin with it)")


def principal(request: Request, ctx: UiContext = Depends(context)) -> Caller:  # noqa: B008
    """Who is asking (401 when no resolver knows them)."""
    creds = credentials(request)
    who = ctx.auth.resolve(creds)
    if who is None:
        error = ', error="invalid_token"' if creds.bearer is not None else ""
        raise HTTPException(401, _unknown(creds),
                            headers={"WWW-Authenticate": f'Bearer realm="tether"{error}'})
    request.state.caller = who
    return who


def _check(who: Caller, action: str) -> None:
    if not who.can(action):
        raise HTTPException(403, f"{who.name} ({who.role.label}) may not {action}: that needs "
                                 f"the {PERMISSIONS[action].label} role; an admin can give "
                                 f"it (tether ui token create --role {PERMISSIONS[action].label})")


def reader(ctx: UiContext = Depends(context),  # noqa: B008
           who: Caller = Depends(principal)) -> Tether:  # noqa: B008
    """The façade for a read."""
    _check(who, "read")
    return ctx.ops(who)


async def check_csrf(request: Request, secret: bytes) -> None:
    """Refuse (403) a change whose CSRF token (header or form field) does not fit the
    browser's cookie."""
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
    """A dependency giving the façade acting as the caller, for ``action`` (a key of
    :data:`tether.identity.PERMISSIONS`): 403 unless the caller's role permits it, checked
    before anything is read or written, so a refusal journals nothing.

    Raises:
        ValueError: an action the permissions table does not know (at import time).
    """
    permits(Role.ADMIN, action)  # an unknown action fails when the route is declared

    async def dep(request: Request, ctx: UiContext = Depends(context),  # noqa: B008
                  who: Caller = Depends(principal)) -> Tether:  # noqa: B008
        _check(who, action)
        if who.via != "bearer":
            await check_csrf(request, ctx.secret)
        return ctx.ops(who)
    dep.permission = action  # type: ignore[attr-defined]  # read by route_permissions
    return dep


def require(request: Request, action: str) -> None:
    """Refuse (403) unless the request's caller may take ``action`` too (a route whose
    action depends on its body: a rollback that cascades)."""
    _check(request.state.caller, action)


OPEN = frozenset({"/signin", "/signout", "/static", "/api/openapi.json"})
"""Paths answered without a recognised caller: signing in and out (the token given, or
the session cookie, is the credential), the stylesheet and script, and the API schema."""


def _walk(dependant: Any) -> tuple[str | None, bool]:
    """The permission a route's :func:`actor` checks (None: none), and whether it checks
    who is asking at all."""
    acting, known = None, False
    stack = [dependant]
    while stack:
        d = stack.pop()
        call = getattr(d, "call", None)
        if call is not None and hasattr(call, "permission"):
            acting = call.permission
        known = known or call is principal
        stack.extend(d.dependencies)
    return acting, known


def _routes(routes: Any) -> Any:
    """Every route, those of included routers too (FastAPI keeps an included router as one
    entry whose routes are its own, paths prefixed already: ours are included bare)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def route_permissions(app: Any) -> dict[tuple[str, str], str | None]:
    """Each route's (method, path) and the permission it checks: its :func:`actor`'s
    action; ``read`` for a route reading through :func:`reader`; ``who`` for one that
    only asks who you are; None for one that asks nothing (:data:`OPEN` paths).

    :func:`check_routes` holds every app to it, so a new route without a permission
    fails at start (and in every test)."""
    out: dict[tuple[str, str], str | None] = {}
    for route in _routes(app.routes):
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            continue
        acting, known = _walk(dependant)
        reads = any(getattr(d, "call", None) is reader for d in dependant.dependencies)
        perm = acting or ("read" if reads else "who" if known else None)
        for method in sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}):
            out[(method, route.path)] = perm
    return out


def check_routes(app: Any) -> None:
    """Refuse an app with a route that is not :data:`OPEN` and asks nobody, or a change (a
    method other than GET) that takes no :func:`actor` permission.

    Raises:
        RuntimeError: naming the route.
    """
    seen = 0
    for route in _routes(app.routes):
        dependant = getattr(route, "dependant", None)
        path = getattr(route, "path", "")
        seen += dependant is not None
        if dependant is None or any(path == o or path.startswith(o + "/") for o in OPEN):
            continue
        acting, known = _walk(dependant)
        for method in getattr(route, "methods", ()):
            if (method not in _SAFE and acting is None) or not known:
                raise RuntimeError(f"route {method} {path} checks no permission: give it "
                                   "Depends(actor(ACTION)) with an action of "
                                   "tether.identity.PERMISSIONS (or reader for a read)")
    if not seen:  # the framework keeps its routes elsewhere now: this check sees nothing
        raise RuntimeError("check_routes found no route to check; update tether.ui.deps._routes")


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
