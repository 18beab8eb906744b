"""What a file tool will do, worked out before it does it: before-images, expected after-images.

Each mutating tool first makes a :class:`Plan` from the workspace as it is (under the
workspace lock, so no other tether call changes it meanwhile), then carries it out. The
same plan is what the runtime journals in the effect's intent (see
:mod:`tether.tools.fssettle`), so after a crash the tool can tell from the files whether
it happened: the expected after-hashes come from the very code that acts.

A before-image entry is a JSON object::

    {"path": "notes/a.txt", "exists": true, "kind": "file",
     "content_b64": "aGVsbG8=", "mode": 420}

``path`` is relative to the workspace, ``kind`` is ``"file"`` or ``"dir"``;
``content_b64`` and ``mode`` are None when the path did not exist (and
``content_b64`` is None for directories). The before-image of a large file an append
extends is ``"prefix": {"size", "sha256"}`` instead of its bytes (:func:`as_prefix`).
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from tether.errors import UsageError
from tether.tools.fstree import Parts, Tree

Kind = Literal["file", "dir"]

DIR_HASH: Final = "dir"
"""What :func:`~tether.tools.files.file_hash` returns for a directory (never a SHA-256 hex)."""


MiB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """How large a file the built-in file tools handle (see :func:`~tether.tools.files.file_tools`)."""

    max_read: int = 4 * MiB
    """Most bytes one ``fs_read`` returns (a longer file is read in slices)."""
    max_file: int = 32 * MiB
    """Largest file a mutating tool may change: its whole before-image is journaled, so a
    rollback can put it back byte for byte."""


LIMITS: Final[contextvars.ContextVar[Limits]] = contextvars.ContextVar(
    "tether_file_limits", default=Limits())  # noqa: B039 (frozen: immutable)
"""The limits in force for the file tool call in progress (set by the tools' wrappers)."""


def rel_of(key: Parts) -> str:
    """The workspace path of ``key`` as the journal names it."""
    return "/".join(key)


def image(tree: Tree, key: Parts, kind_if_absent: Kind = "file") -> dict[str, Any]:
    """The before-image entry of ``key`` (see the module docstring)."""
    rel = rel_of(key)
    cap = LIMITS.get().max_file
    got = tree.read(key, rel, cap, f"the file tools change files of at most {cap} bytes "
                    "(the whole file is kept to undo the change); change it some other way")
    if got is None:
        return {"path": rel, "exists": False, "kind": kind_if_absent, "content_b64": None,
                "mode": None}
    st, data = got
    mode = stat.S_IMODE(st.st_mode)
    if data is None:
        return {"path": rel, "exists": True, "kind": "dir", "content_b64": None, "mode": mode}
    return {"path": rel, "exists": True, "kind": "file",
            "content_b64": base64.b64encode(data).decode("ascii"), "mode": mode}


INLINE_LIMIT: Final = 16 * 1024
"""Largest before-image (bytes of file content) journaled inline; a larger one is stored
once as a content-addressed chunk (as checkpoints store theirs) and entries name it by
``content_sha256`` instead, so events stay small enough to list and hash quickly."""


def by_reference(entry: dict[str, Any], chunks: dict[str, bytes]) -> dict[str, Any]:
    """The entry as journaled: a large content moved to ``chunks`` and named by digest."""
    b64 = entry.get("content_b64")
    if not b64 or len(b64) * 3 // 4 <= INLINE_LIMIT:
        return entry
    data = base64.b64decode(b64)
    key = hashlib.sha256(data).hexdigest()
    chunks[key] = data
    return {**entry, "content_b64": None, "content_sha256": key}


def content(entry: dict[str, Any]) -> bytes:
    """The bytes of a file's before-image entry (b"" when it did not exist)."""
    b64 = entry.get("content_b64")
    return base64.b64decode(b64) if b64 else b""


def image_hash(entry: dict[str, Any]) -> str | None:
    """What :meth:`Tree.hash` would say of the path the entry describes."""
    if not entry["exists"]:
        return None
    if entry["kind"] == "dir":
        return DIR_HASH
    prefix = entry.get("prefix")
    if isinstance(prefix, dict):
        return str(prefix["sha256"])
    return hashlib.sha256(content(entry)).hexdigest()


def as_prefix(entry: dict[str, Any], data: bytes) -> dict[str, Any]:
    """The before-image of a file an append extends, as its length and hash.

    An append only adds bytes at the end: its undo cuts them off again, checking the
    bytes it keeps hash as before. So a large file is not journaled again by each
    append (a small one stays inline: simplest to read).
    """
    if len(data) <= INLINE_LIMIT:
        return entry
    return {**entry, "content_b64": None,
            "prefix": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}}


@dataclass(frozen=True, slots=True)
class Plan:
    """One call of a mutating file tool, worked out and not yet carried out."""

    images: list[dict[str, Any]]
    """Before-images, in the order the undo (``fs_restore``) applies them."""
    after: dict[str, str | None]
    """Expected hash of each path once done (:data:`DIR_HASH` for a folder, None: absent):
    journaled in the intent, and recorded as the effect's after-image once done."""
    result: str
    """What the tool returns once done."""
    act: Callable[[], None]
    """Carries the plan out."""


def target(tree: Tree, rel: str) -> Parts:
    """A path a tool may change: confined, and not the workspace root itself."""
    key = tree.parts(rel)
    if not key:
        raise UsageError(f"path {rel!r} refused: it is the workspace root {tree.root} itself; "
                         "name a file or directory inside it")
    return key


def _parent_dir(tree: Tree, key: Parts) -> None:
    rel, p = rel_of(key), rel_of(key[:-1])
    try:
        tree.dir(key[:-1], rel)
    except FileNotFoundError:
        raise UsageError(f"cannot create {rel}: directory {p} does not exist; "
                         f"call fs_mkdir with path={p!r} first") from None
    except NotADirectoryError:
        raise UsageError(f"cannot create {rel}: {p} is not a directory") from None


def existing_file(tree: Tree, rel: str, verb: str) -> tuple[Parts, dict[str, Any]]:
    key = target(tree, rel)
    before = image(tree, key)
    if not before["exists"]:
        raise UsageError(f"cannot {verb} {before['path']}: no such file")
    if before["kind"] != "file":
        raise UsageError(f"cannot {verb} {before['path']}: it is a directory; "
                         f"fs_{verb} works on files only")
    return key, before


def _writable_file(tree: Tree, rel: str) -> tuple[Parts, dict[str, Any]]:
    key = target(tree, rel)
    _parent_dir(tree, key)
    before = image(tree, key)
    if before["kind"] == "dir":
        raise UsageError(f"cannot write {before['path']}: it is a directory")
    return key, before


def _encode(text: str, rel: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"cannot write {rel}: content is not valid Unicode ({exc})") from None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_write(tree: Tree, path: str, text: str) -> Plan:
    key, before = _writable_file(tree, path)
    rel, data = before["path"], _encode(text, before["path"])
    return Plan([before], {rel: _sha(data)}, f"wrote {len(data)} bytes to {rel}",
                lambda: tree.write(key, rel, data, before["mode"]))


def plan_append(tree: Tree, path: str, text: str) -> Plan:
    key, before = _writable_file(tree, path)
    rel, data = before["path"], _encode(text, before["path"])
    old = content(before)
    new = old + data
    return Plan([as_prefix(before, old)], {rel: _sha(new)},
                f"appended {len(data)} bytes to {rel} (now {len(new)} bytes)",
                lambda: tree.write(key, rel, new, before["mode"]))


def plan_delete(tree: Tree, path: str) -> Plan:
    key, before = existing_file(tree, path, "delete")
    rel = before["path"]
    return Plan([before], {rel: None}, f"deleted {rel}", lambda: tree.unlink(key, rel))


def plan_move(tree: Tree, src: str, dst: str) -> Plan:
    skey, src_before = existing_file(tree, src, "move")
    dkey = target(tree, dst)
    _parent_dir(tree, dkey)
    dst_before = image(tree, dkey)
    s, d = src_before["path"], dst_before["path"]
    if dst_before["exists"]:
        raise UsageError(f"cannot move {s} to {d}: the destination exists; delete it first "
                         "or pick another name")
    return Plan([dst_before, src_before], {s: None, d: image_hash(src_before)},
                f"moved {s} to {d}", lambda: tree.rename(skey, dkey, s, d))


def plan_mkdir(tree: Tree, path: str) -> Plan:
    key = target(tree, path)
    rel = rel_of(key)
    missing: list[Parts] = []
    for depth in range(1, len(key) + 1):
        part = key[:depth]
        st = tree.stat(part, rel)
        if st is None:
            missing.append(part)
        elif not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"cannot create directory {rel}: {rel_of(part)} is a file")

    def act() -> None:
        for d in missing:
            tree.mkdir(d, rel)

    if not missing:
        return Plan([], {rel: DIR_HASH}, f"directory {rel} already exists", act)
    parents = [rel_of(d) for d in missing[:-1]]
    # Undo removes the deepest first, so each directory is empty when its turn comes.
    return Plan([image(tree, d, "dir") for d in reversed(missing)],
                {rel_of(d): DIR_HASH for d in missing},
                f"created directory {rel}" + (f" (and {', '.join(parents)})" if parents else ""),
                act)
