"""``tether audit query``: the journal's events filtered by what an operator asks.

"What did the agents decide at 3 a.m., and who allowed it?" is a time window
(on the runs' own clocks: the times the journal holds), narrowed by run, agent,
swarm, event kind, tool, effect class, actor or alert. The window and the kinds
are answered by the store's time index (:meth:`Store.events_in_window`); the
rest are matched here, on the events the window holds.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tether.core.events import KINDS, Event
from tether.core.monitors.watch import ALERT_KIND
from tether.errors import UsageError
from tether.runtime.operator import find_run
from tether.store.protocol import Store

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def zone(name: str | None) -> dt.tzinfo:
    """The time zone ``name`` (IANA, e.g. ``Europe/Paris``; ``UTC`` by default)."""
    if not name or name.upper() == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
        raise UsageError(f"--tz {name!r} is not a time zone; give an IANA name such as "
                         "Europe/Paris or America/New_York (default UTC)") from None


def parse_time(text: str, *, tz: dt.tzinfo, latest: float | None, option: str) -> float:
    """A bound of a window, in seconds since the epoch.

    ``text`` is an ISO-8601 date or date and time (without an offset it is in ``tz``),
    or a duration (``90m``, ``8h``, ``2d``) counted back from ``latest``: the newest
    event's time, since the journal's times are the runs' clocks, not the reader's.
    """
    m = _DURATION.match(text.strip())
    if m:
        if latest is None:
            raise UsageError(f"{option} {text}: the store has no events to count back from; "
                             "give a date and time instead")
        return latest - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r}: give an ISO-8601 date and time such as "
                         "2026-12-04T01:00 (in --tz, default UTC) or a duration back from "
                         "the newest event such as 8h") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when.timestamp()


def window(store: Store, since: str | None, until: str | None, tz: dt.tzinfo
           ) -> tuple[float | None, float | None]:
    """A window's bounds from the forms people give (``--since``/``--until``, or the web
    UI's fields); spans count back from the newest event (the runs' clocks).

    Raises:
        UsageError: a bound that is no time, or a window that ends before it starts.
    """
    newest = store.latest_event_time()
    lo = None if since is None else parse_time(since, tz=tz, latest=newest, option="--since")
    hi = None if until is None else parse_time(until, tz=tz, latest=newest, option="--until")
    if lo is not None and hi is not None and hi <= lo:
        raise UsageError("--until is not after --since; give a window that ends after it "
                         "starts")
    return lo, hi


@dataclass(frozen=True, slots=True)
class Query:
    """What to match; every field given narrows the answer."""

    since: float | None = None
    until: float | None = None
    runs: tuple[str, ...] = ()
    """Run references (id, name, prefix), as every command takes them."""
    agent: str | None = None
    swarm: str | None = None
    kinds: tuple[str, ...] = ()
    tool: str | None = None
    effect: str | None = None
    """Effect class: ``read``, ``reversible``, ``compensable``, ``irreversible``."""
    actor: str | None = None
    """Exact (``human:ada``), or a prefix ending in ``:`` (``human:``)."""
    alert: str | None = None
    """An alert's id (the alert, its evidence and what it caused), or a monitor's name
    (its alerts)."""
    limit: int | None = None


def run_query(store: Store, q: Query) -> list[Event]:
    """The events matching ``q``, in time order (then run and seq)."""
    bad = [k for k in q.kinds if k not in KINDS]
    if bad:
        raise UsageError(f"unknown event kind {bad[0]!r}; docs/events.md lists them all")
    runs = _runs(store, q)
    if runs is not None and not runs:
        return []
    kinds = list(q.kinds) or None
    focus: set[str] | None = None
    if q.alert is not None:
        focus = _alert_focus(store, q.alert)
        if focus is None:  # a monitor's name: its alerts
            kinds = [ALERT_KIND]
    # The limit is applied after matching: the cheap filters above go to the store.
    evs = store.events_in_window(q.since, q.until, runs=runs, kinds=kinds)
    out = []
    for e in evs:
        if not _matches(e, q, focus):
            continue
        out.append(e)
        if q.limit is not None and len(out) >= q.limit:
            break
    return out


def _runs(store: Store, q: Query) -> list[str] | None:
    if not (q.runs or q.agent or q.swarm):
        return None
    picked = None if not q.runs else {find_run(store, r).id for r in q.runs}
    if q.agent or q.swarm:
        rows = store.list_runs(swarm=q.swarm) if q.swarm else store.list_runs()
        chosen = {r.id for r in rows if q.agent is None or q.agent in (
            r.agent, r.agent.rsplit(":", 1)[-1], str((r.spec or {}).get("agent_name")))}
        picked = chosen if picked is None else picked & chosen
    return sorted(picked or ())


def _alert_focus(store: Store, ref: str) -> set[str] | None:
    e = store.event(ref) or store.event(ref.upper())
    if e is None:
        return None
    if e.kind != ALERT_KIND:
        raise UsageError(f"--alert {ref}: event {e.id} is a {e.kind!r} event, not an alert; "
                         "give an alert's id (`tether alerts`) or a monitor's name")
    caused = {x.id for x in store.events(e.run, after_seq=e.seq)
              if e.id in x.causes
              or (isinstance(x.payload, dict) and x.payload.get("alert") == e.id)}
    return {e.id, *e.causes, *caused}


def _matches(e: Event, q: Query, focus: set[str] | None) -> bool:
    p = e.payload if isinstance(e.payload, dict) else {}
    if focus is not None and e.id not in focus:
        return False
    if q.alert is not None and focus is None and p.get("monitor") != q.alert:
        return False
    if q.tool is not None and p.get("tool") != q.tool:
        return False
    if q.effect is not None and p.get("effect") != q.effect:
        return False
    if q.actor is not None:
        if q.actor.endswith(":"):
            if not e.actor.startswith(q.actor):
                return False
        elif e.actor != q.actor and e.actor.split(":", 1)[-1] != q.actor:
            return False
    return True


def describe(q: Query, tz: dt.tzinfo) -> str:
    """One line saying what was asked, with the window in ``tz`` (and whose clock)."""
    def fmt(t: float | None) -> str:
        return "…" if t is None else dt.datetime.fromtimestamp(t, tz).isoformat(
            timespec="minutes")
    parts = [f"{fmt(q.since)} to {fmt(q.until)} ({tz}, on the runs' own clocks)"]
    for name, value in (("run", ",".join(q.runs)), ("agent", q.agent), ("swarm", q.swarm),
                        ("kind", ",".join(q.kinds)), ("tool", q.tool), ("effect", q.effect),
                        ("actor", q.actor), ("alert", q.alert)):
        if value:
            parts.append(f"{name} {value}")
    return "; ".join(parts)

