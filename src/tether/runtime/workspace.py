"""Workspace files: their lock and their provenance (who last wrote each path).

Any run with a ``workspace`` uses this, in a swarm or not. File tools hold the
workspace's lock from before their intent until their result is committed, and
the event of a call that read or changed files cites the effect of each path's
last writer in another run. A file effect's new versions come from its
after-image (``record_after(files=...)``).
"""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.core.ids import ulid_time
from tether.errors import UsageError
from tether.store.records import EffectRow, RunRow, VersionRow

if TYPE_CHECKING:
    from tether.core.events import Event
    from tether.store.protocol import Store
    from tether.tools.base import ToolContext


def file_ns(workspace: str) -> str:
    """The namespace of a workspace's files (its real path)."""
    return f"file:{workspace}"


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = \
    weakref.WeakKeyDictionary()


def workspace_lock(workspace: str | None) -> asyncio.Lock | None:
    """The lock of a workspace on this event loop (None without a workspace).

    File tools hold it from before they act until their versions are committed, so
    the runs of a worker that share a workspace write and read its files one call at a
    time, in the order the versions say. (Other workers, in other processes or on other
    event loops, are not covered: their writes to a shared folder can interleave; see
    docs/design.md.)
    """
    if not workspace:
        return None
    per_loop = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    lock = per_loop.get(workspace)
    if lock is None:
        lock = per_loop[workspace] = asyncio.Lock()
    return lock


def _paths(tc: ToolContext) -> set[str]:
    files = tc.after.get("files") if isinstance(tc.after, dict) else None
    return set(tc.touched) | set(files or ())


async def file_causes(store: Store, row: RunRow,
                      tc: ToolContext) -> tuple[tuple[str, ...], list[str]]:
    """(the effects of other runs that last wrote the paths this call touched, the paths
    among them whose last version is suspect: its writer is quarantined). Called under the
    workspace lock: every earlier write to them is committed. The read runs off the event
    loop (other runs go on meanwhile)."""
    ws = row.spec.get("workspace")
    paths = _paths(tc)
    if not ws or not paths:
        return (), []  # the common case: no store read at all
    current = await asyncio.to_thread(store.current_versions, file_ns(ws), sorted(paths))
    others = {k: v for k, v in current.items() if v.run != row.id}
    return (tuple(sorted({v.event for v in others.values()})),
            sorted(k for k, v in others.items() if v.suspect))


def file_versions(row: RunRow, intent: Event, tc: ToolContext, now: float) -> list[VersionRow]:
    """New versions of the files an effect changed (from its after-image)."""
    ws = row.spec.get("workspace")
    files: Any = tc.after.get("files") if isinstance(tc.after, dict) else None
    if not ws or not isinstance(files, dict):
        return []
    suspect = bool(row.spec.get("quarantined"))
    return [VersionRow(ns=file_ns(ws), key=path, event=intent.id, run=intent.run,
                       epoch=intent.epoch, step=intent.step,
                       hash=h if isinstance(h, str) else None, suspect=suspect, created=now)
            for path, h in sorted(files.items())]


def unwritten_since(store: Store, effect_id: str, versions: list[VersionRow]) -> list[VersionRow]:
    """Of the versions of a late-recorded file effect (settled or resolved as done after a
    crash), those for paths nobody wrote since its intent: if another run did, that run
    is the file's last writer, and this late version must not take its place (the runs
    that touched the file in between could not cite this effect; nothing can fix that)."""
    if not versions:
        return []
    since = ulid_time(effect_id)
    current = store.current_versions(versions[0].ns, [v.key for v in versions])
    return [v for v in versions if not (v.key in current and current[v.key].created > since)]


def resolved_versions(store: Store, row: RunRow, eff: EffectRow,
                      now: float) -> list[VersionRow]:
    """Versions for a built-in file effect an operator resolved as done (it happened, but
    its ``effect.done`` with the after-image was never journaled): the named paths as they
    are now, so the next run to touch them cites this effect as their writer. Only for a
    path nobody wrote since the effect's intent (:func:`unwritten_since`).
    """
    from tether.tools.files import FILE_TOOLS, file_hash
    ws = row.spec.get("workspace")
    if not ws or eff.tool not in {t.name for t in FILE_TOOLS}:
        return []
    paths = [str(eff.arguments[k]) for k in ("path", "src", "dst")
             if isinstance(eff.arguments.get(k), str)]
    out = []
    for path in paths:
        try:
            h = file_hash(Path(ws), path)
        except UsageError:
            continue  # not a path the tools would act on: the effect failed on it
        out.append(VersionRow(ns=file_ns(ws), key=path, event=eff.id, run=eff.run,
                              epoch=eff.epoch, step=eff.step, hash=h,
                              suspect=bool(row.spec.get("quarantined")), created=now))
    return unwritten_since(store, eff.id, out)
