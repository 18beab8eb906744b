"""The built-in workspace file tools: confinement, undo byte for byte, after-images."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.canonical import dumps, loads
from tether.errors import UsageError
from tether.tools.base import Tool, ToolContext, _current
from tether.tools.files import (
    DIR_HASH,
    FILE_TOOLS,
    file_hash,
    fs_append,
    fs_delete,
    fs_list,
    fs_mkdir,
    fs_move,
    fs_read,
    fs_restore,
    fs_write,
    resolve,
)

Snapshot = dict[str, tuple[str, bytes | str | None, int]]
Call = Callable[..., tuple[Any, ToolContext]]


def call_in(workspace: Path | None, t: Tool, **arguments: Any) -> tuple[Any, ToolContext]:
    """Run a tool as tether would: a fresh context, arguments validated by its schema."""
    ctx = ToolContext(run="r1", step=1, effect_id="e1", idempotency_key="k1",
                      workspace=workspace)
    token = _current.set(ctx)
    try:
        return t(**t.validate(arguments)), ctx
    finally:
        _current.reset(token)


def undo(workspace: Path, ctx: ToolContext) -> tuple[Any, ToolContext]:
    assert ctx.undo is not None
    assert ctx.undo.tool == "fs_restore"
    # The undo is journaled as JSON: run it from its JSON form.
    return call_in(workspace, fs_restore, **loads(dumps(ctx.undo.arguments)))


def snapshot(root: Path) -> Snapshot:
    """Every path under root with its kind, bytes (or link target) and mode bits."""
    snap: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st_ = os.lstat(p)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                snap[rel] = ("link", os.readlink(p), 0)
            elif p.is_dir():
                snap[rel] = ("dir", None, st_.st_mode & 0o7777)
            else:
                snap[rel] = ("file", p.read_bytes(), st_.st_mode & 0o7777)
    return snap


def populate(root: Path) -> None:
    (root / "d").mkdir()
    (root / "d" / "keep.txt").write_bytes(b"keep\n")
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "a.txt").chmod(0o640)
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "bin.dat").write_bytes(bytes(range(256)))


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    populate(tmp_path)
    return tmp_path


@pytest.fixture
def call(ws: Path) -> Call:
    def run(t: Tool, **arguments: Any) -> tuple[Any, ToolContext]:
        return call_in(ws, t, **arguments)
    return run


@pytest.fixture
def in_ctx(ws: Path) -> Iterator[ToolContext]:
    """A tool context set for the whole test, for calling tools directly."""
    ctx = ToolContext(run="r1", step=1, effect_id="e1", idempotency_key="k1", workspace=ws)
    token = _current.set(ctx)
    yield ctx
    _current.reset(token)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- each tool, and its undo ------------------------------------------------------------------

OPS: list[tuple[Tool, dict[str, Any]]] = [
    (fs_write, {"path": "new.txt", "content": "héllo\n"}),
    (fs_write, {"path": "a.txt", "content": "overwritten"}),
    (fs_write, {"path": "d/keep.txt", "content": ""}),
    (fs_append, {"path": "a.txt", "content": "beta\n"}),
    (fs_append, {"path": "d/fresh.txt", "content": "first"}),
    (fs_delete, {"path": "run.sh"}),
    (fs_delete, {"path": "bin.dat"}),
    (fs_move, {"src": "a.txt", "dst": "d/a2.txt"}),
    (fs_move, {"src": "run.sh", "dst": "run2.sh"}),
    (fs_mkdir, {"path": "x/y/z"}),
    (fs_mkdir, {"path": "d/sub"}),
    (fs_mkdir, {"path": "d"}),
]
OP_IDS = [f"{t.name}-{'-'.join(map(str, a.values()))}" for t, a in OPS]


@pytest.mark.parametrize(("t", "arguments"), OPS, ids=OP_IDS)
def test_undo_restores_the_workspace_byte_for_byte(ws: Path, call: Call, t: Tool,
                                                    arguments: dict[str, Any]) -> None:
    before = snapshot(ws)
    result, ctx = call(t, **arguments)
    assert isinstance(result, str)
    assert snapshot(ws) != before or result.endswith("already exists")
    undo(ws, ctx)
    assert snapshot(ws) == before


@pytest.mark.parametrize(("t", "arguments"), OPS, ids=OP_IDS)
def test_restore_twice_is_the_same_as_once(ws: Path, call: Call, t: Tool,
                                           arguments: dict[str, Any]) -> None:
    before = snapshot(ws)
    _, ctx = call(t, **arguments)
    undo(ws, ctx)
    again, _ = undo(ws, ctx)
    assert snapshot(ws) == before
    assert "removed" not in again
    assert not again.startswith("restored")


def test_write_creates_and_overwrites_keeping_the_mode(ws: Path, call: Call) -> None:
    assert call(fs_write, path="d/n.txt", content="12 bytes ok\n")[0] == \
        "wrote 12 bytes to d/n.txt"
    assert (ws / "d/n.txt").read_bytes() == b"12 bytes ok\n"
    call(fs_write, path="a.txt", content="ünï")
    assert (ws / "a.txt").read_bytes() == "ünï".encode()
    assert (ws / "a.txt").stat().st_mode & 0o777 == 0o640
    assert not [p for p in os.listdir(ws) if p.startswith(".tether-")]


def test_write_refuses_a_missing_parent_and_points_to_mkdir(ws: Path, call: Call) -> None:
    before = snapshot(ws)
    with pytest.raises(UsageError, match=r"no/such does not exist; call fs_mkdir"):
        call(fs_write, path="no/such/file.txt", content="x")
    with pytest.raises(UsageError, match="is not a directory"):
        call(fs_write, path="a.txt/file.txt", content="x")
    with pytest.raises(UsageError, match="is a directory"):
        call(fs_write, path="d", content="x")
    assert snapshot(ws) == before


def test_append_to_existing_and_new_files(ws: Path, call: Call) -> None:
    assert call(fs_append, path="a.txt", content="beta\n")[0] == \
        "appended 5 bytes to a.txt (now 11 bytes)"
    assert (ws / "a.txt").read_bytes() == b"alpha\nbeta\n"
    assert (ws / "a.txt").stat().st_mode & 0o777 == 0o640
    call(fs_append, path="d/log", content="one")
    assert (ws / "d/log").read_bytes() == b"one"


def test_delete_files_only(ws: Path, call: Call) -> None:
    assert call(fs_delete, path="run.sh")[0] == "deleted run.sh"
    assert not (ws / "run.sh").exists()
    with pytest.raises(UsageError, match="files only"):
        call(fs_delete, path="d")
    with pytest.raises(UsageError, match="no such file"):
        call(fs_delete, path="ghost.txt")


def test_move_refuses_to_overwrite(ws: Path, call: Call) -> None:
    assert call(fs_move, src="a.txt", dst="d/b.txt")[0] == "moved a.txt to d/b.txt"
    assert (ws / "d/b.txt").read_bytes() == b"alpha\n"
    assert (ws / "d/b.txt").stat().st_mode & 0o777 == 0o640
    before = snapshot(ws)
    with pytest.raises(UsageError, match="destination exists"):
        call(fs_move, src="run.sh", dst="d/keep.txt")
    with pytest.raises(UsageError, match="call fs_mkdir"):
        call(fs_move, src="run.sh", dst="nope/run.sh")
    with pytest.raises(UsageError, match="files only"):
        call(fs_move, src="d", dst="e")
    assert snapshot(ws) == before


def test_mkdir_undo_removes_only_what_it_created_and_only_if_empty(ws: Path,
                                                                    call: Call) -> None:
    result, ctx = call(fs_mkdir, path="d/p/q")
    assert result == "created directory d/p/q (and d/p)"
    assert (ws / "d/p/q").is_dir()
    (ws / "d/p/late.txt").write_text("someone else's")
    message, _ = undo(ws, ctx)
    assert message == "removed directory d/p/q; kept directory d/p (not empty)"
    assert (ws / "d/p/late.txt").exists()
    assert (ws / "d/keep.txt").exists()
    with pytest.raises(UsageError, match="is a file"):
        call(fs_mkdir, path="a.txt/sub")


def test_read_and_list(ws: Path, call: Call) -> None:
    assert call(fs_read, path="a.txt")[0] == "alpha\n"
    assert call(fs_list)[0] == ["a.txt", "bin.dat", "d/", "run.sh"]
    assert call(fs_list, path="d")[0] == ["d/keep.txt"]
    with pytest.raises(UsageError, match="not UTF-8"):
        call(fs_read, path="bin.dat")
    with pytest.raises(UsageError, match="fs_list"):
        call(fs_read, path="missing.txt")
    with pytest.raises(UsageError, match="not a directory"):
        call(fs_list, path="a.txt")


def test_restore_conflicts_and_bad_entries_are_usage_errors(ws: Path, call: Call) -> None:
    _, ctx = call(fs_write, path="created.txt", content="x")
    (ws / "created.txt").unlink()
    (ws / "created.txt").mkdir()
    with pytest.raises(UsageError, match="changed by someone else"):
        undo(ws, ctx)
    with pytest.raises(UsageError, match="malformed entry"):
        call(fs_restore, entries=[{"path": "a.txt", "exists": "yes"}])
    with pytest.raises(UsageError, match="invalid base64"):
        call(fs_restore, entries=[{"path": "a.txt", "exists": True, "kind": "file",
                                   "content_b64": "!!", "mode": None}])


def test_restore_puts_back_mode_bits_even_when_the_bytes_match(ws: Path, call: Call) -> None:
    _, ctx = call(fs_write, path="a.txt", content="alpha\n")
    (ws / "a.txt").chmod(0o600)
    assert undo(ws, ctx)[0] == "restored a.txt"
    assert (ws / "a.txt").stat().st_mode & 0o777 == 0o640
    _, ctx = call(fs_delete, path="run.sh")
    (ws / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (ws / "run.sh").chmod(0o600)
    undo(ws, ctx)
    assert (ws / "run.sh").stat().st_mode & 0o777 == 0o755


def test_restore_is_itself_undoable(ws: Path, call: Call) -> None:
    _, write_ctx = call(fs_write, path="a.txt", content="new")
    after_write = snapshot(ws)
    _, restore_ctx = undo(ws, write_ctx)
    undo(ws, restore_ctx)
    assert snapshot(ws) == after_write


def test_tools_declare_their_effects() -> None:
    effects = {t.name: (t.effect, t.idempotent) for t in FILE_TOOLS}
    assert effects == {
        "fs_read": ("read", False), "fs_list": ("read", False),
        "fs_write": ("reversible", False), "fs_append": ("reversible", False),
        "fs_delete": ("reversible", False), "fs_move": ("reversible", False),
        "fs_mkdir": ("reversible", False),
    }
    # The undo they register is not offered to agents (a model writing before-images).
    assert (fs_restore.effect, fs_restore.idempotent) == ("reversible", True)
    assert fs_restore not in FILE_TOOLS


def test_a_failed_write_leaves_the_old_bytes_and_no_temp_file(
        ws: Path, call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(ws)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    # The model is told which path and what the system said, not a raw OSError.
    with pytest.raises(UsageError, match=r"cannot act on 'a\.txt': simulated crash"):
        call(fs_write, path="a.txt", content="half")
    assert snapshot(ws) == before


# -- confinement ------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory, ws: Path) -> Path:
    out = tmp_path_factory.mktemp("outside")
    (out / "secret.txt").write_text("secret")
    (ws / "link_file").symlink_to(out / "secret.txt")
    (ws / "link_dir").symlink_to(out, target_is_directory=True)
    (ws / "link_new").symlink_to(out / "not-yet.txt")
    return out


ESCAPES = ["..", "../x", "a/../../x", "d/../a.txt", "/etc/passwd", "link_file",
           "link_dir/secret.txt", "link_dir/new.txt", "link_new", ""]


@pytest.mark.parametrize("rel", ESCAPES)
def test_resolve_refuses_escapes(ws: Path, outside: Path, rel: str) -> None:
    with pytest.raises(UsageError, match="only relative paths inside the workspace") as info:
        resolve(ws, rel)
    assert str(ws) in str(info.value)
    assert repr(rel) in str(info.value)


@pytest.mark.parametrize("rel", ESCAPES)
def test_tools_refuse_escapes_and_touch_nothing(ws: Path, outside: Path, call: Call,
                                                rel: str) -> None:
    before, before_out = snapshot(ws), snapshot(outside)
    attempts: list[tuple[Tool, dict[str, Any]]] = [
        (fs_write, {"path": rel, "content": "x"}), (fs_append, {"path": rel, "content": "x"}),
        (fs_delete, {"path": rel}), (fs_mkdir, {"path": rel + "/sub"}),
        (fs_move, {"src": "a.txt", "dst": rel}), (fs_move, {"src": rel, "dst": "z"}),
        (fs_read, {"path": rel}), (fs_list, {"path": rel}),
        (fs_restore, {"entries": [{"path": rel, "exists": False, "kind": "file",
                                   "content_b64": None, "mode": None}]}),
    ]
    for t, arguments in attempts:
        if rel == "" and t is fs_mkdir:
            continue  # "/sub" is then absolute: refused, but by the other rule
        with pytest.raises(UsageError, match="refused"):
            call(t, **arguments)
    assert snapshot(ws) == before
    assert snapshot(outside) == before_out


def test_symlinks_inside_the_workspace_are_refused_too(ws: Path, call: Call) -> None:
    # Following a link safely would mean resolving it: the check-then-use a racing process
    # can exploit. So even a link pointing inside is refused, naming the link.
    (ws / "alias").symlink_to(ws / "d")
    (ws / "d" / "same").symlink_to(ws / "d" / "keep.txt")
    before = snapshot(ws)
    for rel, link in (("alias/keep.txt", "alias"), ("d/same", "d/same")):
        with pytest.raises(UsageError, match=f"{link} is a symbolic link"):
            resolve(ws, rel)
        for t, arguments in ((fs_write, {"path": rel, "content": "via link"}),
                             (fs_read, {"path": rel}), (fs_append, {"path": rel, "content": "x"}),
                             (fs_delete, {"path": rel}), (fs_move, {"src": rel, "dst": "z"})):
            with pytest.raises(UsageError, match=f"{link} is a symbolic link"):
                call(t, **arguments)
    assert snapshot(ws) == before
    # A listing still shows a link (as a name, not followed).
    assert "alias" in call(fs_list)[0]


def test_changing_the_workspace_root_itself_is_refused(call: Call) -> None:
    with pytest.raises(UsageError, match="workspace root"):
        call(fs_mkdir, path=".")


def test_no_workspace_is_a_clear_usage_error() -> None:
    with pytest.raises(UsageError, match=r"no workspace configured for run r1; pass workspace="):
        call_in(None, fs_read, path="a.txt")


def test_tools_can_be_called_directly_inside_a_context(ws: Path, in_ctx: ToolContext) -> None:
    assert fs_write("direct.txt", "ok") == "wrote 2 bytes to direct.txt"
    assert in_ctx.undo is not None
    assert in_ctx.after == {"files": {"direct.txt": sha(b"ok")}}


# -- after-images -----------------------------------------------------------------------------


def test_after_images_are_recorded(ws: Path, call: Call) -> None:
    _, ctx = call(fs_write, path="w.txt", content="written")
    assert ctx.after == {"files": {"w.txt": sha(b"written")}}
    _, ctx = call(fs_append, path="w.txt", content="+")
    assert ctx.after == {"files": {"w.txt": sha(b"written+")}}
    _, ctx = call(fs_move, src="w.txt", dst="d/w.txt")
    assert ctx.after == {"files": {"w.txt": None, "d/w.txt": sha(b"written+")}}
    _, ctx = call(fs_delete, path="d/w.txt")
    assert ctx.after == {"files": {"d/w.txt": None}}
    _, ctx = call(fs_mkdir, path="m/n")
    assert ctx.after == {"files": {"m": DIR_HASH, "m/n": DIR_HASH}}
    _, ctx = undo(ws, ctx)
    assert ctx.after == {"files": {"m/n": None, "m": None}}
    assert file_hash(ws, "a.txt") == sha(b"alpha\n")
    assert file_hash(ws, "d") == DIR_HASH
    assert file_hash(ws, "gone") is None


# -- random sequences, undone in reverse --------------------------------------------------------

NAMES = ["a.txt", "b", "d/keep.txt", "d/c", "n/e", "n/m/f", "run.sh"]
DIRS = ["n", "n/m", "d/x"]
op_strategy = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.text(max_size=20)),
    st.tuples(st.just("append"), st.sampled_from(NAMES), st.text(max_size=20)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("move"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("mkdir"), st.sampled_from(DIRS)),
)


def apply(ws: Path, op: tuple[Any, ...]) -> tuple[Any, ToolContext]:
    match op:
        case ("write", path, content):
            return call_in(ws, fs_write, path=path, content=content)
        case ("append", path, content):
            return call_in(ws, fs_append, path=path, content=content)
        case ("delete", path):
            return call_in(ws, fs_delete, path=path)
        case ("move", src, dst):
            return call_in(ws, fs_move, src=src, dst=dst)
        case ("mkdir", path):
            return call_in(ws, fs_mkdir, path=path)
    raise AssertionError(op)


@settings(max_examples=40, deadline=None)
@given(st.lists(op_strategy, max_size=12))
def test_random_sequences_undo_in_reverse(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        populate(ws)
        done: list[tuple[Snapshot, ToolContext]] = []
        for op in ops:
            before = snapshot(ws)
            try:
                _, ctx = apply(ws, op)
            except UsageError:
                assert snapshot(ws) == before  # a refused call changes nothing
                continue
            for rel, digest in ctx.after["files"].items():
                assert file_hash(ws, rel) == digest
            done.append((before, ctx))
        for before, ctx in reversed(done):
            undo(ws, ctx)
            assert snapshot(ws) == before


def test_a_temporary_file_a_killed_writer_left_is_hidden_then_removed(tmp_path: Path) -> None:
    # A process killed between writing its temporary file and renaming it leaves
    # `.tether-PID-TOKEN.tmp` behind: listings never show it, and the next write in that
    # folder removes it (its PID is gone); a live writer's temporary file is left alone.
    import subprocess
    import sys

    from tether.tools.files import fs_list
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f".tether-{int(dead.stdout)}-{'a' * 16}.tmp"
    live = tmp_path / f".tether-{os.getpid()}-{'b' * 16}.tmp"
    stale.write_text("half")
    live.write_text("in progress")
    assert call_in(tmp_path, fs_list)[0] == []
    call_in(tmp_path, fs_write, path="a.txt", content="x")
    assert not stale.exists() and live.exists()
    assert call_in(tmp_path, fs_list)[0] == ["a.txt"]
