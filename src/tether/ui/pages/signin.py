"""Signing in and out: a browser trades an access token (in a form's body, never a URL)
for a session cookie, since ``EventSource`` cannot send an ``Authorization`` header.

The cookie holds only a random session id (256 bits); the server keeps the session in
memory mapped to the token's id (:class:`tether.ui.auth.Sessions`). It is ``HttpOnly``
(no script reads it), ``SameSite=Strict`` (no other site's page sends it), ``Path=/``,
and ``Secure`` when the dashboard is served beyond loopback (where it must sit behind a
TLS proxy; docs/ui.md). Sign-in takes the CSRF token too, so another site cannot sign a
browser in as someone else.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

from tether.core.identity import hash_secret
from tether.identity import authenticate
from tether.ui.context import UiContext
from tether.ui.deps import check_csrf, context, csrf_for, set_csrf_cookie
from tether.ui.pages.common import templates
from tether.ui.security import SESSION_COOKIE, is_loopback, safe_next

router = APIRouter(include_in_schema=False)
Field = Annotated[str | None, Form()]


def _form(request: Request, ctx: UiContext, *, next_: str, error: str | None = None,
          status: int = 200) -> Response:
    token, seed = csrf_for(request, ctx)
    resp = templates.TemplateResponse(
        request, "signin.html",
        {"csrf": token, "next": next_, "error": error,
         # The one notice this page has: a link cannot make it say anything else.
         "notice": "signed out" if request.query_params.get("out") == "1" else None,
         "secure": not is_loopback(ctx.host)},
        status_code=status, headers={"Cache-Control": "no-store"})
    set_csrf_cookie(resp, seed)
    return resp


@router.get("/signin")
def signin_page(request: Request, ctx: Annotated[UiContext, Depends(context)]) -> Response:
    return _form(request, ctx, next_=safe_next(request.query_params.get("next")))


@router.post("/signin")
async def signin(request: Request, ctx: Annotated[UiContext, Depends(context)],
                 token: Field = None, next: Field = None) -> Response:
    await check_csrf(request, ctx.secret)
    sessions = ctx.auth.sessions
    if sessions is None:
        raise HTTPException(404, "this dashboard has no sign-in (it was built without "
                                 "sessions)")
    go = safe_next(next)
    p = authenticate(ctx.store, (token or "").strip())
    info = ctx.store.token_by_hash(hash_secret((token or "").strip())) if p else None
    if info is None or not info.active:
        return _form(request, ctx, next_=go, status=401,
                     error="that token is not valid (mistyped, or revoked): ask an admin "
                           "for one (`tether ui token create`)")
    sid = sessions.start(info)
    resp = RedirectResponse(go, status_code=303)
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict", path="/",
                    secure=not is_loopback(ctx.host))
    return resp


@router.post("/signout")
async def signout(request: Request, ctx: Annotated[UiContext, Depends(context)]) -> Response:
    await check_csrf(request, ctx.secret)
    sid = request.cookies.get(SESSION_COOKIE)
    if sid and ctx.auth.sessions is not None:
        ctx.auth.sessions.end(sid)
    resp = RedirectResponse("/signin?out=1", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                       secure=not is_loopback(ctx.host))
    return resp
