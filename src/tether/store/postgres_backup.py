"""A PostgreSQL store's backup: ``pg_dump --format=custom`` of its schema.

The password travels in ``PGPASSWORD``, never on the command line (a process list shows
that). The file is written aside and moved into place, so a failed dump leaves nothing at
the target, and an existing file is never replaced.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tether.errors import StorageError, UsageError
from tether.store.urls import libpq_target


def dump_schema(conninfo: str, schema: str, url: str, dest: Path) -> None:
    """Dump ``schema`` of the database at ``conninfo`` (shown as ``url``) to ``dest``."""
    if dest.exists():
        raise UsageError(f"backup target {dest} exists; choose a new path")
    if not dest.parent.is_dir():
        raise UsageError(f"backup target {dest}: the folder {dest.parent} does not exist; "
                         "create it, or choose a path in a folder that exists")
    tool = shutil.which("pg_dump")
    if tool is None:
        raise UsageError(f"backing up {url} needs pg_dump, the PostgreSQL client "
                         "tools (e.g. apt install postgresql-client); or run pg_dump "
                         f"--format=custom --schema={schema} yourself")
    uri, env = libpq_target(conninfo)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent or ".")
    os.close(fd)
    try:
        done = subprocess.run(  # noqa: S603  # argv of our own, no shell
            [tool, "--format=custom", f"--schema={schema}", "--no-owner",
             f"--file={tmp}", f"--dbname={uri}"],
            env={**os.environ, **env}, capture_output=True, text=True, check=False,
            timeout=3600)
        if done.returncode != 0:
            raise StorageError(f"pg_dump of {url} (schema {schema}) failed: "
                               f"{done.stderr.strip()[-500:]}; {dest} was not written")
        if dest.exists():  # made while we dumped: never replace it
            raise UsageError(f"backup target {dest} exists; choose a new path")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
