"""How the built-in file tools settle themselves after a crash.

Before the intent of ``fs_write``, ``fs_append``, ``fs_delete``, ``fs_move`` or
``fs_mkdir`` is journaled, :func:`prepare_files` works out the tool's plan
(:mod:`tether.tools.fsplan`) and journals, in the intent's ``prepared`` field::

    {"files": {"notes/a.txt": {"before": "9f86d0...", "after": "2e5272..."}},
     "images": [<before-image entries, in undo order>],
     "result": "appended 89 bytes to notes/a.txt (now 89 bytes)"}

``before`` / ``after`` are what :func:`~tether.tools.files.file_hash` says of the path
before and once done (SHA-256 hex, ``"dir"``, or null: absent). A before-image larger
than :data:`INLINE_LIMIT` bytes is not inlined: its entry has ``content_b64`` null and
``content_sha256``, the key of a content-addressed chunk committed with the intent (the
undo names the same chunk: each before-image is stored once).

When such an intent has no result after a crash, :func:`settle_files` hashes the paths
now and :func:`decide` (pure) says: every path as expected after -> ``done`` (the step
gets ``result``; the before-images become the undo); every path as before -> ``not_done``
(the tool runs again); anything else -> ``unknown``: someone else changed a file, or the
effect stopped halfway, and a human decides. An intent without ``prepared`` (journaled
by tether 0.1.0) is never settled this way: it stays in doubt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from tether.errors import UsageError
from tether.tools.base import IntentInput, Prepared, Settled, SettleInput, Settlement, Undo
from tether.tools.fsplan import (
    DIR_HASH,
    Plan,
    by_reference,
    image_hash,
    plan_append,
    plan_delete,
    plan_mkdir,
    plan_move,
    plan_write,
)
from tether.tools.fsplan import INLINE_LIMIT as INLINE_LIMIT  # re-exported for the settle tests
from tether.tools.fstree import Tree

_PLANS: Final[dict[str, Callable[[Tree, dict[str, Any]], Plan]]] = {
    "fs_write": lambda t, a: plan_write(t, a["path"], a["content"]),
    "fs_append": lambda t, a: plan_append(t, a["path"], a["content"]),
    "fs_delete": lambda t, a: plan_delete(t, a["path"]),
    "fs_move": lambda t, a: plan_move(t, a["src"], a["dst"]),
    "fs_mkdir": lambda t, a: plan_mkdir(t, a["path"]),
}


def prepare_files(inp: IntentInput) -> Prepared | None:
    """The plan of a file tool call, to journal in its intent (None: no workspace).

    Raises:
        UsageError: the call would be refused (the runtime then journals no plan, and the
            tool's own run reports the error).
    """
    if inp.workspace is None:
        return None
    with Tree(inp.workspace) as tree:
        plan = _PLANS[inp.tool](tree, inp.arguments)
    chunks: dict[str, bytes] = {}
    images = [by_reference(e, chunks) for e in plan.images]
    before = {e["path"]: image_hash(e) for e in plan.images}  # a folder that exists: as after
    files = {p: {"before": before.get(p, h), "after": h} for p, h in plan.after.items()}
    return Prepared({"files": files, "images": images, "result": plan.result}, chunks)


def decide(files: Mapping[str, Mapping[str, Any]],
           now: Mapping[str, str | None]) -> tuple[Settlement, str]:
    """Pure: whether an effect whose paths hash to ``now`` happened, given its plan."""
    if all(now.get(p) == f["after"] for p, f in files.items()):
        return "done", "every file is as the effect leaves it (its expected after-image)"
    if all(now.get(p) == f["before"] for p, f in files.items()):
        return "not_done", "every file is as before the effect (its before-image): it did not happen"
    odd = sorted(p for p, f in files.items() if now.get(p) not in (f["before"], f["after"]))
    if not odd:
        return "unknown", "some files are as before and others as after: it stopped halfway"
    return "unknown", (f"{', '.join(odd)} is neither as before the effect nor as it leaves it "
                       "(someone else changed it)")


def settle_files(inp: SettleInput) -> Settled:
    """Settle an effect of a built-in file tool from the workspace as it is now."""
    files = inp.prepared.get("files")
    if inp.workspace is None or not isinstance(files, dict) or not all(
            isinstance(f, dict) and "before" in f and "after" in f for f in files.values()):
        return Settled("unknown", "its intent has no usable before/after images")
    try:
        with Tree(inp.workspace) as tree:
            now = {p: tree.hash(tree.parts(p), p, DIR_HASH) for p in files}
    except UsageError as exc:
        return Settled("unknown", f"its files cannot be checked: {exc}")
    outcome, reason = decide(files, now)
    if outcome != "done":
        return Settled(outcome, reason)
    # The entries as journaled: a large before-image stays a reference to its chunk
    # (fs_restore reads it from the store), so it is stored once, not again in the undo.
    entries = list(inp.prepared.get("images") or [])
    return Settled("done", reason, result=inp.prepared.get("result"),
                   undo=Undo("fs_restore", {"entries": entries}), after={"files": now})
