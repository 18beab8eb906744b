"""Erasure on a real PostgreSQL store (``PGErase``): a real worker's run sends a message,
writes a blackboard value and calls a tool whose arguments and result hold secrets;
erasing those events replaces every copy with the marker, in one transaction with the
``payload.erased`` store event, and ``audit verify`` still passes and lists them.

Each test has its own schema of database ``test`` at 127.0.0.1:5432 (``TETHER_TEST_PG``
overrides), dropped afterwards; rows are read and changed with a plain psycopg connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests import pgkit
from tether import Done, StepAgent, Tether, Worker, start_run, tool, verify_store
from tether.core.settings import erased_marker
from tether.errors import StoreError, UsageError
from tether.store.postgres import PostgresStore
from tether.testing import allow_tools

SECRETS = {"message": "patient-0042-diagnosis", "board": "home-address-12-rue-x",
           "argument": "card-4111-2222-3333-4444", "result": "ssn-078-05-1120"}
COPIES = (("events", "payload"), ("messages", "body"), ("versions", "value"),
          ("effects", "arguments"), ("effects", "result"), ("approvals", "arguments"),
          ("outbox", "body"), ("checkpoints", "body"), ("chunks", "body"))


@tool(effect="irreversible")
def charge(card: str) -> dict[str, str]:
    """Charge a card; the processor echoes a customer record."""
    return {"status": "ok", "customer": SECRETS["result"]}


async def _step(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.send(ctx.run_id, {"note": SECRETS["message"]})
    await ctx.board.set("address", SECRETS["board"])
    out = await ctx.call(charge, card=SECRETS["argument"])
    state["charged"] = out["status"]  # only what is safe goes into the state
    return Done()


@dataclass(frozen=True)
class Night:
    """A done run's store (open) and a raw connection to its schema."""

    store: PostgresStore
    run: str
    raw: psycopg.Connection[tuple[Any, ...]]

    def event(self, kind: str) -> str:
        return next(e.id for e in self.store.events(self.run) if e.kind == kind)

    def digests(self) -> dict[str, Any]:
        """Every row of each table an erasure may rewrite, as one digest per table."""
        return {t: self.raw.execute(
            f"SELECT md5(string_agg(x::text, ',' ORDER BY x::text)) FROM {t} x"  # noqa: S608
            ).fetchone() for t in {t for t, _ in COPIES} | {"runs", "leases"}}

    def held(self) -> list[str]:
        """Which secrets any column that copies payloads still holds."""
        return [k for k, s in SECRETS.items() if any(self.raw.execute(
            f"SELECT 1 FROM {t} WHERE position(%s IN {c}) > 0 LIMIT 1",  # noqa: S608 -- ours
            (s.encode(),)).fetchone() for t, c in COPIES)]


@pytest.fixture
def night() -> Iterator[Night]:
    with pgkit.fresh_store_url("erase") as url, pgkit.connect(autocommit=True) as raw:
        raw.execute(f'SET search_path TO "{pgkit.schema_of(url)}"')
        store = PostgresStore(url)
        try:
            allow_tools(store)
            agent = StepAgent(_step, name="clerk", tools=[charge])
            run = start_run(store, agent, agent_ref="clerk", goal="g", swarm="crew")
            asyncio.run(Worker(store, agents={"clerk": agent}, poll_interval=0.01).run(
                until_idle=True))
            row = store.get_run(run)
            assert row is not None and row.status == "done"
            yield Night(store, run, raw)
        finally:
            store.close()


def test_erasure_removes_every_copy_and_verify_still_passes(night: Night) -> None:
    assert night.held() == list(SECRETS)
    ids = {k: night.event(k) for k in ("message.sent", "blackboard.write", "effect.intent",
                                       "effect.done")}
    ops = Tether(night.store, who="human:dpo")
    for kind, ev in ids.items():
        e = ops.erase(ev, reason=f"GDPR request 17 ({kind})")
        assert e.kind == "payload.erased" and e.payload["event"] == ev
    rep = verify_store(night.store)
    assert rep.ok, rep.problems
    assert [(x["event"], x["by"]) for x in rep.erasures] == [(i, "human:dpo")
                                                            for i in ids.values()]
    s = night.store
    assert all(s.event(i).payload is None for i in ids.values())  # type: ignore[union-attr]
    (msg,) = s.messages(sender=night.run)
    assert msg.body == erased_marker(ids["message.sent"])
    (ver,) = [v for v in s.versions(run=night.run) if v.ns.startswith("board:")]
    assert ver.value == erased_marker(ids["blackboard.write"])
    (eff,) = s.effects(run=night.run)
    assert eff.arguments == erased_marker(ids["effect.intent"])
    assert eff.result == erased_marker(ids["effect.done"])
    assert night.held() == []
    with pytest.raises(UsageError, match="erased already"):
        ops.erase(ids["message.sent"], reason="again")


def test_an_erasure_that_fails_at_its_last_write_changes_nothing(night: Night) -> None:
    """One transaction: the store event is its last write; refused there (a trigger an
    intruder or a DBA left), every row it had rewritten is as it was."""
    ev = night.event("effect.intent")
    before = night.digests()
    night.raw.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                      "$$ BEGIN RAISE EXCEPTION 'no more store events'; END $$")
    night.raw.execute("CREATE TRIGGER refuse BEFORE INSERT ON store_events "
                      "FOR EACH ROW EXECUTE FUNCTION refuse()")
    with pytest.raises(StoreError, match="no more store events"):
        night.store.erase(ev, reason="x", actor="human:dpo", time="2026-01-01T00:00:00.000000Z",
                          id="01JGZZZZZZZZZZZZZZZZZZZZZZ")
    assert night.digests() == before
    assert night.held() == list(SECRETS)
    night.raw.execute("DROP TRIGGER refuse ON store_events")
    assert verify_store(night.store).ok
