"""An operator's process acting on runs: who it is, what its references name, and its
commands, applied here when no worker owns the run.

Every operation (approvals, control, rollback, cascade, fork, quarantine) and
every surface builds on these; the façade over them all is :mod:`tether.ops`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from tether.core.identity import NAME
from tether.core.text import refuse_nul
from tether.errors import NotFound, UsageError
from tether.history import epoch_of, lineage, state_at
from tether.identity.claims import as_allowed, os_user
from tether.runtime import commands as cmds
from tether.runtime.holding import must_get
from tether.store.protocol import Store
from tether.store.records import EffectRow, RunRow
from tether.system_clock import SYSTEM_CLOCK


def actor(as_name: str | None = None, store: Store | None = None) -> str:
    """Who is asking: the OS user, or ``--as NAME`` / ``$TETHER_USER`` where ``store``
    allows claimed names (``tether settings allow-as on``, a journaled setting).

    A claimed name is refused (UsageError, one line saying how to allow it) when the
    store does not allow it, when no store is given, and wherever ``TETHER_ALLOW_AS=0``.
    """
    if as_name is not None and not as_name.strip():
        raise UsageError("--as needs a name (e.g. --as alice); leave it out to act as the "
                         f"OS user {os_user()!r}")
    claimed = as_name or os.environ.get("TETHER_USER")
    if not claimed:
        return f"human:{os_user()}"
    flag = "--as" if as_name else "TETHER_USER"
    if not NAME.fullmatch(claimed):
        # The names a token may have, so an approver named in a policy means one person
        # whichever way they sign (a space or a colon would make another name of it).
        raise UsageError(f"{flag} {claimed[:40]!r} cannot be recorded as a name; use 1 to 64 "
                         "letters, digits, '.', '_', '@' or '-', starting with a letter or "
                         "digit, e.g. --as alice")
    if os.environ.get("TETHER_ALLOW_AS", "1") == "0":
        raise UsageError(f"acting as {claimed!r} ({flag}) is not allowed here "
                         f"(TETHER_ALLOW_AS=0); commands are recorded as the OS user "
                         f"{os_user()!r}")
    if store is None or not as_allowed(store):
        drop = "drop --as" if as_name else "unset TETHER_USER"
        raise UsageError(f"acting as {claimed!r} ({flag}) is refused: this store records the "
                         f"OS user {os_user()!r}; {drop}, or allow chosen names with "
                         "`tether settings allow-as on` (journaled)")
    return f"human:{claimed}"


def find_run(store: Store, ref: str) -> RunRow:
    """A run by id, name, unique id prefix, or the name of its agent when one run has it.

    Raises:
        NotFound: nothing matches.
        UsageError: several runs match; the message lists them (name, id, status).
    """
    row = store.get_run(ref)
    if row is not None:
        return row
    hits = store.find_runs(ref)
    if len(hits) == 1:
        return must_get(store, hits[0])
    if hits:
        rows = [r for r in (store.get_run(h) for h in hits) if r is not None]
        raise UsageError(f"{ref!r} matches {len(hits)} runs: {_candidates(rows)}; give more "
                         "of the id")
    by_agent = [r for r in store.list_runs() if ref in (r.agent, r.agent.rsplit(":", 1)[-1],
                                                        r.spec.get("agent_name"))]
    if len(by_agent) == 1:
        return by_agent[0]
    if by_agent:
        raise UsageError(f"{ref!r} is the agent of {len(by_agent)} runs: "
                         f"{_candidates(by_agent)}; name one by its name or id")
    raise NotFound(f"no run {ref!r} in {store.url}; list runs with `tether runs`")


def _candidates(rows: list[RunRow], most: int = 8) -> str:
    """Runs as ``name (id, status)``, newest first, the first ``most`` of them."""
    rows = sorted(rows, key=lambda r: (r.created, r.id), reverse=True)
    shown = ", ".join(f"{r.name} ({r.id}, {r.status})" for r in rows[:most])
    return shown + (f" and {len(rows) - most} more" if len(rows) > most else "")


def find_effect(store: Store, ref: str) -> EffectRow:
    """An effect by its id (the id of its ``effect.intent`` event)."""
    eff = store.effect(ref) or store.effect(ref.upper())
    if eff is None:
        raise NotFound(f"no effect {ref!r} in {store.url}; in-doubt effects are listed by "
                       "`tether show RUN`")
    return eff


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What became of an operator's command."""

    command: int
    run: str
    applied: bool
    by: str
    """``cli`` (applied here), ``worker`` (applied by the run's owner) or ``pending``."""
    outcome: str = ""
    """``applied``, or why the command changed nothing (``ignored: the run is done``)."""


def apply_pending_offline(store: Store, run: str) -> list[int] | None:
    """If no worker owns ``run``, take its lease and apply its pending commands here.

    Returns the ids of the commands applied, or None when a worker owns the run.
    """
    return cmds.apply_offline(store, run)


def send_command(store: Store, run_ref: str, kind: str, args: dict[str, Any] | None = None, *,
                 who: str | None = None, wait: float = 5.0) -> CommandResult:
    """Queue a command; apply it here if no worker owns the run, else wait for the owner."""
    if kind not in cmds.KINDS:
        raise UsageError(f"unknown command {kind!r}; one of {', '.join(cmds.KINDS)}")
    refuse_nul(f"cannot queue {kind}", "the actor", who)  # its reason names who asked
    row = find_run(store, run_ref)
    cid = store.add_command(row.id, kind, args or {}, who or actor(store=store),
                            SYSTEM_CLOCK.now())
    deadline = SYSTEM_CLOCK.monotonic() + wait
    while True:
        applied = apply_pending_offline(store, row.id)
        if applied is not None and cid in applied:
            return CommandResult(cid, row.id, True, "cli", _outcome(store, row.id, cid))
        if all(c.id != cid for c in store.pending_commands([row.id])):
            return CommandResult(cid, row.id, True, "worker", _outcome(store, row.id, cid))
        if SYSTEM_CLOCK.monotonic() >= deadline:
            return CommandResult(cid, row.id, False, "pending")
        time.sleep(0.02)


def _outcome(store: Store, run: str, cid: int) -> str:
    """What the run's owner journaled for command ``cid`` (searched from the end)."""
    head = must_get(store, run).seq
    after = max(0, head - 64)
    while True:
        for e in reversed(store.events(run, after_seq=after)):
            if e.kind == "command" and e.payload.get("command") == cid:
                return str(e.payload.get("outcome", "applied"))
        if after == 0:
            return "applied"
        after = max(0, after - 1024)


def run_state(store: Store, run_ref: str, step: int | None = None) -> tuple[RunRow, int, dict[str, Any]]:
    """The run's state after ``step`` (default: the last completed step), in its current
    history (a step before the current epoch began is read from the epoch it was in)."""
    row = find_run(store, run_ref)
    k = row.step if step is None else step
    if k < 0:
        raise UsageError(f"step must be >= 0, got {k}")
    if k > row.step:
        raise UsageError(f"run {row.id} has completed {row.step} steps; step {k} is in the future")
    state = state_at(store, row.id, row.epoch, k)
    if state is None:
        found = epoch_of(lineage(store, row), k)
        if found is not None:
            state = state_at(store, row.id, found, k)
    if state is None:
        raise NotFound(f"run {row.id} has no checkpoint at or before step {k} in its history "
                       f"(epoch {row.epoch})")
    return row, k, state
