"""Verifying the store chain: the operator settings' own hash chain (core/settings.py).

Walked by :func:`tether.audit.verify_store` beside the runs' chains. A store
made before the chain existed has none: an empty chain verifies. What is
detected: a changed field or payload (the hash no longer matches), a removed,
inserted or reordered event (numbering gaps, broken links), and, through the
batch chain that names every store event, a removed last event.
"""

from __future__ import annotations

import dataclasses

from tether.audit.report import VerifyReport
from tether.core.settings import STORE_GENESIS, store_event_hash
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
    return chain
