"""Inclusion-proof bundles: one event, proven to be in a signed checkpoint, checkable
offline on a machine without the store (``tether audit prove`` / ``check-proof``).

A bundle is a JSON object (docs/audit.md)::

    {"format": "tether.inclusion-proof.v1",
     "event": {every field the event's hash covers, its hash, its payload or null},
     "leaf_index": i, "tree_size": n, "leaf_hash": hex, "proof": [hex, ...],
     "checkpoint": "<the C2SP signed note>"}

Checking it recomputes the event's hash from its fields (and the payload's
hash from the payload, if it was not erased), the leaf hash from that, the
root from the inclusion proof (RFC 9162 section 2.1.3.2), and checks the root,
the size and the signature of the checkpoint with the operator's public key.
What it proves: this event, with exactly these fields, was the ``i``-th event
the store committed when the holder of the key signed that checkpoint.
"""

from __future__ import annotations

from typing import Any

from tether.core.events import Event, event_hash, payload_digest
from tether.core.merkle import leaf_hash, verify_inclusion
from tether.core.note import Verifier, open_note
from tether.core.tlog import Checkpoint, parse_checkpoint
from tether.errors import NotFound, UsageError, VerificationFailed
from tether.sealing import leaf_tree
from tether.store.protocol import Store

FORMAT = "tether.inclusion-proof.v1"


def prove(store: Store, event_id: str) -> dict[str, Any]:
    """The inclusion-proof bundle of event ``event_id`` in the newest signed checkpoint.

    Raises:
        NotFound: no such event.
        UsageError: the event is not sealed yet.
        VerificationFailed: the store no longer matches that checkpoint.
    """
    with store.snapshot():
        e = store.event(event_id)
        if e is None:
            raise NotFound(f"no event {event_id!r} in {store.url}; `tether events RUN` lists "
                           "a run's events with their ids")
        full = store.events(e.run, after_seq=e.seq - 1, limit=1)  # with its prev link
        cps = store.signed_checkpoints()
        tree = leaf_tree(store)
    e = full[0] if full else e
    data = bytes.fromhex(e.hash)
    try:
        index = tree.levels[0].index(leaf_hash(data))
    except ValueError:
        raise VerificationFailed(f"event {event_id} is in no commit batch: the store is "
                                 "damaged; run `tether audit verify`") from None
    cp = cps[-1] if cps else None
    if cp is None or cp.size <= index:
        raise UsageError(f"event {event_id} (number {index + 1} in commit order) is not sealed "
                         "yet: seal the store first (`tether audit seal --key PREFIX.key`)")
    if tree.root(cp.size).hex() != cp.root:
        raise VerificationFailed(f"the store's events no longer hash to signed checkpoint "
                                 f"{cp.n}'s root; run `tether audit verify`")
    return {
        "format": FORMAT,
        "event": _event_json(e),
        "leaf_index": index,
        "tree_size": cp.size,
        "leaf_hash": leaf_hash(data).hex(),
        "proof": [h.hex() for h in tree.inclusion_proof(index, cp.size)],
        "checkpoint": cp.note,
    }


def _event_json(e: Event) -> dict[str, Any]:
    out = e.to_json()
    out["payload_hash"] = e.payload_hash
    out["prev"] = e.prev
    return out


def check_bundle(bundle: Any, key: Verifier) -> tuple[Event, Checkpoint, int]:
    """Check an inclusion-proof bundle offline; return the event, the checkpoint and its
    index in commit order.

    Raises:
        VerificationFailed: naming what does not hold.
    """
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise VerificationFailed(f"not an inclusion-proof bundle (format {FORMAT!r} expected)")
    try:
        e = _event(bundle["event"])
        index, size = bundle["leaf_index"], bundle["tree_size"]
        leaf = bytes.fromhex(bundle["leaf_hash"])
        proof = [bytes.fromhex(h) for h in bundle["proof"]]
        note = bundle["checkpoint"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise VerificationFailed(f"bundle: a field is missing or malformed ({exc!r})") from None
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (index, size)) or \
            not isinstance(note, str):
        raise VerificationFailed("bundle: leaf_index and tree_size are integers, checkpoint "
                                 "is the signed note's text")
    try:
        recomputed = event_hash(e)
    except TypeError as exc:
        raise VerificationFailed(f"bundle: the event cannot be hashed ({exc})") from None
    if recomputed != e.hash:
        raise VerificationFailed(f"event {e.id}: its fields do not hash to its hash (the event "
                                 "in the bundle was changed)")
    if e.payload is not None and payload_digest(e.payload) != e.payload_hash:
        raise VerificationFailed(f"event {e.id}: its payload does not match its payload hash "
                                 "(the payload in the bundle was changed)")
    if leaf_hash(bytes.fromhex(e.hash)) != leaf:
        raise VerificationFailed(f"event {e.id}: the leaf hash is not the leaf hash of the "
                                 "event's hash")
    cp = parse_checkpoint(open_note(note, key))
    if cp.size != size:
        raise VerificationFailed(f"the bundle says tree size {size}, its signed checkpoint "
                                 f"{cp.size}")
    verify_inclusion(index, cp.size, leaf, proof, cp.root)
    return e, cp, index


def _event(j: Any) -> Event:
    seal = j.get("seal") or {}
    if not isinstance(seal, dict):
        raise TypeError("seal is not an object")
    return Event(id=j["id"], run=j["run"], seq=j["seq"], epoch=j["epoch"], step=j["step"],
                 kind=j["kind"], time=j["time"], actor=j["actor"],
                 causes=tuple(j["causes"]), payload=j.get("payload"),
                 payload_hash=j["payload_hash"], prev=j["prev"], hash=j["hash"],
                 seal=tuple(sorted(seal.items())))
