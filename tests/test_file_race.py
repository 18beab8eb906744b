"""The workspace holds under a race: a separate process keeps swapping a folder and a file
of the workspace for symlinks to an outside folder while the file tools run.

Escapes counted: a file or folder the tools created or changed outside the workspace, a
temporary file left outside, and outside content (the word SECRET) in any result, any
before-image journaled for the undo or in an intent's plan, or any workspace file.
There must be none.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tether.errors import UsageError
from tether.tools.base import IntentInput, Tool, ToolContext, _current
from tether.tools.files import (
    fs_append,
    fs_delete,
    fs_list,
    fs_mkdir,
    fs_move,
    fs_read,
    fs_restore,
    fs_write,
)
from tether.tools.fssettle import prepare_files

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 120
"""Ten calls a round (the tools, the undo, and the plan an intent journals): 1,200 calls."""
SECRET = b"SECRET"


def _call(ws: Path, t: Tool, **arguments: Any) -> tuple[Any, ToolContext]:
    ctx = ToolContext(run="r1", step=1, effect_id="e1", idempotency_key="k1", workspace=ws)
    token = _current.set(ctx)
    try:
        return t(**t.validate(arguments)), ctx
    finally:
        _current.reset(token)


def _leaks(result: Any, ctx: ToolContext) -> bool:
    """Outside content in what the call returned or registered for its undo."""
    if SECRET in repr(result).encode():
        return True
    entries = ctx.undo.arguments.get("entries", []) if ctx.undo else []
    return any(SECRET in base64.b64decode(e["content_b64"]) for e in entries
               if e.get("content_b64"))


def _prepare(ws: Path) -> tuple[str, bool]:
    """What the intent of an append would journal: refused, or images without outside bytes."""
    try:
        got = prepare_files(IntentInput("r1", 1, "fs_append", {"path": "d/f.txt",
                                                              "content": "p\n"}, ws))
    except UsageError:
        return "prepare refused", False
    assert got is not None
    return "prepared", any(SECRET in base64.b64decode(e["content_b64"])
                           for e in got.facts["images"] if e.get("content_b64"))


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (not following symlinks): file bytes, or None."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(folder).as_posix()
            out[rel] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


def _open_fds() -> int:
    fd_dir = Path("/proc/self/fd")
    return len(list(fd_dir.iterdir())) if fd_dir.exists() else 0


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / "d").mkdir(parents=True)
    outside.mkdir()
    (ws / "d" / "f.txt").write_bytes(b"inside\n")
    (outside / "secret.txt").write_bytes(SECRET + b" outside\n")
    (outside / "f.txt").write_bytes(SECRET + b" outside f\n")
    (ws / "d.swap").symlink_to(outside, target_is_directory=True)
    (ws / "d" / "f.swap").symlink_to(outside / "secret.txt")
    return ws, outside


def _round(ws: Path, i: int) -> list[tuple[Tool, dict[str, Any]]]:
    return [(fs_write, {"path": "d/f.txt", "content": f"w{i}\n"}),
            (fs_read, {"path": "d/f.txt"}),
            (fs_append, {"path": "d/f.txt", "content": f"a{i}\n"}),
            (fs_write, {"path": f"d/n{i}.txt", "content": "new\n"}),
            (fs_list, {"path": "d"}),
            (fs_move, {"src": f"d/n{i}.txt", "dst": f"d/m{i}.txt"}),
            (fs_delete, {"path": f"d/m{i}.txt"}),
            (fs_mkdir, {"path": f"d/k{i}"})]


def test_swapping_folders_and_files_for_symlinks_never_leads_outside(
        layout: tuple[Path, Path], tmp_path: Path) -> None:
    ws, outside = layout
    before_outside = _tree(outside)
    stop = tmp_path / "stop"
    swapper = subprocess.Popen([sys.executable, "-m", "tests.raceswap", str(ws), str(outside),
                                str(stop)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    outcomes: Counter[str] = Counter()
    leaks = 0
    try:
        assert swapper.stdout is not None
        assert swapper.stdout.readline().strip() == "ready"  # the barrier: it is swapping
        fds = _open_fds()
        for i in range(ROUNDS):
            undo = None
            for t, arguments in [*_round(ws, i), (fs_restore, {})]:
                try:
                    if t is fs_restore:  # the undo path: put the round's first write back
                        if undo is None:
                            outcomes["skipped"] += 1
                            continue
                        result, ctx = _call(ws, fs_restore, **undo.arguments)
                    else:
                        result, ctx = _call(ws, t, **arguments)
                except UsageError as exc:
                    outcomes["symlink refused" if "symlink" in str(exc) else "refused"] += 1
                    continue
                except OSError:
                    outcomes["os error"] += 1
                    continue
                outcomes["done"] += 1
                leaks += _leaks(result, ctx)
                if t is fs_write and arguments["path"] == "d/f.txt":
                    undo = ctx.undo
            how, leaked = _prepare(ws)  # the plan an intent journals, worked out mid-race
            outcomes[how] += 1
            leaks += leaked
        assert _open_fds() == fds, "the tools leaked folder descriptors"
    finally:
        stop.touch()
        out, _ = swapper.communicate(timeout=30)
    calls = sum(outcomes.values())
    now_outside = _tree(outside)
    written = sorted(k for k, v in now_outside.items()
                     if before_outside.get(k, b"") != v and not k.startswith(".tether-"))
    temps = sorted(k for k in now_outside if ".tether-" in k)
    copied = sorted(k for k, v in _tree(ws).items() if v is not None and SECRET in v)
    report = (f"{calls} calls {dict(outcomes)}, swapper cycles {out.strip()}: "
              f"{len(written)} writes outside {written[:5]}, {len(temps)} temp files outside, "
              f"{leaks} results or before-images with outside content, "
              f"{len(copied)} workspace files holding outside content {copied[:5]}")
    print(report)
    assert calls >= 1000
    assert outcomes["done"] and outcomes["symlink refused"], f"no race happened: {report}"
    assert (written, temps, leaks, copied) == ([], [], 0, []), report
