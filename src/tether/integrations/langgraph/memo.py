"""LangChain objects decoded once and encoded again only when they changed.

Every tether step of a :class:`~tether.integrations.langgraph.TetherGraph` decodes
the graph's whole checkpoint and encodes it again (:mod:`.codec`), and LangChain's
``load`` and ``dumpd`` are slow (tens of microseconds a message). A conversation's
checkpoint holds its whole history, nearly all of it unchanged since the last step,
so without this the cost of a step grows with the history. A :class:`Memo` (one a
step) keeps it down without trusting anything it has not checked:

- decoding: the object LangChain's ``load`` made of a serialised form is kept,
  never handed out, in a bounded cache shared by the process (keyed by the form's
  JSON and checked equal to it); the step gets a deep copy of it, so nothing a
  node does to its objects can reach another step's;
- encoding: an object the step got from :meth:`Memo.revive` that is still strictly
  equal to the kept original (same types all the way down, so ``1`` is not ``True``
  or ``1.0``) is encoded as the form it came from; anything else, a changed or new
  object, goes through ``dumpd`` as before.

A cache miss costs what the codec cost without it: the cache makes steps cheaper,
never different.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel

CACHE_SIZE = 4096
"""Decoded objects kept by the process: a few long conversations' worth."""

_cache: OrderedDict[bytes, tuple[Any, Any]] = OrderedDict()  # key -> (form, original)
_lock = threading.Lock()


class Memo:
    """One step's decoded objects, remembered with the serialised forms they came from."""

    def __init__(self, revive: Callable[[Any], Any]) -> None:
        self._revive = revive
        self._given: dict[int, tuple[Any, Any, Any]] = {}  # id(object) -> (object, original, form)

    def revive(self, form: Any) -> Any:
        """The object ``form`` (a ``dumpd`` form) stands for: a copy of the kept original,
        or a new one from LangChain's ``load`` (then kept)."""
        key = _key(form)
        original = _cached(key, form)
        if original is None:
            original = self._revive(form)
            if key is not None:
                with _lock:
                    _cache[key] = (form, original)
                    while len(_cache) > CACHE_SIZE:
                        _cache.popitem(last=False)
        out = clone(original)
        self._given[id(out)] = (out, original, form)
        return out

    def dumped(self, value: Any) -> Any | None:
        """The form ``value`` came from if it is unchanged since :meth:`revive` gave it,
        else ``None`` (encode it afresh)."""
        got = self._given.get(id(value))
        if got is None or got[0] is not value or not unchanged(value, got[1]):
            return None
        return got[2]


def _key(form: Any) -> bytes | None:
    try:
        return orjson.dumps(form, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not plain JSON (an integer past 64 bits...): not cached
        return None


def _cached(key: bytes | None, form: Any) -> Any | None:
    if key is None:
        return None
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    # Equal keys are equal JSON but for what orjson writes as null (NaN, infinities): the
    # forms themselves must be equal too (a NaN is not, unless the very same object).
    if hit is None or hit[0] != form:
        return None
    return hit[1]


_ATOMS = (str, int, float, bool, bytes, type(None))


def clone(value: Any) -> Any:
    """A deep copy, as ``copy.deepcopy`` (pydantic's ``model_copy(deep=True)`` for a model)
    makes it, without its bookkeeping for the plain JSON values messages are made of."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is dict:
        return {k: clone(v) for k, v in value.items()}
    if kind is list:
        return [clone(v) for v in value]
    if kind is tuple:
        return tuple(clone(v) for v in value)
    if isinstance(value, BaseModel):  # what BaseModel.__deepcopy__ does, field by field
        cls: Any = kind
        out = cls.__new__(cls)
        object.__setattr__(out, "__dict__", clone(value.__dict__))
        object.__setattr__(out, "__pydantic_extra__", clone(value.__pydantic_extra__))
        object.__setattr__(out, "__pydantic_fields_set__", set(value.__pydantic_fields_set__))
        object.__setattr__(out, "__pydantic_private__", clone(value.__pydantic_private__))
        return out
    return copy.deepcopy(value)


def unchanged(a: Any, b: Any) -> bool:
    """``a`` (a copy :meth:`Memo.revive` gave) still equals ``b`` (its original) as
    :func:`same` says, in C for a model of plain JSON fields (a message): its fields equal,
    and written alike by orjson, which tells ``1``, ``1.0`` and ``True`` apart."""
    if type(a) is not type(b) or not isinstance(a, BaseModel):
        return same(a, b)
    try:
        return (a.__dict__ == b.__dict__
                and orjson.dumps(a.__dict__) == orjson.dumps(b.__dict__)
                and same(a.__pydantic_extra__, b.__pydantic_extra__)
                and same(a.__pydantic_private__, b.__pydantic_private__))
    except TypeError:  # a field orjson cannot write (a nested model...): walk it
        return same(a, b)


def same(a: Any, b: Any) -> bool:
    """Strict equality: equal values of the same types at every level (``1``, ``1.0`` and
    ``True`` differ); an object of another kind is never known to be unchanged."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        return len(a) == len(b) and all(type(k) is str and k in b and same(v, b[k])
                                        for k, v in a.items())
    if kind is list or kind is tuple:
        return len(a) == len(b) and all(map(same, a, b))
    if a is None or kind in (str, int, float, bool, bytes):
        return bool(a == b)  # NaN is never equal: a float NaN is encoded afresh
    if isinstance(a, BaseModel):
        return (same(a.__dict__, b.__dict__)
                and same(a.__pydantic_extra__, b.__pydantic_extra__)
                and same(a.__pydantic_private__, b.__pydantic_private__))
    return False
