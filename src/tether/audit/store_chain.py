"""Verifying the store chain: the operator settings' own hash chain (core/settings.py).

Walked by :func:`tether.audit.verify_store` beside the runs' chains. A store
made before the chain existed has none: an empty chain verifies. What is
detected: a changed field or payload (the hash no longer matches), a removed,
inserted or reordered event (numbering gaps, broken links), and, through the
batch chain that names every store event, a removed last event. A swarm's row
(its shared budget and pause points, which workers read) must be what its
``swarm.*`` events set, and an API token's row what its ``token.*`` events set: a
row changed or made outside the chain is named.
"""

from __future__ import annotations

import dataclasses

from tether.audit.report import VerifyReport
from tether.core.identity import Role, fold_tokens
from tether.core.settings import (
    ERASED_KIND,
    STORE_GENESIS,
    SWARM_KINDS,
    StoreEvent,
    store_event_hash,
)
from tether.errors import StoreError
from tether.store.protocol import Store


def verify_store_chain(store: Store, rep: VerifyReport) -> dict[int, str]:
    """Check the store chain, add its problems to ``rep``; return n -> hash for the batches."""
    try:
        events = store.store_events()
    except StoreError as exc:
        rep.problems.append(f"store chain: cannot be read ({exc})")
        return {}
    chain: dict[int, str] = {}
    prev, expected, bad = STORE_GENESIS, 1, False
    for e in events:
        rep.events += 1
        chain[e.n] = e.hash
        if bad:
            continue
        where = f"store chain event #{e.n} ({e.kind} {e.scope}, id {e.id})"
        if e.n != expected:
            rep.problems.append(f"{where}: follows #{expected - 1} (store events were removed "
                                "or inserted)")
            bad = True
        elif e.prev != prev or store_event_hash(dataclasses.replace(e, prev=prev)) != e.hash:
            rep.problems.append(f"{where}: hash mismatch (a field or the payload of this "
                                "operator setting, or its predecessor, was changed)")
            bad = True
        prev, expected = e.hash, expected + 1
    if not bad:
        check_swarm_rows(store, events, rep)
        check_token_rows(store, events, rep)
        rep.erasures = [{"event": str(e.payload.get("event")), "run": str(e.payload.get("run")),
                         "kind": str(e.payload.get("kind")), "by": e.actor, "time": e.time,
                         "reason": str(e.payload.get("reason")),
                         "checkpoints": str(len(e.payload.get("checkpoints") or ()))}
                        for e in events if e.kind == ERASED_KIND and isinstance(e.payload, dict)]
        rep.rewritten = checkpoint_rewrites(events)
    return chain


def recorded_erasures(store: Store) -> set[str]:
    """The events the store chain records as erased (not verified here: `audit verify`
    does that), so a check of a few rows (a rollback's) accepts their markers."""
    return {str(e.payload.get("event")) for e in store.store_events()
            if e.kind == ERASED_KIND and isinstance(e.payload, dict)}


def checkpoint_rewrites(events: list[StoreEvent]
                        ) -> dict[tuple[str, int, int], list[tuple[str, str]]]:
    """Each checkpoint the erasures rewrote, with its hash before and after each."""
    out: dict[tuple[str, int, int], list[tuple[str, str]]] = {}
    for e in events:
        if e.kind != ERASED_KIND or not isinstance(e.payload, dict):
            continue
        for x in e.payload.get("checkpoints") or ():
            if isinstance(x, list) and len(x) == 5:
                out.setdefault((str(x[0]), int(x[1]), int(x[2])), []).append((str(x[3]),
                                                                             str(x[4])))
    return out


def check_swarm_rows(store: Store, events: list[StoreEvent], rep: VerifyReport) -> None:
    """Each swarm row must hold what the chain's last ``swarm.*`` event of each field set
    (an empty budget and no pause points where none did); one problem per swarm."""
    want: dict[str, dict[str, object]] = {}
    for e in events:
        field = SWARM_KINDS.get(e.kind)
        if field is not None and isinstance(e.payload, dict) and e.scope.startswith("swarm:"):
            want.setdefault(e.scope[6:], {"budget": {}, "pause_points": None})[field] = \
                e.payload.get(field)
    try:
        rows = store.swarm_rows()
    except StoreError as exc:
        rep.problems.append(f"swarm settings: cannot be read ({exc})")
        return
    empty: dict[str, object] = {"budget": {}, "pause_points": None}
    for name in sorted(set(want) - set(rows)):
        if want[name] != empty and want[name] != {"budget": {}, "pause_points": {}}:
            rep.problems.append(f"swarm {name}: its row is missing, the store chain sets "
                                f"{want[name]}; removed outside tether: set it again with "
                                f"`tether budget --swarm` / `tether swarm` (journaled)")
    for name, row in sorted(rows.items()):
        expect = want.get(name)
        if expect is None:
            if row["budget"] or row["pause_points"]:
                rep.problems.append(
                    f"swarm {name}: its settings (budget {row['budget']}, pause points "
                    f"{row['pause_points']}) were set outside the store chain (changed "
                    f"outside tether, or by a tether that did not journal them yet); set them again with "
                    f"`tether budget --swarm {name} --set ...` / `tether swarm {name} "
                    f"--pause-...` so they are journaled")
            continue
        diffs = [f"{k}: stored {row[k]}, the store chain says {v}"
                 for k, v in expect.items() if row[k] != v]
        if diffs:
            rep.problems.append(f"swarm {name}: its row disagrees with the store chain "
                                f"({'; '.join(diffs)}); changed outside tether: set it again "
                                f"with `tether budget --swarm` / `tether swarm` (journaled)")


_TOKEN_FIELDS = ("name", "role", "hash", "created", "created_by", "revoked", "revoked_by")


def check_token_rows(store: Store, events: list[StoreEvent], rep: VerifyReport) -> None:
    """Each API token's row must be what its ``token.*`` events made (name, role, hash,
    who and when created and revoked); a row no event made is a forgery: one problem per
    token, naming it."""
    want = fold_tokens(events)
    try:
        rows = {t.id: t for t in store.tokens()}
    except StoreError as exc:
        rep.problems.append(f"API tokens: cannot be read ({exc})")
        return
    fix = ("revoke it (`tether ui token revoke ID`) and create a new one: tokens change only "
           "through the store chain")
    for tid in sorted(set(want) - set(rows)):
        rep.problems.append(f"token {want[tid].name!r} ({tid}): its row is missing, the store "
                            f"chain created it; removed outside tether")
    for tid, row in sorted(rows.items()):
        expect = want.get(tid)
        if expect is None:
            rep.problems.append(f"token {row.name!r} ({tid}, role {row.role.label}): no store "
                                f"event created it (made outside tether); {fix}")
            continue
        diffs = [f"{k}: stored {_shown(getattr(row, k))}, the store chain says "
                 f"{_shown(getattr(expect, k))}" for k in _TOKEN_FIELDS
                 if getattr(row, k) != getattr(expect, k)]
        if diffs:
            rep.problems.append(f"token {expect.name!r} ({tid}): its row disagrees with the "
                                f"store chain ({'; '.join(diffs)}); changed outside tether: "
                                f"{fix}")


def _shown(value: object) -> str:
    return value.label if isinstance(value, Role) else str(value)
