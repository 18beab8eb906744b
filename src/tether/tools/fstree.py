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
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Final

from tether.errors import UsageError
from tether.procs import pid_alive

Parts = tuple[str, ...]

_DIR: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Only regular files and folders are opened at all (checked with fstatat first); the extra
# flags are a second line for the one swapped in between: O_NONBLOCK so a FIFO cannot hang
# the tool, O_NOCTTY so a terminal cannot become the process's controlling terminal.
_FILE: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

MAX_PATH: Final = 1024
"""Longest workspace path (bytes of UTF-8) the file tools accept."""
MAX_DEPTH: Final = 64
"""Most components a workspace path may have."""
MAX_NAME: Final = 255
"""Longest single name (bytes), as most file systems allow."""

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
        try:
            size = len(rel.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate: no file name the journal can hold
            raise self.refused(rel, "it is not valid Unicode (a lone surrogate); name "
                               "files in UTF-8") from None
        if size > MAX_PATH:
            raise self.refused(rel[:60] + "...", f"it is {size} bytes long; at most "
                               f"{MAX_PATH} are accepted")
        pure = PurePosixPath(rel)
        if len(pure.parts) > MAX_DEPTH:
            raise self.refused(rel[:60] + "...", f"it has {len(pure.parts)} components; at "
                               f"most {MAX_DEPTH} are accepted")
        long = next((p for p in pure.parts if len(p.encode("utf-8")) > MAX_NAME), None)
        if long is not None:
            raise self.refused(rel[:60] + "...", f"the name {long[:40]}... is longer than "
                               f"{MAX_NAME} bytes, which file systems refuse")
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

    def listing(self, key: Parts, rel: str) -> tuple[list[tuple[str, bool]], int]:
        """(name, is a folder) of the entries of folder ``key``, our temporary files left
        out, and how many names were left out for not being UTF-8 (no tool could name them,
        and the journal holds only Unicode)."""
        names, skipped = [], 0
        with os.scandir(self.dir(key, rel)) as it:
            for e in it:
                if TMP.fullmatch(e.name):  # a write in progress, or a dead one's
                    continue
                try:
                    e.name.encode("utf-8")
                except UnicodeEncodeError:
                    skipped += 1
                    continue
                names.append((e.name, e.is_dir(follow_symlinks=False)))
        return names, skipped

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
            # Looked at before it is opened: a device, FIFO or socket is never opened at all.
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise self._symlink(rel, key)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise _special(rel)
        try:
            return os.open(name, _FILE, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP or self._is_link(fd, name):
                raise self._symlink(rel, key) from None
            if exc.errno == errno.ENXIO:  # a socket swapped in since the look
                raise _special(rel) from None
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

    def read(self, key: Parts, rel: str, limit: int, why: str,
             span: tuple[int, int | None] = (0, None)) -> tuple[os.stat_result, bytes | None] | None:
        """(status, bytes) of ``key``: bytes None for a folder; None if absent.

        ``span`` (offset, length or None: to the end) picks a slice. A file of other hard
        links is refused (its bytes are those of a file that may lie outside the
        workspace), as is a slice longer than ``limit`` bytes (``why`` says how to do
        without); the size is checked on the open descriptor, before any byte is read.
        """
        got = self._open_checked(key, rel)
        if got is None:
            return None
        fd, st = got
        if fd is None:
            return st, None
        with os.fdopen(fd, "rb") as f:
            if st.st_nlink > 1:
                raise linked(rel, st.st_nlink)
            offset, length = span
            want = max(0, st.st_size - offset) if length is None else length
            if want > limit:
                raise UsageError(f"{rel} is {st.st_size} bytes; {why}")
            f.seek(offset)
            return st, f.read(want)

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
        raise _special(rel)

    def chmod(self, key: Parts, rel: str, mode: int) -> None:
        """Set the mode of ``key``; a file with other hard links is refused (the mode is
        the shared inode's: it would change a file outside the workspace too)."""
        fd = self.open(key, rel)
        if fd is None:
            raise UsageError(f"cannot change the mode of {rel}: it is gone")
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                raise linked(rel, st.st_nlink)
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


def _special(rel: str) -> UsageError:
    return UsageError(f"{rel} is neither a regular file nor a directory (a device, FIFO or "
                      "socket); the file tools only read and change files and directories")


def linked(rel: str, links: int) -> UsageError:
    """The error for a file with several hard links (one of them may be outside)."""
    return UsageError(f"{rel} has {links} hard links; the file tools do not read or change a "
                      "file that has other names, which may lie outside the workspace; copy "
                      "it to a new file instead")


def _sweep(fd: int) -> None:
    """Remove temporary files a killed process left in folder ``fd`` (its PID is gone)."""
    with contextlib.suppress(OSError), os.scandir(fd) as it:
        for e in it:
            m = TMP.fullmatch(e.name)
            if m and not pid_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(e.name, dir_fd=fd)
