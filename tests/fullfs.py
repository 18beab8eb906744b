"""A real full file system for storage-fault tests: a small tmpfs, mounted for one test.

Mounting needs root (CI runs as root). With ``CI=true`` a test that cannot mount
fails instead of skipping, so the fault tests never silently stop running there;
elsewhere it skips with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(folder: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``folder``; the reason it could not, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs as root)"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount command on this machine"
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return f"mount not permitted here: {out.stderr.strip() or out.returncode}"
    return None


@contextlib.contextmanager
def small_fs(folder: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (created), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    why = _mount(folder, size)
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, yet no tmpfs could be mounted for the full-disk test: {why}")
        pytest.skip(why)
    try:
        yield folder
    finally:
        # Lazily if a process still holds a file there: a test must never leave a mount behind.
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=True)


def fill(folder: Path) -> Path:
    """Write a filler file in ``folder`` until its file system has no space left."""
    filler = folder / "filler"
    block = b"\0" * 4096
    # Unbuffered, so closing the file has nothing left to write (and cannot fail).
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def free(filler: Path) -> None:
    """Give the space back."""
    filler.unlink()
