"""The web dashboard: ``tether ui serve`` (docs/ui.md).

A surface like the CLI, over the same store and the same operations façade
(:class:`tether.ops.Tether`): server-rendered pages (Jinja2) kept live by server-sent
events, and every page's data and action as JSON under ``/api/`` (FastAPI, with its
OpenAPI schema at ``/api/openapi.json``), served by uvicorn on loopback.

The web stack is the optional ``ui`` extra; :func:`require` says how to install it
when it is missing. The rest of this package's modules import it freely: only
:mod:`tether.ui.security` and :mod:`tether.ui.auth` (pure) do without.
"""

from __future__ import annotations

import importlib.util

from tether.errors import UsageError

__all__ = ["INSTALL_HINT", "require"]

_NEEDS = {"fastapi": "fastapi", "jinja2": "jinja2", "uvicorn": "uvicorn",
          "multipart": "python-multipart"}
INSTALL_HINT = "pip install 'tether[ui]' (in a clone of tether: make ui, or pip install -e '.[ui]')"


def require() -> None:
    """Check that the web stack is installed.

    Raises:
        UsageError: naming the missing packages and the install command.
    """
    missing = [pkg for mod, pkg in _NEEDS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise UsageError(f"the web dashboard needs {', '.join(missing)} (the ui extra): "
                         f"{INSTALL_HINT}")
