"""The workspace as a tree of directory file descriptors: confinement that holds under a race.

A path the file tools act on is never resolved as a whole, neither checked once and then
used again by name. It is split into components and walked from the workspace root, each
folder opened relative to its parent's descriptor with ``O_NOFOLLOW | O_DIRECTORY``; the
last component is then read, written, renamed, removed or created relative to its
parent's descriptor (``openat`` with ``O_NOFOLLOW``, ``renameat``, ``unlinkat``,
``mkdirat``). Another process that swaps a folder or a file for a symlink between a
check and a use therefore cannot redirect the use: a symlink met anywhere below the
root is refused, naming it.

Symlinks *inside* the workspace are refused too, even those that point inside: following
one safely would mean resolving it, which is the check-then-use this module removes. The
workspace root itself may be reached through symlinks: it is the operator's setting, and
it is opened once per tool call.

A folder descriptor stays open for the whole call (:class:`Tree` is a context manager), so
every step of one call acts on the same folders even if their names move meanwhile. What
the tools cannot prevent is someone *moving a folder* of the workspace elsewhere while a
call writes into it: that is a change by someone else, not a path the tools followed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Final

from tether.errors import UsageError
from tether.procs import pid_alive

Parts = tuple[str, ...]

_DIR: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO someone left in the workspace must not hang the tool.
_FILE: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

TMP: Final = re.compile(r"\.tether-(\d+)-[0-9a-f]{16}\.tmp")
"""Our temporary files: ``.tether-PID-TOKEN.tmp`` (PID: the writing process)."""


def workspace_root(workspace: Path) -> Path:
    """The real path of the workspace folder, or a UsageError saying how to fix it."""
    try:
        root = workspace.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"workspace {workspace} cannot be used ({exc}); "
                         "create the directory before starting the run") from None
    if not root.is_dir():
        raise UsageError(f"workspace {workspace} is not a directory; pass a directory")
    return root


class Tree:
    """One tool call's view of the workspace: folder descriptors, opened without following."""

    def __init__(self, workspace: Path) -> None:
        self.root = workspace_root(workspace)
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise UsageError(f"workspace {workspace} cannot be opened ({exc})") from None
        self._fds: dict[Parts, int] = {(): fd}

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close every folder descriptor the call opened."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    # -- names ---------------------------------------------------------------------------------
    def refused(self, rel: str, why: str) -> UsageError:
        """The error for a path the tools will not act on."""
        return UsageError(f"path {rel!r} refused: {why}; only relative paths inside the "
                          f"workspace {self.root} are allowed, reached without symlinks")

    def parts(self, rel: str) -> Parts:
        """The components of ``rel``; refuses empty, absolute and ``..`` paths."""
        if not rel:
            raise self.refused(rel, "it is empty")
        if "\0" in rel:
            raise self.refused(rel, "it contains a NUL character")
        pure = PurePosixPath(rel)
        if pure.is_absolute():
            raise self.refused(rel, "it is absolute")
        if ".." in pure.parts:
            raise self.refused(rel, "it contains a '..' component")
        return pure.parts

    def _symlink(self, rel: str, key: Parts) -> UsageError:
        return self.refused(rel, f"{'/'.join(key)} is a symbolic link (the file tools follow "
                                 "none, so no link can lead them outside)")

    def _is_link(self, parent: int, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            return False

    # -- folders -------------------------------------------------------------------------------
    def dir(self, key: Parts, rel: str, *, create: bool = False) -> int:
        """The descriptor of folder ``key``, walked from the root without following links.

        Raises:
            FileNotFoundError, NotADirectoryError: a component is missing or not a folder
                (``filename`` is its workspace path); with ``create`` missing folders are made.
            UsageError: a component is a symlink.
        """
        fd = self._fds[()]
        for k in range(1, len(key) + 1):
            got = self._fds.get(key[:k])
            if got is None:
                got = self._fds[key[:k]] = self._open_dir(fd, key[:k], rel, create)
            fd = got
        return fd

    def _open_dir(self, parent: int, key: Parts, rel: str, create: bool) -> int:
        name = key[-1]
        try:
            return os.open(name, _DIR, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise FileNotFoundError(errno.ENOENT, "no such folder", "/".join(key)) from None
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=parent)
                os.fsync(parent)
            return self._open_dir(parent, key, rel, False)
        except OSError as exc:
            # Linux says ENOTDIR, not ELOOP, for a symlink opened with O_DIRECTORY|O_NOFOLLOW.
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and self._is_link(parent, name):
                raise self._symlink(rel, key) from None
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", "/".join(key)) from None
            raise

    def parent(self, key: Parts, rel: str) -> tuple[int, str] | None:
        """(descriptor of the parent folder, last name) of ``key``; None if the parent is
        missing or not a folder. ``key`` must not be the root."""
        try:
            return self.dir(key[:-1], rel), key[-1]
        except (FileNotFoundError, NotADirectoryError):
            return None

    def mkdir(self, key: Parts, rel: str) -> None:
        """Create folder ``key`` (its parent must exist); no error if it exists already."""
        fd, name = self._must_parent(key, rel)
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o777, dir_fd=fd)
        os.fsync(fd)
        self.dir(key, rel)  # what now has the name must be a folder, not a swapped link

    def rmdir(self, key: Parts, rel: str) -> None:
        fd, name = self._must_parent(key, rel)
        os.rmdir(name, dir_fd=fd)
        for k in [k for k in self._fds if k[:len(key)] == key]:  # it and what was inside
            os.close(self._fds.pop(k))
        os.fsync(fd)

    def _must_parent(self, key: Parts, rel: str) -> tuple[int, str]:
        found = self.parent(key, rel)
        if found is None:
            raise UsageError(f"cannot change {rel}: its folder {'/'.join(key[:-1])} is gone")
        return found

    def listing(self, key: Parts, rel: str) -> Iterator[tuple[str, bool]]:
        """(name, is a folder) of the entries of folder ``key``, our temporary files left out."""
        with os.scandir(self.dir(key, rel)) as it:
            for e in it:
                if not TMP.fullmatch(e.name):  # a write in progress, or a dead one's
                    yield e.name, e.is_dir(follow_symlinks=False)

    # -- files ---------------------------------------------------------------------------------
    def open(self, key: Parts, rel: str) -> int | None:
        """A read descriptor of ``key`` (a file or a folder); None if it does not exist."""
        if not key:
            return os.dup(self._fds[()])
        found = self.parent(key, rel)
        if found is None:
            return None
        fd, name = found
        try:
            return os.open(name, _FILE, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP or self._is_link(fd, name):
                raise self._symlink(rel, key) from None
            if exc.errno == errno.ENXIO:  # a socket
                raise UsageError(f"{rel} is neither a regular file nor a directory; the file "
                                 "tools only change files and directories") from None
            raise

    def stat(self, key: Parts, rel: str) -> os.stat_result | None:
        """The status of ``key`` itself (None if absent); a symlink is refused."""
        fd = self.open(key, rel)
        if fd is None:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def read(self, key: Parts, rel: str) -> tuple[os.stat_result, bytes | None] | None:
        """(status, bytes) of ``key``: bytes None for a folder; None if absent."""
        got = self._open_checked(key, rel)
        if got is None:
            return None
        fd, st = got
        if fd is None:
            return st, None
        with os.fdopen(fd, "rb") as f:
            return st, f.read()

    def hash(self, key: Parts, rel: str, dir_hash: str) -> str | None:
        """SHA-256 hex of file ``key``; ``dir_hash`` for a folder; None if absent."""
        got = self._open_checked(key, rel)
        if got is None:
            return None
        fd, _ = got
        if fd is None:
            return dir_hash
        with os.fdopen(fd, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    def _open_checked(self, key: Parts, rel: str) -> tuple[int | None, os.stat_result] | None:
        """(read descriptor, status) of a regular file; (None, status) of a folder (its
        descriptor closed); None if absent. Anything else is refused."""
        fd = self.open(key, rel)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                return fd, st
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            return None, st
        raise UsageError(f"{rel} is neither a regular file nor a directory; the file "
                         "tools only change files and directories")

    def chmod(self, key: Parts, rel: str, mode: int) -> None:
        fd = self.open(key, rel)
        if fd is None:
            raise UsageError(f"cannot change the mode of {rel}: it is gone")
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def unlink(self, key: Parts, rel: str) -> None:
        fd, name = self._must_parent(key, rel)
        os.unlink(name, dir_fd=fd)
        os.fsync(fd)

    def rename(self, src: Parts, dst: Parts, src_rel: str, dst_rel: str) -> None:
        sfd, sname = self._must_parent(src, src_rel)
        dfd, dname = self._must_parent(dst, dst_rel)
        os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
        os.fsync(dfd)
        os.fsync(sfd)

    def write(self, key: Parts, rel: str, data: bytes, mode: int | None) -> None:
        """Replace file ``key`` by ``data`` in one step; ``mode`` None keeps the umask default.

        A temporary file in the same folder, fsynced, then renamed over the name, all
        relative to the folder's descriptor. A process killed between the two leaves the
        temporary file behind; the next write in that folder removes it (listings hide it).
        """
        fd, name = self._must_parent(key, rel)
        _sweep(fd)
        tmp = f".tether-{os.getpid()}-{secrets.token_hex(8)}.tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o666, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as f:
                f.write(data)
                f.flush()
                if mode is not None:
                    os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fd)
            raise
        os.fsync(fd)


def _sweep(fd: int) -> None:
    """Remove temporary files a killed process left in folder ``fd`` (its PID is gone)."""
    with contextlib.suppress(OSError), os.scandir(fd) as it:
        for e in it:
            m = TMP.fullmatch(e.name)
            if m and not pid_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(e.name, dir_fd=fd)
