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
* an edit of a list that bypasses its methods, by C code that writes list slots
  directly (``heapq``: ``heappush``, ``heapify``, ``heapreplace``, ...) or through
  the base class (``list.append(x, v)``), is found at the step boundary: each adopted
  list keeps a snapshot (a plain copy of its items as the encoder last took it), and
  :meth:`Root.check` compares the lists below a value not marked whole with their
  snapshots in one C loop over item pointers, ~1 ns an item and ~20 ns a list
  (3 us for a list of 3,000 messages; ~70 us for 3,000 small lists, about what
  orjson takes to encode them). A list that differs is marked, and its value stored
  whole. ``bisect.insort`` and ``random.shuffle`` call ``insert`` and ``__setitem__``
  on a list subclass, so they mark it as any method does.

What is not found, and why:

* a bypass that leaves a list equal (``==``) item by item to its snapshot: only a
  number swapped for an equal one of another type does (``1``, ``1.0``, ``True``;
  ``0.0``, ``-0.0``), as ``heapreplace(h, 1.0)`` on a heap whose top is ``1``; the
  restored value has the old type. (An equal container put in is found once it
  changes.) Comparing identities instead costs ~30 ns an item (87 us against 3 us
  for 3,000 items), as much as encoding the list;
* an edit of a dict through the base class (``dict.__setitem__(d, k, v)``,
  ``dict.update(d, x)``) or by C code that writes it directly (``exec`` with it as
  globals; no stdlib function given a dict does otherwise): a snapshot of every dict
  compared at each boundary would cost ~60 ns a dict, 190 us for the benchmark's
  3,000 messages, whose steps cost ~10 us to encode without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, SupportsIndex


class Tracker:
    """The generation shared by every container one encoder adopted."""

    __slots__ = ("fresh", "gen")

    def __init__(self) -> None:
        self.gen = 1
        self.fresh: list[TrackedList] = []
        """The lists :func:`adopt` made since the encoder last took them into a
        :class:`Lists`."""


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

    __slots__ = (*_SLOTS, "_snap")
    _snap: list[Any]
    """A plain copy of the items as the encoder last took them, to find edits that
    bypassed the methods. The same object for the list's lifetime (updated in place),
    so that a :class:`Lists` can hold it."""

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
        out._snap = list.copy(out)
        tracker.fresh.append(out)
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
    if isinstance(node, TrackedList):
        node._snap[:] = node


def changed(node: TrackedList | TrackedDict) -> bool:
    """Whether ``node`` or anything under it changed since the encoder last took it."""
    return node._g >= node._ok


def is_root(value: Any, tracker: Tracker) -> bool:
    """Whether ``value`` is a top-level value this tracker adopted."""
    return isinstance(value, TrackedList | TrackedDict) and value._up is tracker


class Root:
    """A top-level value the encoder adopted, and the tracked lists below it.

    Each list below (the value itself apart) sits in ``lists`` with its snapshot at the
    same place in ``snaps``: ``lists == snaps`` is one loop in C that compares item
    pointers and looks into an item only where they differ, so finding an edit that
    bypassed the marks costs ~1 ns an item and ~15-25 ns a list. Lists that left the
    value stay held until a rebuild, once they may be half of those held, or when one of
    them was edited after it left.
    """

    __slots__ = ("flagged", "lists", "live", "snaps", "value")

    def __init__(self, value: Any, tracker: Tracker) -> None:
        """Adopt ``value`` (see :func:`adopt`).

        Raises:
            Untrackable: ``value`` holds a tuple.
        """
        tracker.fresh = []
        self.value: TrackedList | TrackedDict = adopt(value, tracker, tracker)
        self.lists = [x for x in tracker.fresh if x is not self.value]
        self.snaps = [x._snap for x in self.lists]
        self.live = len(self.lists)
        self.flagged: list[TrackedList] = []
        """The lists :meth:`check` found edited behind their marks."""

    def check(self) -> None:
        """Mark what changed behind the marks (``heapq``, ``list.append(x, v)``).

        Called at a step boundary before the marks are read. Each list is compared with
        its snapshot; one that differs is marked changed, with the value, so the value is
        stored whole and the list refreshed. A value already marked changed other than by
        appends to itself is stored whole anyway and is not looked into: a list edited in
        it behind the marks keeps its old snapshot, so it is found at the next boundary.
        """
        root = self.value
        gen = root._tr.gen
        if changed(root) and (root._g != gen or root._from < 0):
            return
        below = self.lists == self.snaps
        same = below
        if isinstance(root, TrackedList):
            snap = root._snap
            if root._g != gen:
                same = below and root == snap
            elif len(snap) == root._from:  # appended to: are the items before as they were?
                snap += list.__getitem__(root, slice(root._from, None))  # no prefix copied
                same = below and root == snap
                del snap[root._from:]
            else:
                same = False
        if same:
            return
        self.flagged = [] if below else [
            x for x, s in zip(self.lists, self.snaps, strict=True) if x != s]
        for x in self.flagged:
            x._changed()
        root._changed()

    def take(self, start: int) -> None:
        """Take the changed value as stored: what came into it is adopted.

        ``start`` is -1 when the value is stored whole, or where the items appended to
        it start.

        Raises:
            Untrackable: a tuple came in (what was already adopted stays equal).
        """
        root, tr = self.value, self.value._tr
        tr.fresh = []
        if start < 0 or not isinstance(root, TrackedList):
            refresh(root, tr)
        else:
            new = [adopt(x, tr, root) for x in list.__getitem__(root, slice(start, None))]
            list.__setitem__(root, slice(start, None), new)
            root._snap[start:] = new
            root._ok = tr.gen + 1
        if not tr.fresh and not self.flagged:
            return  # the common step: nothing new below, nothing found behind the marks
        self.lists += tr.fresh
        self.snaps += [x._snap for x in tr.fresh]
        # A flagged list the refresh did not reach (its snapshot still differs) left the value.
        if len(self.lists) > 2 * self.live + 64 or any(x != x._snap for x in self.flagged):
            self._rebuild()
        self.flagged = []

    def _rebuild(self) -> None:
        """Hold exactly the lists in the value; orphan those that left.

        So that a list let go is looked into if it comes back, the container that took it
        out of the value (the one below its lowest ancestor still in it) stops being its
        old parent's child: it is adopted anew on return, like any container from elsewhere.
        """
        attached, found, todo = {id(self.value)}, [], [self.value]
        while todo:
            node = todo.pop()
            for c in (node if isinstance(node, TrackedList) else node.values()):
                if isinstance(c, TrackedList | TrackedDict) and c._up is node:
                    attached.add(id(c))
                    todo.append(c)
                    if isinstance(c, TrackedList):
                        found.append(c)
        for x in self.lists:
            out: Any = x
            while id(out) not in attached and isinstance(out._up, TrackedList | TrackedDict):
                if id(out._up) in attached:
                    out._up = None
                    break
                out = out._up
        self.lists, self.snaps, self.live = found, [x._snap for x in found], len(found)
