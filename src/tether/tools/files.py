"""Built-in file tools: confined to the run's workspace, and reversible.

Every mutating tool takes the same four steps: confine its paths
(:func:`resolve`), capture their before-image, register the undo (a call of
:data:`fs_restore` whose arguments carry that before-image) and, once it has
acted, record the after-image hashes (:func:`file_hash`) so a rollback can
tell whether someone else changed a file since.

A before-image entry is a JSON object::

    {"path": "notes/a.txt", "exists": true, "kind": "file",
     "content_b64": "aGVsbG8=", "mode": 420}

``path`` is relative to the workspace's real path (symlinks resolved), ``kind``
is ``"file"`` or ``"dir"``; ``content_b64`` and ``mode`` are None when the path
did not exist (and ``content_b64`` is None for directories).

Writes are atomic (temp file in the same directory, fsync, ``os.replace``), so
a crash leaves the old bytes or the new ones, never half of them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from tether.errors import UsageError
from tether.procs import pid_alive
from tether.tools.base import Tool, current, record_after, record_touch, register_undo, tool

Kind = Literal["file", "dir"]

DIR_HASH: Final = "dir"
"""What :func:`file_hash` returns for a directory (never a SHA-256 hex)."""


# -- confinement ---------------------------------------------------------------------------


def resolve(workspace: Path, rel: str) -> Path:
    """The real path of ``rel`` inside ``workspace``, or an error.

    Refuses empty and absolute paths, any ``..`` component, and any path whose
    real path (following every symlink, the last component's included) is not
    inside the workspace's real path.

    Raises:
        UsageError: naming the path and the workspace.
    """
    return _confine(_root(workspace), rel)


def file_hash(workspace: Path, rel: str) -> str | None:
    """SHA-256 hex of the file at ``rel``; :data:`DIR_HASH` for a directory; None if absent.

    Rollback compares it with the after-image an effect recorded to detect a
    file someone else changed since.
    """
    return _hash(resolve(workspace, rel))


def _root(workspace: Path) -> Path:
    try:
        root = workspace.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"workspace {workspace} cannot be used ({exc}); "
                         "create the directory before starting the run") from None
    if not root.is_dir():
        raise UsageError(f"workspace {workspace} is not a directory; pass a directory")
    return root


def _confine(root: Path, rel: str) -> Path:
    def refused(why: str) -> UsageError:
        return UsageError(f"path {rel!r} refused: {why}; only relative paths inside the "
                          f"workspace {root} are allowed")

    if not rel:
        raise refused("it is empty")
    if "\0" in rel:
        raise refused("it contains a NUL character")
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        raise refused("it is absolute")
    if ".." in pure.parts:
        raise refused("it contains a '..' component")
    try:
        real = (root / pure).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise refused(f"it cannot be resolved ({exc})") from None
    if not real.is_relative_to(root):
        raise refused(f"it leads through a symlink to {real}, outside the workspace")
    return real


def _workspace() -> Path:
    ctx = current()
    if ctx.workspace is None:
        raise UsageError(f"no workspace configured for run {ctx.run}; pass workspace=... "
                         "when starting the run so the file tools know where they may act")
    return _root(ctx.workspace)


def _rel(root: Path, real: Path) -> str:
    return real.relative_to(root).as_posix()


def _target(root: Path, rel: str) -> Path:
    """A path a tool may change: confined, and not the workspace root itself."""
    real = _confine(root, rel)
    if real == root:
        raise UsageError(f"path {rel!r} refused: it is the workspace root {root} itself; "
                         "name a file or directory inside it")
    return real


def _parent_dir(root: Path, real: Path) -> None:
    parent = real.parent
    if not parent.is_dir():
        p = _rel(root, parent)
        if parent.exists():
            raise UsageError(f"cannot create {_rel(root, real)}: {p} is not a directory")
        raise UsageError(f"cannot create {_rel(root, real)}: directory {p} does not exist; "
                         f"call fs_mkdir with path={p!r} first")


# -- images, hashes and atomic writes --------------------------------------------------------


def _image(root: Path, real: Path, kind_if_absent: Kind = "file") -> dict[str, Any]:
    """The before-image entry of ``real`` (see the module docstring)."""
    rel = _rel(root, real)
    try:
        st = os.lstat(real)
    except (FileNotFoundError, NotADirectoryError):
        return {"path": rel, "exists": False, "kind": kind_if_absent, "content_b64": None,
                "mode": None}
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return {"path": rel, "exists": True, "kind": "dir", "content_b64": None, "mode": mode}
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{rel} is neither a regular file nor a directory; "
                         "the file tools only change files and directories")
    content = base64.b64encode(real.read_bytes()).decode("ascii")
    return {"path": rel, "exists": True, "kind": "file", "content_b64": content, "mode": mode}


def _hash(real: Path) -> str | None:
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISDIR(st.st_mode):
        return DIR_HASH
    with real.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _register(entries: list[dict[str, Any]]) -> None:
    register_undo(fs_restore, entries=entries)


def _record(root: Path, reals: list[Path]) -> None:
    record_after(files={_rel(root, r): _hash(r) for r in reals})


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_TMP = re.compile(r"\.tether-(\d+)-[0-9a-f]{16}\.tmp")
"""Our temporary files: ``.tether-PID-TOKEN.tmp`` (PID: the writing process)."""


def _sweep(directory: Path) -> None:
    """Remove temporary files a killed process left in ``directory`` (its PID is gone)."""
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        for e in it:
            m = _TMP.fullmatch(e.name)
            if m and not pid_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)


def _atomic_write(real: Path, data: bytes, mode: int | None) -> None:
    """Replace ``real`` by ``data`` in one step; ``mode`` None keeps the umask default.

    A process killed between writing its temporary file and renaming it leaves that
    file behind; the next write in the same folder removes it (and listings hide it).
    """
    _sweep(real.parent)
    tmp = real.with_name(f".tether-{os.getpid()}-{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(real.parent)


def _encode(content: str, rel: str) -> bytes:
    try:
        return content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"cannot write {rel}: content is not valid Unicode ({exc})") from None


def _existing_file(root: Path, rel: str, verb: str) -> tuple[Path, dict[str, Any]]:
    real = _target(root, rel)
    image = _image(root, real)
    if not image["exists"]:
        raise UsageError(f"cannot {verb} {image['path']}: no such file")
    if image["kind"] != "file":
        raise UsageError(f"cannot {verb} {image['path']}: it is a directory; "
                         f"fs_{verb} works on files only")
    return real, image


def _writable_file(root: Path, rel: str) -> tuple[Path, dict[str, Any]]:
    real = _target(root, rel)
    _parent_dir(root, real)
    image = _image(root, real)
    if image["kind"] == "dir":
        raise UsageError(f"cannot write {image['path']}: it is a directory")
    return real, image


# -- the tools ---------------------------------------------------------------------------------


@tool(effect="read", touches_files=True)
def fs_read(path: str) -> str:
    """Read a UTF-8 text file in the workspace. `path` is relative to the workspace."""
    root = _workspace()
    real = _confine(root, path)
    record_touch(_rel(root, real))  # its last writer in another run becomes a cause
    if not real.is_file():
        raise UsageError(f"cannot read {path!r}: no such file in the workspace; "
                         "call fs_list to see what is there")
    try:
        return real.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {path!r}: it is not UTF-8 text") from None


@tool(effect="read", touches_files=True)
def fs_list(path: str = ".") -> list[str]:
    """List a workspace directory: paths relative to the workspace, directories end in '/'."""
    root = _workspace()
    real = _confine(root, path)
    if not real.is_dir():
        raise UsageError(f"cannot list {path!r}: not a directory in the workspace")
    with os.scandir(real) as it:
        names = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it
                       if not _TMP.fullmatch(e.name))  # a write in progress, or a dead one's
    return [_rel(root, real / name) + ("/" if is_dir else "") for name, is_dir in names]


@tool(effect="reversible", touches_files=True)
def fs_write(path: str, content: str) -> str:
    """Create or overwrite a UTF-8 text file in the workspace.

    The parent directory must already exist (create it with fs_mkdir). An
    overwritten file keeps its permissions.
    """
    root = _workspace()
    real, before = _writable_file(root, path)
    data = _encode(content, before["path"])
    _register([before])
    _atomic_write(real, data, before["mode"])
    _record(root, [real])
    return f"wrote {len(data)} bytes to {before['path']}"


@tool(effect="reversible", touches_files=True)
def fs_append(path: str, content: str) -> str:
    """Append UTF-8 text to a file in the workspace, creating the file if it is missing."""
    root = _workspace()
    real, before = _writable_file(root, path)
    data = _encode(content, before["path"])
    old = base64.b64decode(before["content_b64"]) if before["exists"] else b""
    _register([before])
    _atomic_write(real, old + data, before["mode"])
    _record(root, [real])
    return f"appended {len(data)} bytes to {before['path']} (now {len(old) + len(data)} bytes)"


@tool(effect="reversible", touches_files=True)
def fs_delete(path: str) -> str:
    """Delete a file in the workspace (files only, not directories)."""
    root = _workspace()
    real, before = _existing_file(root, path, "delete")
    _register([before])
    real.unlink()
    _fsync_dir(real.parent)
    _record(root, [real])
    return f"deleted {before['path']}"


@tool(effect="reversible", touches_files=True)
def fs_move(src: str, dst: str) -> str:
    """Move or rename a file inside the workspace. Refuses to overwrite an existing `dst`."""
    root = _workspace()
    src_real, src_before = _existing_file(root, src, "move")
    dst_real = _target(root, dst)
    _parent_dir(root, dst_real)
    dst_before = _image(root, dst_real)
    if dst_before["exists"]:
        raise UsageError(f"cannot move {src_before['path']} to {dst_before['path']}: "
                         "the destination exists; delete it first or pick another name")
    _register([dst_before, src_before])
    os.rename(src_real, dst_real)
    _fsync_dir(dst_real.parent)
    _fsync_dir(src_real.parent)
    _record(root, [src_real, dst_real])
    return f"moved {src_before['path']} to {dst_before['path']}"


@tool(effect="reversible", touches_files=True)
def fs_mkdir(path: str) -> str:
    """Create a directory in the workspace, with any missing parents."""
    root = _workspace()
    real = _target(root, path)
    missing: list[Path] = []
    parts = real.relative_to(root).parts
    for depth in range(1, len(parts) + 1):
        part = root.joinpath(*parts[:depth])
        if not part.exists():
            missing.append(part)
        elif not part.is_dir():
            raise UsageError(f"cannot create directory {_rel(root, real)}: "
                             f"{_rel(root, part)} is a file")
    # Undo removes the deepest first, so each directory is empty when its turn comes.
    _register([_image(root, d, "dir") for d in reversed(missing)])
    for d in missing:
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        _fsync_dir(d.parent)
    _record(root, missing or [real])
    rel = _rel(root, real)
    if not missing:
        return f"directory {rel} already exists"
    parents = [_rel(root, d) for d in missing[:-1]]
    return f"created directory {rel}" + (f" (and {', '.join(parents)})" if parents else "")


@tool(effect="reversible", idempotent=True, touches_files=True)
def fs_restore(entries: list[dict[str, Any]]) -> str:
    """Put workspace paths back to recorded before-images: the undo of the fs_ tools.

    Each entry is {"path", "exists", "kind": "file"|"dir", "content_b64", "mode"}.
    Entries apply in order; running the same restore twice changes nothing more.
    A directory to remove that is no longer empty is kept (and reported).
    """
    root = _workspace()
    parsed = [_Entry.parse(e) for e in entries]
    reals = [_target(root, e.path) for e in parsed]
    before = [_image(root, r, e.kind) for e, r in zip(parsed, reals, strict=True)]
    _register(before[::-1])
    notes = [_restore_one(root, e, r) for e, r in zip(parsed, reals, strict=True)]
    _record(root, reals)
    return "; ".join(notes) if notes else "nothing to restore"


FILE_TOOLS: Final[list[Tool]] = [fs_read, fs_list, fs_write, fs_append, fs_delete, fs_move,
                                 fs_mkdir]
"""The built-in workspace file tools, to offer to an agent. (``fs_restore``, the undo they
register, is not among them: rollbacks call it; a model has no business writing
before-images.)"""


# -- restore -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    exists: bool
    kind: Kind
    content: bytes | None
    mode: int | None

    @staticmethod
    def parse(raw: dict[str, Any]) -> _Entry:
        path, exists, kind = raw.get("path"), raw.get("exists"), raw.get("kind")
        mode, b64 = raw.get("mode"), raw.get("content_b64")
        if not (isinstance(path, str) and isinstance(exists, bool) and kind in ("file", "dir")
                and (mode is None or isinstance(mode, int))
                and (b64 is None or isinstance(b64, str))):
            raise UsageError(f"fs_restore: malformed entry {raw!r}; expected path (str), "
                             "exists (bool), kind ('file' or 'dir'), content_b64, mode")
        if exists and kind == "file" and b64 is None:
            raise UsageError(f"fs_restore: entry for {path} has no content_b64")
        try:
            content = None if b64 is None else base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise UsageError(f"fs_restore: entry for {path} has invalid base64") from None
        return _Entry(path, exists, "file" if kind == "file" else "dir", content, mode)


def _conflict(rel: str, expected: str, found: str) -> UsageError:
    return UsageError(f"cannot restore {rel}: expected {expected} but found {found}; it was "
                      "changed by someone else since the effect, fix it by hand")


def _restore_one(root: Path, e: _Entry, real: Path) -> str:
    rel = _rel(root, real)
    now = _image(root, real, e.kind)
    if not e.exists:
        if not now["exists"]:
            return f"{rel} already absent"
        if now["kind"] != e.kind:
            raise _conflict(rel, f"a {e.kind} to remove", f"a {now['kind']}")
        if e.kind == "file":
            real.unlink()
            _fsync_dir(real.parent)
            return f"removed {rel}"
        try:
            real.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            return f"kept directory {rel} (not empty)"
        _fsync_dir(real.parent)
        return f"removed directory {rel}"
    if now["exists"] and now["kind"] != e.kind:
        raise _conflict(rel, f"a {e.kind}", f"a {now['kind']}")
    if e.kind == "dir":
        real.mkdir(parents=True, exist_ok=True)
        changed = not now["exists"]
    else:
        content = e.content or b""
        changed = now["content_b64"] != base64.b64encode(content).decode("ascii")
        if changed:
            real.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(real, content, e.mode)
    if e.mode is not None and stat.S_IMODE(os.stat(real).st_mode) != e.mode:
        os.chmod(real, e.mode)
        changed = True
    return f"restored {rel}" if changed else f"{rel} already as before"


UNDO_TOOLS: Final[list[Tool]] = [fs_restore]
"""The undos the built-in file tools register (what a rollback may call)."""
