"""Tracked containers: lists and dicts that remember, cheaply, that they were changed.

The checkpoint encoder (``core/checkpoint.py``) *adopts* a run's state between
steps: it replaces each list and dict in it by a :class:`TrackedList` or
:class:`TrackedDict` with the same content. Every mutating method of these marks
the container changed in the current *generation* and marks its ancestors as
changed below, up to the top-level value; a list that was only appended to at its
own level remembers where the appended items start. The encoder then encodes
only what was marked and starts a new generation, so a step costs what it
changed, not the size of the state.

What the marks rely on, and what keeps them sound:

* each adopted container has exactly one parent (``_up``); a container put
  somewhere else in the state (a move, an alias, a plain value) marks the place
  it went into, and the encoder replaces it there by a tracked *copy* at the
  step boundary, as a restore from the checkpoint would;
* copies (``copy``, ``deepcopy``, ``pickle``, slices, ``list(x)``, ``dict(x)``)
  are plain lists and dicts, so nothing outside the state carries marks;
* mutation through the base class (``list.append(x, v)``) or through C code that
  writes list slots directly (``heapq``) bypasses the marks: the state's values
  are to be changed through their own methods, as any Python code does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, SupportsIndex


class Tracker:
    """The generation shared by every container one encoder adopted."""

    __slots__ = ("gen",)

    def __init__(self) -> None:
        self.gen = 1


class Untrackable(Exception):
    """A value holds a container the marks cannot see into (a tuple)."""


def _below(up: Any, gen: int) -> None:
    """Mark ``up`` and its ancestors as changed below (stop at one already marked)."""
    while isinstance(up, TrackedList | TrackedDict):
        if up._g == gen:
            up._from = -1
            return  # its ancestors were marked when it was
        up._g, up._from = gen, -1
        up = up._up


class _Marked:
    """The marks of a tracked container (the slots are declared by each container)."""

    if not TYPE_CHECKING:  # mypy would check the containers' slots against this empty one
        __slots__ = ()
    _tr: Tracker
    _up: Any
    """The parent container, or the tracker for a top-level value."""
    _g: int
    """The generation of the last mark."""
    _ok: int
    """The first generation after the encoder last took this container as it was: the
    container is changed when ``_g >= _ok``, even if it was changed while out of the
    state (a mark made then was never taken)."""
    _from: int
    """Valid when ``_g`` is the tracker's generation: where the items appended in it
    start (lists), or -1 when anything else changed (own slots or below)."""

    def _changed(self) -> None:
        gen = self._tr.gen
        if self._g != gen:
            self._g = gen
            _below(self._up, gen)
        self._from = -1


_SLOTS = ("_from", "_g", "_ok", "_tr", "_up")


class TrackedList(_Marked, list[Any]):
    """A list whose mutations mark it (see the module docstring)."""

    __slots__ = _SLOTS

    def _grew(self) -> None:
        gen = self._tr.gen
        if self._g != gen:
            self._g, self._from = gen, len(self)
            _below(self._up, gen)

    def append(self, value: Any) -> None:
        self._grew()
        list.append(self, value)

    def extend(self, values: Iterable[Any]) -> None:
        self._grew()
        list.extend(self, values)

    def __iadd__(self, values: Iterable[Any]) -> TrackedList:  # type: ignore[misc]
        self._grew()
        list.extend(self, values)
        return self

    def __imul__(self, n: SupportsIndex) -> TrackedList:
        self._changed()
        list.__imul__(self, n)
        return self

    def insert(self, index: SupportsIndex, value: Any) -> None:
        self._changed()
        list.insert(self, index, value)

    def pop(self, index: SupportsIndex = -1) -> Any:
        self._changed()
        return list.pop(self, index)

    def remove(self, value: Any) -> None:
        self._changed()
        list.remove(self, value)

    def clear(self) -> None:
        self._changed()
        list.clear(self)

    def sort(self, *args: Any, **kwargs: Any) -> None:
        self._changed()
        list.sort(self, *args, **kwargs)

    def reverse(self) -> None:
        self._changed()
        list.reverse(self)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._changed()
        list.__setitem__(self, index, value)

    def __delitem__(self, index: Any) -> None:
        self._changed()
        list.__delitem__(self, index)

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return (list, (list(self),))  # copies and pickles are plain lists


class TrackedDict(_Marked, dict[str, Any]):
    """A dict whose mutations mark it (see the module docstring)."""

    __slots__ = _SLOTS

    def __setitem__(self, key: str, value: Any) -> None:
        self._changed()
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._changed()
        dict.__delitem__(self, key)

    def pop(self, *args: Any) -> Any:
        self._changed()
        return dict.pop(self, *args)

    def popitem(self) -> tuple[str, Any]:
        self._changed()
        return dict.popitem(self)

    def clear(self) -> None:
        self._changed()
        dict.clear(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._changed()
        dict.update(self, *args, **kwargs)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self._changed()
        return dict.setdefault(self, key, default)

    def __ior__(self, other: Any) -> TrackedDict:  # type: ignore[override,misc]
        self._changed()
        dict.update(self, other)
        return self

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return (dict, (dict(self),))  # copies and pickles are plain dicts


def adopt(value: Any, tracker: Tracker, up: Any) -> Any:
    """A tracked copy of ``value`` (lists and dicts all the way down), child of ``up``.

    Raises:
        Untrackable: ``value`` holds a tuple, whose items the marks cannot see.
    """
    if isinstance(value, list):
        out: Any = TrackedList()
        out._tr, out._up, out._g, out._ok, out._from = tracker, up, 0, tracker.gen + 1, -1
        list.extend(out, [adopt(v, tracker, out) for v in value])
        return out
    if isinstance(value, dict):
        out = TrackedDict()
        out._tr, out._up, out._g, out._ok, out._from = tracker, up, 0, tracker.gen + 1, -1
        dict.update(out, {k: adopt(v, tracker, out) for k, v in value.items()})
        return out
    if isinstance(value, tuple):
        raise Untrackable
    return value


def refresh(node: TrackedList | TrackedDict, tracker: Tracker) -> None:
    """Make every container under a changed ``node`` tracked, with one parent each.

    Children that are tracked, unchanged and already ``node``'s own are kept as they are
    (their subtrees are known to be); changed ones are refreshed in turn; anything
    else (a plain value, a container moved or aliased from elsewhere) is replaced
    by a tracked copy, through the base class so that it marks nothing.

    Raises:
        Untrackable: a tuple was found (what was already replaced stays equal).
    """
    node._ok = tracker.gen + 1
    pairs: Iterable[tuple[Any, Any]] = (enumerate(node) if isinstance(node, TrackedList)
                                        else node.items())
    setter: Any = list.__setitem__ if isinstance(node, TrackedList) else dict.__setitem__
    for key, child in list(pairs):
        if isinstance(child, TrackedList | TrackedDict) and child._up is node \
                and child._tr is tracker:
            if changed(child):
                refresh(child, tracker)
            continue
        if isinstance(child, list | dict | tuple):
            setter(node, key, adopt(child, tracker, node))


def changed(node: TrackedList | TrackedDict) -> bool:
    """Whether ``node`` or anything under it changed since the encoder last took it."""
    return node._g >= node._ok


def is_root(value: Any, tracker: Tracker) -> bool:
    """Whether ``value`` is a top-level value this tracker adopted."""
    return isinstance(value, TrackedList | TrackedDict) and value._up is tracker
