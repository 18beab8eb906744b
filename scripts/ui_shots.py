"""Screenshots of the dashboard's pages for docs/ui.md (``make ui-shots``).

Builds a realistic store (the demo's night, ``tether demo --dir`` in a temporary folder:
six runs in a swarm, an approval pending, a quarantined router with its alert), serves it
with ``tether ui serve`` on a free loopback port, and screenshots each page in headless
Chromium (Playwright, launched with the system's executable) at a fixed viewport::

    python scripts/ui_shots.py --out docs/img      # docs/img/ui-overview.png, ...

Ids and times differ at each run (the demo's night is new each time); the pages' layout
does not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VIEWPORT = {"width": 1280, "height": 860}
TETHER = str(Path(sys.executable).with_name("tether"))


def _tether(*args: str) -> str:
    out = subprocess.run([TETHER, *args], check=True, capture_output=True, text=True)
    return out.stdout


def _jsonl(*args: str) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in _tether(*args).splitlines() if ln.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(store: Path, log: Path) -> Iterator[str]:
    """``tether ui serve`` on ``store``; its base URL once it answers."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen([TETHER, "--store", str(store), "ui", "serve", "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"tether ui serve exited: {log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/session", timeout=5):  # noqa: S310  # loopback
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("tether ui serve did not answer in 30 s") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def _pages(store: Path) -> dict[str, str]:
    """The pages to shoot, by file name: the demo's router (quarantined by its alert) is
    the run, its rollback plan and the graph's focus."""
    runs = {r["name"]: r for r in _jsonl("--store", str(store), "runs", "--json")}
    router = runs["router"]["id"]
    alerts = [e for e in _jsonl("--store", str(store), "events", "router", "--json")
              if e["kind"] == "alert"]
    bad = alerts[0]["step"] if alerts else runs["router"]["step"]
    return {
        "ui-overview": "/",
        "ui-needs": "/needs",
        "ui-run": f"/runs/{router}",
        "ui-rollback-plan": f"/runs/{router}/rollback?to={bad - 1}&cascade=1",
        "ui-graph": f"/graph?focus={router}@{max(bad - 2, 1)}",
        "ui-report": "/report",
    }


def _chromium() -> str:
    exe = os.environ.get("TETHER_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    if not exe:
        raise SystemExit("no Chromium found: apt-get install chromium (make ui-shots does it "
                         "as root), or set TETHER_CHROMIUM")
    return exe


def shoot(out: Path, work: Path) -> list[Path]:
    """Build the demo's store in ``work``, serve it, and write one PNG per page."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        raise SystemExit("Playwright is missing: pip install -e '.[dev]'") from None
    exe = _chromium()
    night = work / "night"
    _tether("demo", "--dir", str(night))
    store = night / "tether.db"
    pages = _pages(store)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with _serving(store, work / "ui.log") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True)
        page = browser.new_context(viewport=VIEWPORT, device_scale_factor=1).new_page()
        for name, path in pages.items():
            resp = page.goto(base + path)
            if resp is None or resp.status != 200:
                raise SystemExit(f"{path} answered {resp.status if resp else 'nothing'}")
            shown = page.locator("#error, #focus-error, #inspect-error")
            if shown.count():
                raise SystemExit(f"{path} shows an error: {shown.first.inner_text()}")
            # Shot once the live stream is up, so the badge says so.
            expect(page.locator("#live-status")).to_have_attribute("data-state", "live",
                                                                  timeout=30_000)
            target = out / f"{name}.png"
            page.screenshot(path=str(target))
            written.append(target)
        browser.close()
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/img"), help="folder for the PNGs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tether-shots-") as tmp:
        for p in shoot(args.out, Path(tmp)):
            print(p)


if __name__ == "__main__":
    main()
