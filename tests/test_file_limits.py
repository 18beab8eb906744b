"""The file tools under large files, deep paths, odd names, devices and hard links.

Each costs what it returns, or is refused with a message that names the path and says
what to do: a 100 MB file is read in slices, a large before-image is stored once (as a
chunk the undo names), a path 1,000 folders deep is refused before anything is made,
a name that is not UTF-8 never reaches the journal, and a device or a hard link to a
file outside is neither opened nor changed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.test_file_tools import call_in
from tether import Done, StepAgent, Worker, start_run, tool, verify_store
from tether.errors import UsageError
from tether.provenance.rollback import rollback
from tether.store.sqlite import SQLiteStore
from tether.tools.base import record_touch
from tether.tools.files import (
    FILE_TOOLS,
    file_tools,
    fs_append,
    fs_list,
    fs_mkdir,
    fs_read,
    fs_restore,
    fs_write,
)
from tether.tools.fsplan import INLINE_LIMIT

MiB = 1024 * 1024


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


# -- reads -------------------------------------------------------------------------------------


def test_a_huge_file_is_refused_whole_and_read_in_slices(ws: Path) -> None:
    with open(ws / "big.log", "wb") as f:  # sparse: 100 MB that cost no disk
        f.truncate(100 * MiB)
        f.seek(50 * MiB)
        f.write(b"needle")
    with pytest.raises(UsageError, match=r"big\.log is 104857600 bytes; fs_read returns at "
                                         r"most 4194304 bytes at a time; read it in slices "
                                         r"with offset and length"):
        call_in(ws, fs_read, path="big.log")
    got, _ = call_in(ws, fs_read, path="big.log", offset=50 * MiB, length=6)
    assert got == "needle"
    with pytest.raises(UsageError, match="is 104857600 bytes"):
        call_in(ws, fs_read, path="big.log", offset=10, length=5 * MiB)
    tail, _ = call_in(ws, fs_read, path="big.log", offset=100 * MiB - 3)
    assert tail == "\0\0\0"
    with pytest.raises(UsageError, match="offset and length must be 0 or more"):
        call_in(ws, fs_read, path="big.log", offset=-1)


def test_the_limits_are_set_by_the_tool_factory(ws: Path) -> None:
    (ws / "a.txt").write_bytes(b"x" * 20)
    small = {t.name: t for t in file_tools(max_read=10, max_file=15)}
    with pytest.raises(UsageError, match=r"a\.txt is 20 bytes; fs_read returns at most 10"):
        call_in(ws, small["fs_read"], path="a.txt")
    assert call_in(ws, fs_read, path="a.txt")[0] == "x" * 20  # the defaults are untouched
    with pytest.raises(UsageError, match=r"a\.txt is 20 bytes; the file tools change files of "
                                         r"at most 15 bytes"):
        call_in(ws, small["fs_append"], path="a.txt", content="y")
    assert (ws / "a.txt").read_bytes() == b"x" * 20
    assert [t.name for t in file_tools()] == [t.name for t in FILE_TOOLS]
    with pytest.raises(UsageError, match="max_file must be a positive number of bytes"):
        file_tools(max_file=0)


# -- large before-images, stored once ------------------------------------------------------------


async def _editor(ctx: Any, state: dict[str, Any]) -> Any:
    n = state["n"] = state.get("n", 0) + 1
    if n <= 5:
        await ctx.call("fs_append", path="big.txt", content=f"{n}\n")
    else:  # a rewrite of another large file: its before-image is needed whole
        await ctx.call("fs_write", path="other.txt", content="short\n")
    return Done() if n >= 6 else None


EDITOR = StepAgent(_editor, name="editor", tools=file_tools(max_file=8 * MiB))


def _sizes(path: Path) -> tuple[int, int, int, int]:
    db = sqlite3.connect(path)
    try:
        chunks, chunk_bytes = db.execute("SELECT count(*), coalesce(sum(length(body)), 0) "
                                         "FROM chunks WHERE length(body) > ?",
                                         (INLINE_LIMIT,)).fetchone()
        undo = db.execute("SELECT max(length(undo)) FROM effects").fetchone()[0]
        event = db.execute("SELECT max(length(payload)) FROM events").fetchone()[0]
        return chunks, chunk_bytes, undo, event
    finally:
        db.close()


def test_large_before_images_are_stored_once_or_not_at_all(tmp_path: Path, ws: Path) -> None:
    size = 2 * MiB
    original, other = os.urandom(size), os.urandom(size)  # incompressible
    (ws / "big.txt").write_bytes(original)
    (ws / "other.txt").write_bytes(other)
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    run = start_run(store, EDITOR, agent_ref="editor", goal="g", workspace=ws)
    asyncio.run(Worker(store, agents={"editor": EDITOR}, poll_interval=0.01,
                       ).run(until_idle=True))
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    chunks, chunk_bytes, undo, event = _sizes(path)
    # An append's undo cuts the file back (checking the kept bytes' hash): no copy of the
    # 2 MiB at all. The rewrite's before-image is one chunk, named by the intent and the
    # undo alike; no event or undo column carries it.
    assert (chunks, chunk_bytes) == (1, size)
    assert undo < 1000 and event < 4000
    # The undos get the bytes back: rolling back to step 0 restores both byte for byte.
    rollback(store, run, 0)
    assert (ws / "big.txt").read_bytes() == original
    assert (ws / "other.txt").read_bytes() == other
    assert verify_store(store).ok
    store.close()


def test_an_append_undo_cuts_back_only_what_it_added(ws: Path) -> None:
    before = b"a" * (INLINE_LIMIT + 1)
    (ws / "f.txt").write_bytes(before)
    _, ctx = call_in(ws, fs_append, path="f.txt", content="tail")
    assert ctx.undo is not None
    [entry] = ctx.undo.arguments["entries"]
    assert entry["content_b64"] is None and entry["prefix"]["size"] == len(before)
    for _ in range(2):  # idempotent
        call_in(ws, fs_restore, entries=[entry])
        assert (ws / "f.txt").read_bytes() == before
    (ws / "f.txt").write_bytes(b"b" + before[1:] + b"tail")  # someone changed a kept byte
    with pytest.raises(UsageError, match=r"cannot restore f\.txt: expected a file whose "
                                         r"first 16385 bytes are as before the append"):
        call_in(ws, fs_restore, entries=[entry])
    assert (ws / "f.txt").read_bytes() == b"b" + before[1:] + b"tail"


def test_an_undo_journaled_inline_still_restores(ws: Path) -> None:
    """tether 0.1.0 journaled every before-image inline, as base64: those undos still run."""
    (ws / "a.txt").write_bytes(b"new")
    entry = {"path": "a.txt", "exists": True, "kind": "file", "content_b64": "b2xk",
             "mode": 0o644}
    call_in(ws, fs_restore, entries=[entry])
    assert (ws / "a.txt").read_bytes() == b"old"


def test_an_undo_naming_a_chunk_needs_the_store(ws: Path) -> None:
    entry = {"path": "a.txt", "exists": True, "kind": "file", "content_b64": None,
             "content_sha256": "0" * 64, "mode": 0o644}
    with pytest.raises(UsageError, match=r"is chunk 0{64} of the store; run the undo through"):
        call_in(ws, fs_restore, entries=[entry])
    assert not (ws / "a.txt").exists()


# -- paths -------------------------------------------------------------------------------------


def test_deep_and_long_paths_are_refused_before_anything_is_made(ws: Path) -> None:
    with pytest.raises(UsageError, match="it has 100 components; at most 64 are accepted"):
        call_in(ws, fs_mkdir, path="c/" * 100)
    with pytest.raises(UsageError, match="it is 2000 bytes long; at most 1024 are accepted"):
        call_in(ws, fs_mkdir, path="c/" * 1000)
    with pytest.raises(UsageError, match="it is 4200 bytes long; at most 1024 are accepted"):
        call_in(ws, fs_mkdir, path="c/" * 2100)
    assert list(ws.iterdir()) == []
    _, ctx = call_in(ws, fs_mkdir, path="c/" * 64)  # the deepest accepted
    assert ctx.undo is not None and len(ctx.undo.arguments["entries"]) == 64


def test_a_name_too_long_for_the_file_system_is_a_clear_error(ws: Path) -> None:
    name = "n" * 300
    with pytest.raises(UsageError, match=r"the name n{40}\.\.\. is longer than 255 bytes"):
        call_in(ws, fs_write, path=name, content="x")
    with pytest.raises(UsageError, match="longer than 255 bytes"):
        call_in(ws, fs_read, path=f"d/{name}")


# -- names that are not UTF-8 --------------------------------------------------------------------

SEEN: list[Any] = []


@tool(effect="read", touches_files=True)
def touch_odd(path: str) -> str:
    """A read tool of one's own that names the path it was given."""
    record_touch(path)
    return "read"


@tool(effect="read")
def odd_result() -> Any:
    """A read tool whose result is not JSON (a set)."""
    return {1, 2}


async def _lister(ctx: Any, state: dict[str, Any]) -> Any:
    SEEN.append(await ctx.call(fs_list, path="."))
    for bad in ("bad\udcffname.txt", "x\ud800"):
        try:
            await ctx.call(fs_read, path=bad)
        except Exception as exc:
            SEEN.append(f"{type(exc).__name__}: {exc}")
    for t, args in ((odd_result, {}), (touch_odd, {"path": "bad\udcffname.txt"})):
        try:
            await ctx.call(t, **args)
        except Exception as exc:
            SEEN.append(f"{type(exc).__name__}: {exc}")
    return Done()


LISTER = StepAgent(_lister, name="lister", tools=[fs_list, fs_read, odd_result, touch_odd])


def test_names_that_are_not_utf8_never_fail_the_run(tmp_path: Path, ws: Path) -> None:
    os.close(os.open(os.fsencode(ws) + b"/bad\xffname.txt", os.O_CREAT | os.O_WRONLY))
    (ws / "good.txt").write_text("ok")
    store = SQLiteStore(tmp_path / "s.db")
    SEEN.clear()
    run = start_run(store, LISTER, agent_ref="lister", goal="g", workspace=ws)
    asyncio.run(Worker(store, agents={"lister": LISTER}, poll_interval=0.01).run(
        until_idle=True))
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    listing, bad1, bad2, odd, touched = SEEN
    assert listing == ["good.txt", "# 1 more entries not listed: their names are not valid "
                       "UTF-8 (rename them to use them with the file tools)"]
    for bad in (bad1, bad2):
        assert bad.startswith("ToolFailed: tool fs_read failed: UsageError: path ")
        assert "it is not valid Unicode (a lone surrogate)" in bad
    assert odd.startswith("ToolFailed: tool odd_result failed: UsageError: tool odd_result "
                          "returned a value the journal cannot keep as JSON")
    assert touched.startswith("ToolFailed: tool touch_odd failed: UsageError: path "
                              "'bad\\udcffname.txt' is not valid Unicode")
    assert verify_store(store).ok
    store.close()


# -- devices and hard links ----------------------------------------------------------------------


def test_a_fifo_is_refused_without_being_opened(ws: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    os.mkfifo(ws / "pipe")
    opened: list[Any] = []
    real_open = os.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    for t, args in ((fs_read, {"path": "pipe"}), (fs_write, {"path": "pipe", "content": "x"}),
                    (fs_append, {"path": "pipe", "content": "x"})):
        with pytest.raises(UsageError, match=r"pipe is neither a regular file nor a directory"):
            call_in(ws, t, **args)
    assert "pipe" not in opened


def test_a_device_is_refused(ws: Path) -> None:
    try:
        os.mknod(ws / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD (root); the FIFO test covers "
                    "the same path")
    with pytest.raises(UsageError, match="null is neither a regular file nor a directory"):
        call_in(ws, fs_read, path="null")


def test_a_hard_link_to_a_file_outside_is_neither_read_nor_changed(tmp_path: Path,
                                                                    ws: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    secret.chmod(0o600)
    os.link(secret, ws / "link.txt")
    for t, args in ((fs_read, {"path": "link.txt"}),
                    (fs_append, {"path": "link.txt", "content": "x"}),
                    (fs_restore, {"entries": [{"path": "link.txt", "exists": True,
                                               "kind": "file", "content_b64": "c2VjcmV0",
                                               "mode": 0o666}]})):
        with pytest.raises(UsageError, match=r"link\.txt has 2 hard links; the file tools "
                                             r"do not read or change a file that has other "
                                             r"names"):
            call_in(ws, t, **args)
    assert secret.read_text() == "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
