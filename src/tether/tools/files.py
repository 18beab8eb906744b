"""Built-in file tools: confined to the run's workspace, and reversible.

Every path is walked from the workspace root with directory descriptors and
``O_NOFOLLOW`` (:mod:`tether.tools.fstree`): a symlink anywhere below the root is
refused, and no name is resolved twice, so a process swapping a folder or a file for
a symlink between a check and a use cannot lead a tool outside.

Every mutating tool takes the same steps: work out its plan (:mod:`tether.tools.fsplan`:
the before-images of its paths and their expected after-hashes), register the undo (a
call of :data:`fs_restore` whose arguments carry the before-images), carry the plan out
and record the after-image hashes (:func:`file_hash`) so a rollback can tell whether
someone else changed a file since. The plan is also journaled in the effect's intent,
so after a crash the tool settles itself (:mod:`tether.tools.fssettle`).

Writes are atomic (temp file in the same directory, fsync, rename), so a crash leaves
the old bytes or the new ones, never half of them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import errno
import hashlib
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tether.errors import UsageError
from tether.tools.base import Tool, current, record_after, record_touch, register_undo, tool
from tether.tools.fsplan import (
    DIR_HASH,
    LIMITS,
    Kind,
    Limits,
    Plan,
    by_reference,
    image,
    plan_append,
    plan_delete,
    plan_mkdir,
    plan_move,
    plan_write,
    rel_of,
    target,
)
from tether.tools.fssettle import prepare_files, settle_files
from tether.tools.fstree import Parts, Tree

__all__ = ["DIR_HASH", "FILE_TOOLS", "UNDO_TOOLS", "Limits", "file_hash", "file_tools",
           "fs_append", "fs_delete", "fs_list", "fs_mkdir", "fs_move", "fs_read", "fs_restore",
           "fs_write", "resolve"]


def resolve(workspace: Path, rel: str) -> Path:
    """The path of ``rel`` inside ``workspace``, or an error.

    Refuses empty and absolute paths, any ``..`` component, and any path that meets a
    symlink below the workspace root (the file tools follow none). Only a check at one
    moment: the tools themselves never act on the path it returns.

    Raises:
        UsageError: naming the path and the workspace.
    """
    with Tree(workspace) as tree:
        key = tree.parts(rel)
        tree.stat(key, rel)
        return tree.root.joinpath(*key)


def file_hash(workspace: Path, rel: str) -> str | None:
    """SHA-256 hex of the file at ``rel``; :data:`DIR_HASH` for a directory; None if absent.

    Rollback compares it with the after-image an effect recorded to detect a
    file someone else changed since.
    """
    with Tree(workspace) as tree:
        return tree.hash(tree.parts(rel), rel, DIR_HASH)


@contextmanager
def _tree(*paths: str) -> Iterator[Tree]:
    """The workspace of the call in progress; an OS error becomes one naming ``paths``."""
    ctx = current()
    if ctx.workspace is None:
        raise UsageError(f"no workspace configured for run {ctx.run}; pass workspace=... "
                         "when starting the run so the file tools know where they may act")
    try:
        with Tree(ctx.workspace) as tree:
            yield tree
    except OSError as exc:
        # The model sees this: the path it gave and what the system said, not a traceback.
        code = errno.errorcode.get(exc.errno or 0)
        raise UsageError(f"cannot act on {' / '.join(repr(p) for p in paths)}: "
                         f"{exc.strerror or exc}{f' ({code})' if code else ''}") from None


def _record(tree: Tree, keys: list[Parts]) -> None:
    record_after(files={rel_of(k): tree.hash(k, rel_of(k), DIR_HASH) for k in keys})


def _undo(images: list[dict[str, Any]]) -> None:
    """Register the undo; a large before-image is named by digest, its bytes a chunk."""
    ctx = current()
    register_undo(fs_restore, entries=[by_reference(e, ctx.chunks) for e in images])


def _carry_out(tree: Tree, plan: Plan) -> str:
    _undo(plan.images)
    plan.act()
    # The after-image is what the plan wrote, not the files read back and hashed again
    # (a second pass over up to max_file bytes): the same hashes, unless someone else
    # changed a file in between, and then a rollback should see their change as one.
    record_after(files=dict(plan.after))
    return plan.result


# -- the tools ---------------------------------------------------------------------------------


@tool(effect="read", touches_files=True)
def fs_read(path: str, offset: int = 0, length: int | None = None) -> str:
    """Read a UTF-8 text file in the workspace. `path` is relative to the workspace.

    A file longer than the read limit (4 MiB unless configured) is read in slices:
    `offset` (bytes from the start) and `length` (bytes; default: to the end). A slice
    may cut a character in two: its bytes show as U+FFFD.
    """
    if offset < 0 or (length is not None and length < 0):
        raise UsageError(f"cannot read {path!r}: offset and length must be 0 or more")
    cap = LIMITS.get().max_read
    with _tree(path) as tree:
        key = tree.parts(path)
        record_touch(rel_of(key) or ".")  # its last writer in another run becomes a cause
        got = tree.read(key, path, cap, f"fs_read returns at most {cap} bytes at a time; read "
                        f"it in slices with offset and length (e.g. offset={offset}, "
                        f"length={cap})", (offset, length))
    if got is None or got[1] is None:
        raise UsageError(f"cannot read {path!r}: no such file in the workspace; "
                         "call fs_list to see what is there")
    if offset or length is not None:
        return got[1].decode("utf-8", errors="replace")
    try:
        return got[1].decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {path!r}: it is not UTF-8 text") from None


@tool(effect="read", touches_files=True)
def fs_list(path: str = ".") -> list[str]:
    """List a workspace directory: paths relative to the workspace, directories end in '/'.

    Names that are not valid UTF-8 cannot be named by any tool: they are left out, and a
    last line starting with '#' says how many.
    """
    with _tree(path) as tree:
        key = tree.parts(path)
        try:
            found, skipped = tree.listing(key, path)
        except (FileNotFoundError, NotADirectoryError):
            raise UsageError(f"cannot list {path!r}: not a directory in the workspace") from None
    out = [rel_of((*key, name)) + ("/" if is_dir else "") for name, is_dir in sorted(found)]
    if skipped:
        out.append(f"# {skipped} more entries not listed: their names are not valid UTF-8 "
                   "(rename them to use them with the file tools)")
    return out


@tool(effect="reversible", touches_files=True, prepare=prepare_files, settle=settle_files)
def fs_write(path: str, content: str) -> str:
    """Create or overwrite a UTF-8 text file in the workspace.

    The parent directory must already exist (create it with fs_mkdir). An
    overwritten file keeps its permissions.
    """
    with _tree(path) as tree:
        return _carry_out(tree, plan_write(tree, path, content))


@tool(effect="reversible", touches_files=True, prepare=prepare_files, settle=settle_files)
def fs_append(path: str, content: str) -> str:
    """Append UTF-8 text to a file in the workspace, creating the file if it is missing."""
    with _tree(path) as tree:
        return _carry_out(tree, plan_append(tree, path, content))


@tool(effect="reversible", touches_files=True, prepare=prepare_files, settle=settle_files)
def fs_delete(path: str) -> str:
    """Delete a file in the workspace (files only, not directories)."""
    with _tree(path) as tree:
        return _carry_out(tree, plan_delete(tree, path))


@tool(effect="reversible", touches_files=True, prepare=prepare_files, settle=settle_files)
def fs_move(src: str, dst: str) -> str:
    """Move or rename a file inside the workspace. Refuses to overwrite an existing `dst`."""
    with _tree(src, dst) as tree:
        return _carry_out(tree, plan_move(tree, src, dst))


@tool(effect="reversible", touches_files=True, prepare=prepare_files, settle=settle_files)
def fs_mkdir(path: str) -> str:
    """Create a directory in the workspace, with any missing parents."""
    with _tree(path) as tree:
        return _carry_out(tree, plan_mkdir(tree, path))


@tool(effect="reversible", idempotent=True, touches_files=True)
def fs_restore(entries: list[dict[str, Any]]) -> str:
    """Put workspace paths back to recorded before-images: the undo of the fs_ tools.

    Each entry is {"path", "exists", "kind": "file"|"dir", "content_b64", "mode"}; a large
    content is instead named by "content_sha256", a chunk of the store.
    Entries apply in order; running the same restore twice changes nothing more.
    A directory to remove that is no longer empty is kept (and reported).
    """
    with _tree(*(str(e.get("path")) for e in entries if isinstance(e, dict))) as tree:
        parsed = [_Entry.parse(e) for e in entries]
        keys = [target(tree, e.path) for e in parsed]
        before = [image(tree, k, e.kind) for e, k in zip(parsed, keys, strict=True)]
        _undo(before[::-1])
        notes = [_restore_one(tree, e, k) for e, k in zip(parsed, keys, strict=True)]
        _record(tree, keys)
    return "; ".join(notes) if notes else "nothing to restore"


_DEFAULT: Final = Limits()

FILE_TOOLS: Final[list[Tool]] = [fs_read, fs_list, fs_write, fs_append, fs_delete, fs_move,
                                 fs_mkdir]
"""The built-in workspace file tools, to offer to an agent, with the default
:class:`Limits` (:func:`file_tools` makes them with others). (``fs_restore``, the undo they
register, is not among them: rollbacks call it; a model has no business writing
before-images.)"""


def file_tools(*, max_read: int = _DEFAULT.max_read, max_file: int = _DEFAULT.max_file,
               ) -> list[Tool]:
    """The built-in file tools with other size limits (bytes; see :class:`Limits`).

    ``max_read``: most bytes one ``fs_read`` returns. ``max_file``: largest file the
    mutating tools change (its before-image is journaled whole). Give the same limits to
    every worker that drives the agent: its intents are prepared with them.

    Raises:
        UsageError: a limit that is not a positive number of bytes.
    """
    for name, value in (("max_read", max_read), ("max_file", max_file)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"file_tools: {name} must be a positive number of bytes, "
                             f"not {value!r}")
    limits = Limits(max_read, max_file)
    return [_limited(t, limits) for t in FILE_TOOLS]


def _limited(t: Tool, limits: Limits) -> Tool:
    def under(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            token = LIMITS.set(limits)
            try:
                return fn(*args, **kwargs)
            finally:
                LIMITS.reset(token)
        return call
    return dataclasses.replace(t, fn=under(t.fn),
                               prepare=None if t.prepare is None else under(t.prepare))


# -- restore -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    exists: bool
    kind: Kind
    content: bytes | None
    mode: int | None
    prefix: tuple[int, str] | None = None
    """(size, sha256) of the bytes to keep: the undo of an append cuts the file back."""

    @staticmethod
    def parse(raw: dict[str, Any]) -> _Entry:
        path, exists, kind = raw.get("path"), raw.get("exists"), raw.get("kind")
        mode, b64, ref = raw.get("mode"), raw.get("content_b64"), raw.get("content_sha256")
        prefix = raw.get("prefix")
        if not (isinstance(path, str) and isinstance(exists, bool) and kind in ("file", "dir")
                and (mode is None or isinstance(mode, int))
                and (b64 is None or isinstance(b64, str))
                and (ref is None or isinstance(ref, str)) and _is_prefix(prefix)):
            raise UsageError(f"fs_restore: malformed entry {raw!r}; expected path (str), "
                             "exists (bool), kind ('file' or 'dir'), content_b64, "
                             "content_sha256 or prefix ({size, sha256}), mode")
        if isinstance(prefix, dict):
            return _Entry(path, exists, "file", None, mode,
                          (prefix["size"], prefix["sha256"]))
        if exists and kind == "file" and b64 is None and ref is None:
            raise UsageError(f"fs_restore: entry for {path} has no content_b64")
        if ref is not None:
            return _Entry(path, exists, "file" if kind == "file" else "dir", _chunk(path, ref),
                          mode)
        try:
            content = None if b64 is None else base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise UsageError(f"fs_restore: entry for {path} has invalid base64") from None
        return _Entry(path, exists, "file" if kind == "file" else "dir", content, mode)


def _is_prefix(prefix: Any) -> bool:
    return prefix is None or (isinstance(prefix, dict) and isinstance(prefix.get("sha256"), str)
                              and isinstance(prefix.get("size"), int)
                              and not isinstance(prefix.get("size"), bool))


def _cut(rel: str, now: dict[str, Any], size: int, sha: str) -> bytes:
    """The first ``size`` bytes of the file as it is now, if they hash as before the append."""
    cur = base64.b64decode(now["content_b64"] or "") if now["exists"] else b""
    if len(cur) < size or hashlib.sha256(cur[:size]).hexdigest() != sha:
        raise _conflict(rel, f"a file whose first {size} bytes are as before the append",
                        "other bytes" if now["exists"] else "no file")
    return cur[:size]


def _chunk(path: str, ref: str) -> bytes:
    """The before-image an entry names by digest, read from the store and checked."""
    read = current().chunk
    if read is None:
        raise UsageError(f"fs_restore: the before-image of {path} is chunk {ref} of the "
                         "store; run the undo through tether (rollback), which reads it")
    data = read(ref)
    if hashlib.sha256(data).hexdigest() != ref:  # a changed chunk must not be written back
        raise UsageError(f"fs_restore: the before-image chunk {ref} of {path} does not hash "
                         "to its name; the store was changed")
    return data


def _conflict(rel: str, expected: str, found: str) -> UsageError:
    return UsageError(f"cannot restore {rel}: expected {expected} but found {found}; it was "
                      "changed by someone else since the effect, fix it by hand")


def _remove(tree: Tree, e: _Entry, key: Parts, now: dict[str, Any]) -> str:
    rel = rel_of(key)
    if not now["exists"]:
        return f"{rel} already absent"
    if now["kind"] != e.kind:
        raise _conflict(rel, f"a {e.kind} to remove", f"a {now['kind']}")
    if e.kind == "file":
        tree.unlink(key, rel)
        return f"removed {rel}"
    try:
        tree.rmdir(key, rel)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return f"kept directory {rel} (not empty)"
    return f"removed directory {rel}"


def _restore_one(tree: Tree, e: _Entry, key: Parts) -> str:
    rel = rel_of(key)
    now = image(tree, key, e.kind)
    if not e.exists:
        return _remove(tree, e, key, now)
    if now["exists"] and now["kind"] != e.kind:
        raise _conflict(rel, f"a {e.kind}", f"a {now['kind']}")
    if e.kind == "dir":
        tree.dir(key, rel, create=True)
        changed = not now["exists"]
    else:
        data = (e.content or b"") if e.prefix is None else _cut(rel, now, *e.prefix)
        changed = now["content_b64"] != base64.b64encode(data).decode("ascii")
        if changed:
            tree.dir(key[:-1], rel, create=True)
            tree.write(key, rel, data, e.mode)
    st = tree.stat(key, rel)
    if e.mode is not None and st is not None and stat.S_IMODE(st.st_mode) != e.mode:
        tree.chmod(key, rel, e.mode)
        changed = True
    return f"restored {rel}" if changed else f"{rel} already as before"


UNDO_TOOLS: Final[list[Tool]] = [fs_restore]
"""The undos the built-in file tools register (what a rollback may call)."""
