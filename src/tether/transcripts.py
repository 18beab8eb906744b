"""Transcripts recorded elsewhere: read from a file, imported as read-only runs, or
analyzed by the monitors without a store.

A JSONL file is read one line (one record) at a time; a JSON file is parsed
whole (a JSON array cannot be split before it is parsed). An import journals
every run of the file in one store transaction: a record that cannot be read
raises :class:`~tether.errors.InvalidTranscript` (naming the record and field)
before anything is written, so nothing half-imported is left behind. The
events of every run are therefore held in memory until that commit; ``tether
analyze FILE`` holds one run at a time.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.core.canonical import loads
from tether.core.checkpoint import CheckpointEncoder, checkpoint_info
from tether.core.events import Chain, Event
from tether.core.ids import UlidSource, iso_stamper
from tether.core.monitors import MonitorSettings
from tether.core.monitors.offline import Flag, Subject, analyze, unanswered, watch_for
from tether.core.monitors.watch import Watch
from tether.core.transcripts import READ_ONLY_KEY, Transcript, records_of, transcripts
from tether.core.transcripts.journal import Planned, agent_ref, plan
from tether.errors import InvalidTranscript, UsageError
from tether.history import state_at
from tether.runtime.journal import RunJournal
from tether.store.protocol import Store
from tether.store.records import RunRow, Write


def read_records(path: Path) -> Iterator[Any]:
    """The file's records as parsed JSON values: one per line (JSONL), or the records of
    one JSON document (see :func:`tether.core.transcripts.records_of`)."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read transcript file {path}: {exc.strerror or exc}") from None
    with f:
        first = f.readline()
        while first and not first.strip():
            first = f.readline()
        if not _is_json(first):  # one JSON document over several lines
            f.seek(0)
            yield from records_of(_loads(f.read(), None, path))
        else:
            yield from _jsonl(first, f, path)


def _is_json(line: bytes) -> bool:
    try:
        loads(line)
    except ValueError:
        return False
    return True


def _jsonl(first: bytes, f: Any, path: Path) -> Iterator[Any]:
    """One record per line; a file of one line is one JSON document (maybe several runs)."""
    head = loads(first)
    n = 0
    for line in f:
        if line.strip():
            if n == 0:
                yield head
            n += 1
            yield _loads(line, n, path)
    if n == 0:
        yield from records_of(head)


def _loads(data: bytes, record: int | None, path: Path) -> Any:
    try:
        return loads(data)
    except ValueError as exc:
        where = "line" if record is not None else "file"
        raise InvalidTranscript(record, "", f"{path}: not JSON ({exc}); give a JSON "
                                f"{where} per run, or a JSON array of runs") from None


def read(path: str | Path, fmt: str = "auto", model: str | None = None) -> Iterator[Transcript]:
    """The runs in a transcript file, in file order; ``model``: the model's name where
    the transcript does not record it."""
    for t in transcripts(read_records(Path(path)), fmt):
        yield dataclasses.replace(t, model=model) if model and not t.model else t


def run_name(path: Path, t: Transcript) -> str:
    return f"{path.stem}-{t.record}"


# -- import -------------------------------------------------------------------------------

def _journal(store: Store, t: Transcript, path: Path, ids: UlidSource,
             now: float) -> Write:
    """One run's events, row and step-0 checkpoint, ready to commit."""
    name = run_name(path, t)
    events = list(plan(t, name=name, source=path.name))
    first: float = events[0].time or now
    row = RunRow(id=ids.new(), name=name, agent=agent_ref(t.format), swarm=None, goal=t.goal,
                 status="running", epoch=0, step=0, seq=0, head="",
                 spec=events[0].payload["spec"], budget={}, usage=_usage(t), wake_at=None,
                 created=first, updated=now, parent=None)
    clock = _Clock(now)
    j = RunJournal(store, row, None, ids, clock)
    ck = CheckpointEncoder(run=row.id).encode(0, {}, force_key=True)
    for k, p in enumerate(events):
        clock.at = p.time or now
        j.append(p.kind, p.payload, step=p.step, actor=p.actor)
        if k == 0:
            j.checkpoint(ck)
            j.append("checkpoint", checkpoint_info(ck), step=0, actor=p.actor)
    return j.take()


@dataclass(slots=True)
class _Clock:
    """The journal's clock: each event's time as the transcript gives it."""

    at: float

    def __call__(self) -> float:
        return self.at


def _usage(t: Transcript) -> dict[str, float]:
    out = {"steps": float(t.steps),
           "tool_calls": float(sum(len(turn.tools) for turn in t.turns))}
    for k in ("input_tokens", "output_tokens"):
        out[k] = float(sum(turn.usage.get(k, 0) for turn in t.turns))
    return out


@dataclass(frozen=True, slots=True)
class Imported:
    """One run an import made."""

    record: int
    run: str
    name: str
    steps: int
    events: int
    outcome: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"record": self.record, "run": self.run, "name": self.name,
                "steps": self.steps, "events": self.events, "outcome": self.outcome or None}


def import_file(store: Store, path: str | Path, *, fmt: str = "auto", model: str | None = None,
                now: Callable[[], float]) -> list[Imported]:
    """Import every run in ``path`` as a read-only run, in one transaction."""
    p = Path(path)
    ids = UlidSource(now)
    t0 = now()
    writes: list[Write] = []
    made: list[Imported] = []
    for t in read(p, fmt, model):
        w = _journal(store, t, p, ids, t0)
        writes.append(w)
        made.append(Imported(t.record, w.run, run_name(p, t), t.steps, len(w.events),
                             t.outcome))
    if not writes:
        raise InvalidTranscript(None, "", f"{p} holds no runs")
    for err in store.commit(writes):
        if err is not None:
            raise err
    return made


# -- analysis -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Analysis:
    """The monitors' flags on one run."""

    record: int | str
    """The run's 0-based position in the file, or its run id."""
    name: str
    steps: int
    flags: list[Flag]
    outcome: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    """What identifies the run in its source (``task_id``, ``trial``, ``trace_id``...)."""
    events: dict[str, Event] = field(default_factory=dict)
    """The run's events by id, to show the evidence."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Monitors' asks with no journaled answer, left unasked, by ``monitor/kind``."""

    def to_json(self) -> dict[str, Any]:
        return {"record": self.record, "name": self.name, "steps": self.steps,
                "flagged": bool(self.flags), "outcome": self.outcome or None,
                "source": self.meta or None,
                "flags": [self._flag(f) for f in self.flags],
                "asks_skipped": self.skipped or None}

    def _flag(self, f: Flag) -> dict[str, Any]:
        out = f.to_json()
        out["evidence"] = [_cite(self.events.get(i), i) for i in f.evidence]
        return out


def _cite(e: Event | None, eid: str) -> dict[str, Any]:
    if e is None:
        return {"id": eid}
    p = e.payload if isinstance(e.payload, dict) else {}
    out = {"id": e.id, "seq": e.seq, "step": e.step, "kind": e.kind}
    if "tool" in p:
        out["tool"] = p["tool"]
    return out


def events_of(t: Transcript, name: str, source: str) -> list[Event]:
    """The events an import would journal for ``t`` (ids made up, times from the
    transcript or 0): what ``analyze`` feeds the monitors without a store."""
    chain = Chain(f"record-{t.record}")
    ids = UlidSource(lambda: 0.0, randbits=_counter())
    iso = iso_stamper()
    out = []
    for p in plan(t, name=name, source=source):
        out.append(_make(chain, ids, iso, p))
    return out


def _make(chain: Chain, ids: UlidSource, iso: Callable[[float], str], p: Planned) -> Event:
    return chain.make(id=ids.new(), kind=p.kind, time=iso(p.time or 0.0), epoch=0, step=p.step,
                      actor=p.actor, payload=p.payload)


def _counter() -> Callable[[], int]:
    n = iter(range(1, 1 << 62))
    return lambda: next(n)


def analyze_file(path: str | Path, settings: MonitorSettings, *, fmt: str = "auto",
                 model: str | None = None) -> Iterator[Analysis]:
    """The monitors over every run of a file, one run at a time; nothing is stored."""
    p = Path(path)
    for t in read(p, fmt, model):
        name = run_name(p, t)
        events = events_of(t, name, p.name)
        subject = Subject(events[0].run, t.agent, None, t.goal)
        watch = watch_for(settings, t.agent, None)
        flags = analyze(events, subject, watch)
        yield Analysis(t.record, name, t.steps, flags, t.outcome, t.meta,
                       {e.id: e for e in events}, _skipped(watch))


def analyze_run(store: Store, row: RunRow, settings: MonitorSettings) -> Analysis:
    """The monitors over a stored run's events (its journaled alerts aside), seeing its
    state at each step boundary from its checkpoints."""
    events = store.events(row.id)
    agent = str(row.spec.get("agent_name") or row.agent)
    subject = Subject(row.id, agent, row.swarm, row.goal)
    watch = watch_for(settings, agent, row.swarm)
    # Each state is restored once however many events of its step read it.
    state = functools.lru_cache(maxsize=4)(functools.partial(state_at, store, row.id))
    flags = analyze(events, subject, watch, state)
    mark = row.spec.get(READ_ONLY_KEY)
    outcome = _stored_outcome(events) if mark else {}
    return Analysis(row.id, row.name, row.step, flags, outcome, dict(mark or {}),
                    {e.id: e for e in events}, _skipped(watch))


def _skipped(watch: Watch) -> dict[str, int]:
    """Asks the run has no answer to, by ``monitor/kind`` (nothing is sent from analyze)."""
    return dict(Counter(f"{a.monitor}/{a.kind}" for a in unanswered(watch)))


def _stored_outcome(events: list[Event]) -> dict[str, Any]:
    last = events[-1].payload if events else None
    result = last.get("result") if isinstance(last, dict) else None
    got = result.get("outcome") if isinstance(result, dict) else None
    return got if isinstance(got, dict) else {}
