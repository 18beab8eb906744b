"""What changed in a run's state between two steps, key by key (pure).

A run's state is JSON: objects are compared key by key, down to the leaves; a list or
a scalar that differs is one change (a list's items are not matched up: a state's lists
are usually logs or queues, whose change reads best whole).

Example:
    >>> [c.to_json() for c in diff({"n": 1, "seen": {"a": 1}}, {"n": 2, "seen": {}})]
    [{'path': 'n', 'op': 'changed', 'before': 1, 'after': 2}, \
{'path': 'seen.a', 'op': 'removed', 'before': 1, 'after': None}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Change", "diff"]


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two states."""

    path: str
    """Dotted key path from the state's top (a key holding a dot is quoted: ``a."b.c"``)."""
    op: Literal["added", "removed", "changed"]
    before: Any = None
    """The value at the earlier step (None when added)."""
    after: Any = None
    """The value at the later step (None when removed)."""

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "op": self.op, "before": self.before, "after": self.after}


def diff(before: Any, after: Any) -> list[Change]:
    """The changes from ``before`` to ``after``, in key order (sorted, so two reads of the
    same pair always list them alike)."""
    out: list[Change] = []
    _walk(before, after, (), out)
    return out


def _walk(a: Any, b: Any, path: tuple[str, ...], out: list[Change]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            p = (*path, _key(k))
            if k not in b:
                out.append(Change(".".join(p), "removed", before=a[k]))
            elif k not in a:
                out.append(Change(".".join(p), "added", after=b[k]))
            else:
                _walk(a[k], b[k], p, out)
        return
    # bool is an int in Python: True == 1, yet a flag turned into a count is a change.
    if a != b or type(a) is not type(b):
        out.append(Change(".".join(path) or "(state)", "changed", before=a, after=b))


def _key(k: Any) -> str:
    s = str(k)
    return f'"{s}"' if "." in s or not s else s
