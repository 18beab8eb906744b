"""Every error the dashboard answers, in one shape.

Under ``/api/`` an error is ``{"error": {"status", "kind", "message"}}`` with the HTTP
status: tether's own errors keep the message the CLI prints (it names the run, step or
event and how to fix it); a request the schema refuses says which field and why; an
unexpected failure says only that it happened (the server's log has the traceback).
Pages get the same message in an HTML page.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import escape
from starlette.exceptions import HTTPException

from tether.errors import (
    LeaseLost,
    NotFound,
    StoreError,
    StoreLocked,
    TetherError,
    UsageError,
    VerificationFailed,
)
from tether.ui.security import SESSION_COOKIE, safe_next

__all__ = ["error_response", "install"]

log = logging.getLogger("tether.ui")


def status_of(exc: TetherError) -> int:
    """The HTTP status of one of tether's errors."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, StoreLocked | LeaseLost):
        return 409  # someone else holds the store or the run: try again
    if isinstance(exc, VerificationFailed):
        return 409
    if isinstance(exc, StoreError):
        return 503
    return 500


def error_response(request: Request, status: int, kind: str, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    """The error as JSON under ``/api/`` (and for a client that asks for JSON), else as
    a small HTML page."""
    message = " ".join(message.split())
    if request.url.path.startswith("/api/") or "application/json" in request.headers.get(
            "accept", ""):
        body = {"error": {"status": status, "kind": kind, "message": message}}
        return JSONResponse(body, status_code=status, headers=headers)
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{status} "
            f"{escape(kind)}</title><link rel=stylesheet href='/static/ui.css'></head><body>"
            f"<main><h1>{status}</h1><p id=error data-testid=error>{escape(message)}</p>"
            "<p><a href='/'>overview</a></p></main></body></html>")
    return HTMLResponse(page, status_code=status, headers=headers)


def _page_view(request: Request) -> bool:
    """A browser opening a page (not the API, not a page's script fetching its live part):
    it is sent to sign in rather than shown a 401."""
    return (request.method in ("GET", "HEAD") and not request.url.path.startswith("/api/")
            and "x-tether-part" not in request.headers
            and "application/json" not in request.headers.get("accept", ""))


def _to_signin(request: Request) -> Response:
    """303 to the sign-in page, keeping where the browser was going (a local path only:
    :func:`~tether.ui.security.safe_next` checks it again when it is used)."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    resp = RedirectResponse(f"/signin?{urlencode({'next': safe_next(here)})}", status_code=303)
    if SESSION_COOKIE in request.cookies:
        resp.delete_cookie(SESSION_COOKIE, path="/")  # it names no session any more
    return resp


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) + ("" if len(errors) <= 5 else f" (and {len(errors) - 5} more)")


def install(app: FastAPI) -> None:
    """Register the handlers that give every error its shape."""

    @app.exception_handler(TetherError)
    async def _tether(request: Request, exc: TetherError) -> Response:
        return error_response(request, status_of(exc), type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, 422, "InvalidRequest",
                              _validation_message(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401 and _page_view(request):
            return _to_signin(request)
        kind = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return error_response(request, exc.status_code, kind, str(exc.detail),
                              dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return error_response(request, 500, "InternalError",
                              f"unexpected {type(exc).__name__} serving {request.url.path}; "
                              "the server's log has the details")
