"""Checkpoint codec: deltas between step boundaries, keyframes of shared chunks.

A run's state is a JSON object. At each step boundary the encoder compares the
new state with the previous checkpoint, key by key, on canonical bytes:

* an unchanged key costs nothing;
* a list whose old encoding is a prefix of its new one only grew at the end,
  so only the appended items are stored (``app``);
* anything else is stored whole (``set``), and removed keys are listed (``del``).

Every ``keyframe_every`` steps the encoder writes a keyframe instead. A keyframe
does not copy large values: lists are cut at fixed element boundaries into
chunks of ``chunk_items`` items, each stored once under its SHA-256 and shared
by every later keyframe that still holds it; large non-list values are chunks
too. An agent whose conversation grows by one message per step therefore costs
about one message of bytes per step, keyframes included.

Comparing canonical bytes (not objects) is what makes in-place mutation safe:
the encoder keeps the previous bytes, not references the agent could mutate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tether.core.canonical import dumps, loads
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
    if isinstance(value, dict) and isinstance(decoded, dict) and type(value) is dict:
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


@dataclass(slots=True)
class CheckpointEncoder:
    """Encodes successive states of one run. Keeps only canonical bytes of the last one."""

    keyframe_every: int = 128
    chunk_items: int = 64
    run: str = "?"
    _prev: dict[str, bytes] = field(default_factory=dict)
    _last_key_step: int | None = None
    # Chunk hashes of list keys at the last keyframe, valid while the key only grew.
    _list_chunks: dict[str, list[str]] = field(default_factory=dict)

    def prime(self, state: Mapping[str, Any], *, last_key_step: int | None = None) -> None:
        """Start from a restored state (after a crash or restore)."""
        self._prev = {k: encode_value(k, v, run=self.run) for k, v in state.items()}
        self._last_key_step = last_key_step
        self._list_chunks = {}

    def encode(self, step: int, state: Mapping[str, Any], *, force_key: bool = False) -> Checkpoint:
        """Encode ``state`` at the end of ``step``."""
        if not isinstance(state, Mapping):
            raise InvalidState(f"run {self.run} step {step}: state must be a dict, "
                               f"got {type(state).__name__}")
        new: dict[str, bytes] = {}
        sets: dict[str, Any] = {}
        apps: dict[str, Any] = {}
        grown: set[str] = set()
        for k, v in state.items():
            if not isinstance(k, str):
                raise InvalidState(f"run {self.run} step {step}: state key {k!r} is not a string")
            b = encode_value(k, v, run=self.run, step=step)
            new[k] = b
            old = self._prev.get(k)
            if old == b:
                grown.add(k)
                continue
            if old is not None and isinstance(v, list) and old[:1] == b"[":
                if old == b"[]":
                    check_roundtrip(k, orjson.loads(b), v, run=self.run, step=step)
                    apps[k] = v
                    grown.add(k)
                    continue
                n = len(old) - 1
                # A memoryview prefix compares in place; slicing would copy both sides.
                if len(b) > len(old) and b[n] == 0x2C and b.startswith(memoryview(old)[:n]):
                    items = orjson.loads(b"[" + b[n + 1:])
                    check_roundtrip(k, items, v[len(v) - len(items):], run=self.run, step=step)
                    apps[k] = items
                    grown.add(k)
                    continue
            check_roundtrip(k, orjson.loads(b), v, run=self.run, step=step)
            sets[k] = v
        dels = sorted(k for k in self._prev if k not in new)
        self._prev = new
        for k in list(self._list_chunks):
            if k not in grown:
                del self._list_chunks[k]
        if force_key or self._last_key_step is None or step - self._last_key_step >= self.keyframe_every:
            return self._keyframe(step, state)
        delta: dict[str, Any] = {}
        if sets:
            delta["set"] = sets
        if apps:
            delta["app"] = apps
        if dels:
            delta["del"] = dels
        return Checkpoint(step=step, kind="delta", body=dumps(delta))

    def _keyframe(self, step: int, state: Mapping[str, Any]) -> Checkpoint:
        refs: dict[str, Any] = {}
        chunks: list[tuple[str, bytes]] = []
        size = self.chunk_items
        for k, v in state.items():
            b = self._prev[k]
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
            elif len(b) > INLINE_LIMIT:
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
