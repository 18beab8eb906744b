"""What every page shares: rendering (whole, or only its live block), form fields,
and the redirect after a form's action."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from tether.errors import TetherError, UsageError
from tether.reporting.lines import at, compact, journal_at
from tether.ui.context import UiContext
from tether.ui.deps import csrf_for, set_csrf_cookie

__all__ = ["PART_HEADER", "back", "json_field", "page", "templates", "wants_live"]

PART_HEADER = "x-tether-part"
_HERE = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(_HERE / "templates"))
templates.env.filters["when"] = at
templates.env.filters["run_when"] = journal_at
templates.env.filters["compact"] = compact
templates.env.filters["pretty"] = lambda v: orjson.dumps(
    v, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS).decode()


def wants_live(request: Request) -> bool:
    """Whether the page's script asks for the live block alone (after a commit)."""
    return request.headers.get(PART_HEADER) == "live"


def page(request: Request, ctx: UiContext, name: str,
         data: dict[str, Any] | Callable[[], dict[str, Any]], *,
         key: Hashable = None) -> Response:
    """Render template ``name`` with ``data``: the whole page, or only its ``live`` block
    when the page's script asks for it. Given as a function, ``data`` is read only when
    needed: the live block of one page at one commit is read and rendered once for every
    open page that asks (:mod:`tether.ui.coalesce`) with the same ``key`` (what else,
    beside the URL and the viewer, the block depends on: a run page's last event shown)."""
    token, seed = csrf_for(request, ctx)
    who = getattr(request.state, "caller", None)
    head = ctx.poller.head

    def values(csrf: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"request": request, "csrf": csrf, "who": who,
                # Buttons a caller's role may not use are not drawn (the server refuses
                # them all the same).
                "can": (lambda action: who is not None and who.can(action)),
                **said(request), "batch": head, **data}
    read = data if callable(data) else (lambda: data)
    if wants_live(request):
        tmpl = templates.env.get_template(name)

        def render(csrf: str) -> str:
            return "".join(tmpl.blocks["live"](tmpl.new_context(values(csrf, read()))))
        viewer = (who.name, who.role) if who is not None else None
        html = ctx.live.get(head, (name, request.url.path, request.url.query, viewer, key),
                            render, token)
        resp: Response = HTMLResponse(html, headers={"Cache-Control": "no-store"})
    else:
        resp = templates.TemplateResponse(request, name, values(token, read()),
                                          headers={"Cache-Control": "no-store"})
    set_csrf_cookie(resp, seed)
    return resp


def _local(path: str | None, default: str) -> str:
    """A path on this dashboard to go back to (never another site's URL)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return default
    return path.split("?", 1)[0]


# Notices travel in the redirect's query, signed with a key of this process: a page shows
# only what this server said, never a sentence someone put in a link ("tokens rotated: paste
# yours at ...") on the real sign-in page.
_SAID_KEY = secrets.token_bytes(32)


def _signature(notice: str, error: str) -> str:
    msg = f"{notice}\0{error}".encode()
    return hmac.new(_SAID_KEY, msg, hashlib.sha256).hexdigest()[:32]


def said(request: Request) -> dict[str, str | None]:
    """The notice and error a redirect from this server carried (None unless signed)."""
    q = request.query_params
    notice, error = q.get("notice") or "", q.get("error") or ""
    if not (notice or error) or not hmac.compare_digest(q.get("said", ""),
                                                        _signature(notice, error)):
        return {"notice": None, "error": None}
    return {"notice": notice or None, "error": error or None}


def back(next_: str | None, default: str, *, notice: str | None = None,
         error: str | None = None) -> Response:
    """303 to the page the form came from, with a notice or an error for it to show."""
    q = {k: v for k, v in (("notice", notice), ("error", error)) if v}
    if q:
        q["said"] = _signature(notice or "", error or "")
    url = _local(next_, default) + (f"?{urlencode(q)}" if q else "")
    return RedirectResponse(url, status_code=303)


def attempt(next_: str | None, default: str, fn: Any) -> Response:
    """Run a form's action: back with its notice, or with tether's error message (the page
    shows it; nothing changed)."""
    try:
        done = fn()
    except TetherError as exc:
        return back(next_, default, error=" ".join(str(exc).split()))
    return back(next_, default, notice=done.message)


def json_field(text: str | None, name: str, *, obj: bool = True) -> Any:
    """A form field holding JSON (an object unless ``obj`` is False); None when empty."""
    if text is None or not text.strip():
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{name}: not JSON ({exc}); e.g. {{\"to\": \"a@example.com\"}}") from None
    if obj and not isinstance(value, dict):
        raise UsageError(f"{name}: give a JSON object ({{...}}), not {type(value).__name__}")
    return value


def checked(value: str | None) -> bool:
    """A checkbox: present (any value but empty) is on."""
    return bool(value)
