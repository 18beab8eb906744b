"""Checkpoint codec: deltas between step boundaries, keyframes of shared chunks.

A run's state is a JSON object. At each step boundary the encoder stores what
changed since the previous checkpoint, key by key:

* an unchanged key costs nothing;
* a list that only grew at the end stores only the appended items (``app``);
* anything else is stored whole (``set``), and removed keys are listed (``del``).

Every ``keyframe_every`` steps the encoder writes a keyframe instead. A keyframe
does not copy large values: lists are cut at fixed element boundaries into
chunks of ``chunk_items`` items, each stored once under its SHA-256 and shared
by every later keyframe that still holds it; large non-list values are chunks
too. An agent whose conversation grows by one message per step therefore costs
about one message of bytes per step, keyframes included.

Finding what changed costs what changed, too. Lists and dicts changed in place
are *adopted*: replaced in the state by tracked copies (``core/tracked.py``) whose
mutations mark them and their ancestors, so an append is encoded without encoding
the older items and an edit anywhere inside a value has it stored whole. Lists are
also compared, pointer by pointer in C, with a snapshot: an edit that bypassed their
methods (``heapq``, ``list.append(x, v)``) is found and stored too. Other
values are compared on canonical bytes with the previous checkpoint (bytes, not
references the agent could mutate). At a step boundary the state becomes what
its checkpoint holds, as after a restore: a container the agent also keeps a
reference to elsewhere is a copy in the state from then on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tether.core.canonical import dumps, loads
from tether.core.tracked import Root, TrackedDict, TrackedList, Tracker, Untrackable, changed
from tether.errors import InvalidState, StoreCorrupt

State = dict[str, Any]

INLINE_LIMIT = 512
"""Non-list values encoded larger than this go to a chunk in keyframes."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One encoded checkpoint, ready to store."""

    step: int
    kind: str
    """``key`` (self-contained but for chunks) or ``delta`` (against the previous step)."""
    body: bytes
    chunks: tuple[tuple[str, bytes], ...] = ()
    """(hash, bytes) of chunks this keyframe introduces; stores keep each hash once."""


def checkpoint_info(ck: Checkpoint) -> dict[str, Any]:
    """What the journal records of a checkpoint: enough to check the stored body."""
    info: dict[str, Any] = {"kind": ck.kind, "hash": hashlib.sha256(ck.body).hexdigest()}
    if ck.kind == "key":  # keyframes are rare: say more about them
        info["bytes"] = len(ck.body)
        info["new_chunks"] = len(ck.chunks)
    return info


def _find_unserialisable(value: Any, path: str) -> str:
    """Return the path of the first value orjson cannot encode canonically."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path}[{k!r}] (keys must be strings)"
            p = _find_unserialisable(v, f"{path}.{k}")
            if p:
                return p
        return ""
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            p = _find_unserialisable(v, f"{path}[{i}]")
            if p:
                return p
        return ""
    if value is None or isinstance(value, str | bool | int | float):
        return ""
    return f"{path} (a {type(value).__name__})"


def encode_value(key: str, value: Any, *, run: str = "?", step: int = -1) -> bytes:
    """Canonical bytes of one state value, or InvalidState naming the key and step."""
    try:
        return dumps(value)
    except TypeError as exc:
        where = _find_unserialisable(value, key) or key
        raise InvalidState(_not_json(run, step, where, str(exc))) from exc


def _not_json(run: str, step: int, where: str, why: str) -> str:
    return (f"run {run} step {step}: state key {where} is not JSON-serialisable ({why}); keep "
            "only dicts, lists, strings, finite numbers, booleans and None in the state")


def check_roundtrip(key: str, decoded: Any, value: Any, *, run: str, step: int) -> None:
    """Refuse values the encoder turned into something else.

    orjson writes datetimes, UUIDs, enums and dataclasses as strings or dicts, and
    NaN as null; a restored state would then differ from the one the step saw.
    Called only on what changed, so an unchanged state costs nothing here.
    """
    if decoded == value:
        return
    where = _first_difference(decoded, value, key)
    if where:
        raise InvalidState(_not_json(run, step, where, "it would come back from a checkpoint "
                                     "as something else"))


def _first_difference(decoded: Any, value: Any, path: str) -> str:
    # Tuples come back as lists; that is the one conversion we accept.
    if isinstance(value, list | tuple) and isinstance(decoded, list):
        if len(value) != len(decoded):
            return path
        for i, (d, v) in enumerate(zip(decoded, value, strict=True)):
            p = _first_difference(d, v, f"{path}[{i}]")
            if p:
                return p
        return ""
    if isinstance(value, dict) and isinstance(decoded, dict) and type(value) in (dict, TrackedDict):
        if value.keys() != decoded.keys():
            return path
        for k, v in value.items():
            p = _first_difference(decoded[k], v, f"{path}.{k}")
            if p:
                return p
        return ""
    if type(value) in (str, int, float, bool, type(None)) and decoded == value \
            and type(decoded) is type(value):
        return ""
    return f"{path} (a {type(value).__name__})"


def _chunk_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_MISSING = object()


@dataclass(slots=True)
class _Delta:
    """What one step changed, gathered before anything of the encoder is updated."""

    sets: dict[str, Any] = field(default_factory=dict)
    apps: dict[str, Any] = field(default_factory=dict)
    grown: set[str] = field(default_factory=set)
    """Keys unchanged or only appended to: their keyframe chunk hashes stay valid."""
    prev: dict[str, bytes] = field(default_factory=dict)
    adopt: list[tuple[str, Any, int]] = field(default_factory=list)
    """(key, value, how): how = -2 adopt the whole value, -1 refresh a changed tracked
    value, n >= 0 adopt the items appended from n."""


@dataclass(slots=True)
class CheckpointEncoder:
    """Encodes successive states of one run, at the cost of what each step changed.

    Lists and dicts of the state are *adopted* (replaced in the state by tracked
    copies, ``core/tracked.py``) once the same object is seen at two successive
    step boundaries, or at once by :meth:`prime`; a tracked value is then encoded
    only where it was marked changed. Other values are compared on canonical bytes.
    """

    keyframe_every: int = 128
    chunk_items: int = 64
    run: str = "?"
    _prev: dict[str, bytes] = field(default_factory=dict)
    """Canonical bytes of a key's value at the last checkpoint, where known."""
    _last_key_step: int | None = None
    # Chunk hashes of list keys at the last keyframe, valid while the key only grew.
    _list_chunks: dict[str, list[str]] = field(default_factory=dict)
    _keys: set[str] = field(default_factory=set)
    _tracker: Tracker = field(default_factory=Tracker)
    _roots: dict[str, Root] = field(default_factory=dict)
    """Tracked values by key, as adopted, with the lists below them."""
    _seen: dict[str, Any] = field(default_factory=dict)
    """Untracked values by key, as of the last checkpoint (adopted if seen again)."""
    _refused: dict[str, Any] = field(default_factory=dict)
    """Values that hold a tuple, by key: encoded whole at every step."""

    def prime(self, state: Mapping[str, Any], *, last_key_step: int | None = None) -> None:
        """Start from a restored state (after a crash or restore); adopts its containers."""
        self._tracker = Tracker()  # containers of an earlier priming are foreign now
        self._prev, self._roots, self._seen, self._refused = {}, {}, {}, {}
        self._keys = set(state)
        for k, v in list(state.items()):
            if isinstance(v, list | dict) and isinstance(state, MutableMapping):
                try:
                    self._roots[k] = Root(v, self._tracker)
                    state[k] = self._roots[k].value
                    continue
                except Untrackable:
                    self._refused[k] = v
            self._prev[k] = encode_value(k, v, run=self.run)
            self._seen[k] = v
        self._tracker.gen += 1
        self._last_key_step = last_key_step
        self._list_chunks = {}

    def encode(self, step: int, state: Mapping[str, Any], *, force_key: bool = False) -> Checkpoint:
        """Encode ``state`` at the end of ``step``."""
        if not isinstance(state, Mapping):
            raise InvalidState(f"run {self.run} step {step}: state must be a dict, "
                               f"got {type(state).__name__}")
        d = _Delta()
        for k, v in state.items():
            if not isinstance(k, str):
                raise InvalidState(f"run {self.run} step {step}: state key {k!r} is not a string")
            if (root := self._roots.get(k)) is not None and root.value is v:
                root.check()  # edits that bypassed the marks (heapq) are marked from here on
                self._tracked(d, step, k, v)
            else:
                self._plain(d, step, k, v, adoptable=isinstance(state, MutableMapping))
        # Nothing above changed the encoder or the state: a refused state leaves both as
        # they were. From here on nothing can fail.
        dels = sorted(k for k in self._keys if k not in state)
        self._commit(d, state)
        for k in list(self._list_chunks):
            if k not in d.grown:
                del self._list_chunks[k]
        if force_key or self._last_key_step is None or step - self._last_key_step >= self.keyframe_every:
            return self._keyframe(step, state)
        delta: dict[str, Any] = {}
        if d.sets:
            delta["set"] = d.sets
        if d.apps:
            delta["app"] = d.apps
        if dels:
            delta["del"] = dels
        return Checkpoint(step=step, kind="delta", body=dumps(delta))

    def _tracked(self, d: _Delta, step: int, k: str, v: TrackedList | TrackedDict) -> None:
        """A value this encoder adopted: only what its marks say changed is encoded."""
        if not changed(v):
            d.grown.add(k)
            if k in self._prev:
                d.prev[k] = self._prev[k]
            return
        start = v._from if v._g == self._tracker.gen else -1
        if start >= 0 and isinstance(v, TrackedList):  # only appended to, old items untouched
            tail = v[start:]
            b = encode_value(k, tail, run=self.run, step=step)
            items = orjson.loads(b)
            check_roundtrip(k, items, tail, run=self.run, step=step)
            if items:
                d.apps[k] = items
            d.grown.add(k)
            d.adopt.append((k, v, start))
            return
        b = encode_value(k, v, run=self.run, step=step)
        check_roundtrip(k, orjson.loads(b), v, run=self.run, step=step)
        d.sets[k] = v
        d.prev[k] = b
        d.adopt.append((k, v, -1))

    def _plain(self, d: _Delta, step: int, k: str, v: Any, *, adoptable: bool) -> None:
        """A value not tracked (yet): compared with the last checkpoint on canonical bytes."""
        b = d.prev[k] = encode_value(k, v, run=self.run, step=step)
        if adoptable and isinstance(v, list | dict) and self._seen.get(k, _MISSING) is v \
                and self._refused.get(k) is not v:
            d.adopt.append((k, v, -2))  # the same object twice: it is changed in place
        old = self._prev.get(k)
        if old == b:
            d.grown.add(k)
            return
        if old is not None and isinstance(v, list) and old[:1] == b"[":
            if old == b"[]":
                check_roundtrip(k, orjson.loads(b), v, run=self.run, step=step)
                d.apps[k] = v
                d.grown.add(k)
                return
            n = len(old) - 1
            # A memoryview prefix compares in place; slicing would copy both sides.
            if len(b) > len(old) and b[n] == 0x2C and b.startswith(memoryview(old)[:n]):
                items = orjson.loads(b"[" + b[n + 1:])
                check_roundtrip(k, items, v[len(v) - len(items):], run=self.run, step=step)
                d.apps[k] = items
                d.grown.add(k)
                return
        check_roundtrip(k, orjson.loads(b), v, run=self.run, step=step)
        d.sets[k] = v

    def _commit(self, d: _Delta, state: Mapping[str, Any]) -> None:
        """Take the step: adopt what changed, forget what left, start a new generation."""
        tr = self._tracker
        self._prev, self._keys = d.prev, set(state)
        self._roots = {k: r for k, r in self._roots.items() if state.get(k, _MISSING) is r.value}
        for k, v, how in d.adopt:
            try:
                if how == -2:
                    self._roots[k] = Root(v, tr)
                    state[k] = self._roots[k].value  # type: ignore[index]
                else:
                    self._roots[k].take(how)
            except Untrackable:  # a tuple inside: this value is encoded whole from now on
                self._roots.pop(k, None)
                self._refused[k] = state[k]
                self._prev[k] = dumps(state[k])
        self._seen = {k: v for k, v in state.items() if k not in self._roots}
        tr.gen += 1

    def _keyframe(self, step: int, state: Mapping[str, Any]) -> Checkpoint:
        refs: dict[str, Any] = {}
        chunks: list[tuple[str, bytes]] = []
        size = self.chunk_items
        for k, v in state.items():
            if isinstance(v, list) and len(v) >= size:
                hashes = self._list_chunks.get(k, [])
                full = len(v) // size
                for i in range(len(hashes), full):
                    cb = dumps(v[i * size:(i + 1) * size])
                    h = _chunk_hash(cb)
                    chunks.append((h, cb))
                    hashes.append(h)
                self._list_chunks[k] = hashes
                refs[k] = {"l": hashes, "t": v[full * size:]}
                continue
            b = self._prev.get(k)
            if b is None:  # a tracked value appended to since its bytes were last known
                b = self._prev[k] = dumps(v)
            if len(b) > INLINE_LIMIT:
                h = _chunk_hash(b)
                chunks.append((h, b))
                refs[k] = {"c": h}
            else:
                refs[k] = {"v": v}
        self._last_key_step = step
        return Checkpoint(step=step, kind="key", body=dumps(refs), chunks=tuple(chunks))


def restore(key_body: bytes, chunk: Callable[[str], bytes], deltas: Iterable[bytes], *,
            prefetch: Callable[[list[str]], Mapping[str, bytes]] | None = None,
            where: str = "a checkpoint") -> State:
    """Rebuild a state from a keyframe, a chunk lookup and the deltas after it, in order.

    ``prefetch``, when given, fetches all the keyframe's chunks in one call.

    Raises:
        StoreCorrupt: a body or chunk is not what the encoder wrote (``where`` names the
            run and step for the message).
    """
    try:
        return _restore(key_body, chunk, deltas, prefetch)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # orjson's errors too
        raise StoreCorrupt(f"{where} is damaged and cannot be read ({type(exc).__name__}: "
                           f"{exc}); `tether audit verify` names what changed; restore the "
                           "store from a backup") from exc


def chain_label(run: str, epoch: int, step: int, key_step: int) -> str:
    """Which checkpoints restoring ``step`` reads, for a message about them."""
    deltas = f" and the deltas of steps {key_step + 1}-{step}" if step > key_step else ""
    return (f"the checkpoint of run {run} epoch {epoch} step {step} (keyframe of step "
            f"{key_step}{deltas})")


def _restore(key_body: bytes, chunk: Callable[[str], bytes], deltas: Iterable[bytes],
             prefetch: Callable[[list[str]], Mapping[str, bytes]] | None) -> State:
    state: State = {}
    refs = loads(key_body)
    if prefetch is not None:
        wanted = [h for ref in refs.values() for h in ([ref["c"]] if "c" in ref else
                                                        ref.get("l", []))]
        if wanted:
            got = prefetch(wanted)
            chunk = got.__getitem__
    for k, ref in refs.items():
        if "v" in ref:
            state[k] = ref["v"]
        elif "c" in ref:
            state[k] = loads(chunk(ref["c"]))
        else:
            items: list[Any] = []
            for h in ref["l"]:
                items.extend(loads(chunk(h)))
            items.extend(ref["t"])
            state[k] = items
    for body in deltas:
        apply_delta(state, loads(body))
    return state


def apply_delta(state: State, delta: Mapping[str, Any]) -> None:
    """Apply one decoded delta to ``state`` in place."""
    for k, v in delta.get("set", {}).items():
        state[k] = v
    for k, items in delta.get("app", {}).items():
        state.setdefault(k, []).extend(items)
    for k in delta.get("del", ()):
        state.pop(k, None)
