"""A real browser for the dashboard's tests: Playwright (Python) driving the system's
Chromium headless (Debian's ``chromium``; Playwright cannot download a browser of its
own here, so it is launched by path).

Where no Chromium can be found the browser tests skip, saying why, except under CI
(``CI`` set, as ``.ci/run`` runs): there they are required, and a missing browser fails
them. ``make test`` installs Chromium first where it can (``scripts/ensure-chromium.sh``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CANDIDATES = ("chromium", "chromium-browser")
"""Executable names of Debian's and Ubuntu's Chromium, looked up on PATH."""
ENV = "TETHER_CHROMIUM"
"""A Chromium executable to use instead (a path), when it is not on PATH."""
TIMEOUT_MS = 30_000
"""How long an expectation may wait for what it waits for: a liveness bound on a loaded
2-core machine, not a timing assertion (each wait ends as soon as the page shows it)."""


def find_chromium() -> str | None:
    """The Chromium executable to launch, or None when there is none."""
    given = os.environ.get(ENV)
    if given:
        return given if os.access(given, os.X_OK) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _missing(why: str) -> None:
    """Skip (a user's machine without the browser), or fail under CI, where the browser
    tests are required."""
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI requires the browser tests (make test installs Chromium "
                    "with apt-get when run as root)", pytrace=False)
    pytest.skip(f"{why}: install it (apt-get install chromium) or set {ENV}")


def require_chromium() -> str:
    """The Chromium executable, with Playwright importable; else skip (fail under CI).
    The ``chromium`` fixture (tests/conftest.py)."""
    try:
        import playwright.sync_api  # noqa: F401  # the dev extra has it
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[dev]')")
    path = find_chromium()
    if path is None:
        _missing(f"no Chromium found ({', '.join(CANDIDATES)} on PATH, or ${ENV})")
    assert path is not None
    return path


@contextmanager
def browse(executable: str, *, width: int = 1280, height: int = 900) -> Iterator[Page]:
    """A fresh headless Chromium and one page in it, closed at the end.

    Opened inside the test, after its store is set up: Playwright's sync API keeps an
    event loop marked running on this thread while it is open, so a test's own
    ``asyncio.run`` (a worker driven in process) must come before.
    """
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.set_default_timeout(TIMEOUT_MS)
            yield context.new_page()
        finally:
            browser.close()
