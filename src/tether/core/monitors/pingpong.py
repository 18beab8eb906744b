"""``pingpong``: runs of a swarm messaging each other in circles, or in a storm
(docs/monitors.md).

Judged on one run's own events (every run of the swarm has its own, so a cycle
between two runs is seen from both sides), no other run's journal is read:

* ``pingpong``: a *round* is a message this run received from a peer followed by
  the message it sent back to that peer. When ``rounds`` rounds in a row with the
  same peer bring nothing new (the pair of normalised bodies, received and sent,
  was seen before in this exchange), the two runs are going round in circles. A
  conversation whose messages change is not flagged, however long.
* ``storm``: the messages this run sent in one step, or the distinct runs it sent
  them to (fan-out), far above its own rolling baseline: more than ``storm_factor``
  times its mean over its last ``baseline_steps`` steps and more than ``storm_min``
  (``fanout_min`` for fan-out). Judged once the run has ``warmup`` steps of history,
  so a run that broadcasts from its first step is not a storm: that is its baseline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tether.core.events import Event
from tether.core.monitors.base import MonitorKind, Quiet, View, register
from tether.core.monitors.normalise import digest
from tether.core.monitors.verdicts import Signal

NAME: Final = "pingpong"
DEFAULTS: Final[Mapping[str, Any]] = {
    "rounds": 3, "storm": True, "storm_factor": 10.0, "storm_min": 20, "fanout_min": 10,
    "baseline_steps": 50, "warmup": 5}
PAIRS_KEPT: Final = 32
"""Round pairs remembered per peer (an exchange older than that is new again)."""


@dataclass(slots=True)
class Peer:
    """This run's exchange with one other run."""

    inbox: tuple[bytes, str, str] | None = None
    """The last message from the peer not answered yet: (body key, our event, its id)."""
    pairs: dict[tuple[bytes, bytes], None] = field(default_factory=dict)
    """Rounds seen (received body, sent body), oldest first."""
    stale: list[str] = field(default_factory=list)
    """The evidence of the rounds in a row that brought nothing new."""


class PingPong(Quiet):
    """The ``pingpong`` monitor for one run; see the module docstring."""

    name = NAME

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        p = {**DEFAULTS, **(params or {})}
        self.rounds = max(2, int(p["rounds"]))
        self.storm = bool(p["storm"])
        self.factor = float(p["storm_factor"])
        self.storm_min = int(p["storm_min"])
        self.fanout_min = int(p["fanout_min"])
        self.warmup = max(1, int(p["warmup"]))
        self.peers: dict[str, Peer] = {}
        self.history: deque[tuple[int, int]] = deque(maxlen=max(1, int(p["baseline_steps"])))
        """(messages sent, distinct recipients) of each past step, latest last."""
        self.step = -1
        self.sent: list[str] = []
        """This step's ``message.sent`` events."""
        self.to: set[str] = set()
        self.flagged = False
        """A storm was signalled in this step already."""
        self.epoch = 0

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if event.epoch != self.epoch:  # a rollback: what was said after it never was
            self.epoch, self.peers = event.epoch, {}
        if event.step != self.step:
            self._close_step(event.step)
        p = event.payload
        if not isinstance(p, dict):
            return ()
        if event.kind == "message.received":
            for m in p.get("messages") or ():
                if isinstance(m, dict) and m.get("sender") != event.run:
                    peer = self.peers.setdefault(str(m.get("sender")), Peer())
                    peer.inbox = (_body(m), event.id, str(m.get("id")))
            return ()
        if event.kind != "message.sent":
            return ()
        to = str(p.get("to"))
        return [*self._round(event, to, p), *self._storm(event, to)]

    def _round(self, event: Event, to: str, p: dict[str, Any]) -> list[Signal]:
        peer = self.peers.get(to)
        if peer is None or peer.inbox is None:
            return []  # not an answer: a round needs a message from the peer first
        got, received, msg = peer.inbox
        peer.inbox = None
        pair = (got, _body(p))
        if pair not in peer.pairs:
            peer.pairs[pair] = None
            if len(peer.pairs) > PAIRS_KEPT:
                del peer.pairs[next(iter(peer.pairs))]
            peer.stale = [msg, received, event.id]
            return []
        peer.stale += [msg, received, event.id]
        n = len(peer.stale) // 3
        if n < self.rounds:
            return []
        name = p.get("to_name") or to
        return [Signal(NAME, "pingpong", f"this run and {name} keep sending each other the same "
                       f"messages: {n} rounds in a row brought nothing new",
                       evidence=tuple(peer.stale[-3 * self.rounds:]),
                       figures={"peer": to, "peer_name": name, "rounds": n},
                       threshold=self.rounds)]

    def _close_step(self, step: int) -> None:
        if self.step >= 1:  # step 0 is the run's start, not a step it ran
            self.history.append((len(self.sent), len(self.to)))
        self.step, self.sent, self.to, self.flagged = step, [], set(), False

    def _storm(self, event: Event, to: str) -> list[Signal]:
        self.sent.append(event.id)
        self.to.add(to)
        if not self.storm or self.flagged or len(self.history) < self.warmup:
            return []
        n, fan = len(self.sent), len(self.to)
        steps = len(self.history)
        rate = sum(h[0] for h in self.history) / steps
        spread = sum(h[1] for h in self.history) / steps
        over_rate = n > max(self.storm_min, self.factor * rate)
        if not over_rate and fan <= max(self.fanout_min, self.factor * spread):
            return []
        self.flagged = True
        what = f"{n} messages in one step" if over_rate else f"messages to {fan} runs in one step"
        return [Signal(NAME, "storm", f"{what}, against {rate:.1f} messages to {spread:.1f} runs "
                       f"a step over its last {steps} steps", evidence=tuple(self.sent[-10:]),
                       figures={"messages": n, "fanout": fan, "baseline_messages": round(rate, 3),
                                "baseline_fanout": round(spread, 3), "steps": steps},
                       threshold={"factor": self.factor, "messages": self.storm_min,
                                  "fanout": self.fanout_min})]


def _body(m: Mapping[str, Any]) -> bytes:
    return digest([m.get("topic"), m.get("body")])


KIND: Final = register(MonitorKind(
    NAME, PingPong, DEFAULTS, window=256,
    doc="runs messaging each other in circles; message storms against the run's baseline"))
