"""The ``drift`` monitor: a run whose tools and targets shift away from its own history.

Each action of the run (a read tool's ``tool.called``, an effect's ``effect.intent``,
a ``message.sent``) becomes a *symbol*: the tool and its main target (the directory
of a path, a recipient, a table, a URL's host...), with ids, digits and hex runs
masked so that ``ticket-118`` and ``ticket-907`` are the same target. When a step
ends, the last ``recent`` actions are held against the ``history`` actions before
them:

* the history is a distribution in which the symbols it met at most once share
  one probability, *rare*, estimated from how often its own actions were rare (a
  crawler that visits a new directory each step expects new targets; a triager
  that reads and labels tickets does not);
* the *surprise* of the recent actions is their mean ``-log2 P`` under it, and the
  history's own is the same measure taken leave-one-out over its actions; the
  signal is a window at least ``min_new`` of whose actions the history met at most
  once, ``threshold`` bits (default 2: each action about 4x less likely than
  usual) more surprising than the history is of itself.

Unlike a divergence between two small samples (the Jensen-Shannon divergence is
reported in the figures, not judged), this does not flag a run that uses many tools
evenly because a short window happens to miss some of them. Nothing is judged
before the history holds ``min_history`` actions and the window is full, so a short
run never flags. After a signal the window must renew entirely before the next, and
the shifted actions join the history, so a run that settled on new work is not told
again for the same shift; a second, separate shift takes the next stage.

Naming an embeddings model or a judge model in the policy adds two rules that ask the
run's provider (:class:`AskingDrift`, :mod:`.goalcheck`, :mod:`.asks`):
``goal_similarity`` and ``judge``; the judge is also asked when ``distribution`` fires.
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any, Final

from tether.core.events import Event
from tether.core.monitors.asks import ANSWER_KIND, Answer, Ask, Outbox
from tether.core.monitors.base import MonitorKind, Quiet, View, register
from tether.core.monitors.goalcheck import GoalJudge, GoalSimilarity, action_text
from tether.core.monitors.verdicts import LEVELS, Level, Signal

NAME: Final = "drift"
ACTION_KINDS: Final = frozenset({"tool.called", "effect.intent", "message.sent"})
TARGET_KEYS: Final = ("path", "file", "filename", "dir", "directory", "folder", "to",
                      "recipient", "recipients", "email", "channel", "queue", "topic", "table",
                      "account", "url", "uri", "host", "vault", "symbol", "database", "bucket")
"""Arguments that name what a call acts on, most telling first; without one, the first
short string argument (by name) stands in."""
_RANK: Final = {k: i for i, k in enumerate(TARGET_KEYS)}
_VOLATILE = re.compile(r"[0-9a-f]{8,}|\d+", re.IGNORECASE)
MAX_TARGET: Final = 80
KNOWN: Final = 512


def target_of(arguments: Any) -> str:
    """The main target of a call's arguments, normalised (see the module docstring)."""
    if not isinstance(arguments, Mapping):
        return ""
    raw: Any = None
    key, rank = "", len(_RANK)
    for k, v in arguments.items():  # a call has a few arguments; the ranks are many
        r = _RANK.get(k, rank)
        if r < rank and v and isinstance(v, str | list):
            key, raw, rank = k, v, r
    if raw is None:
        for k in sorted(arguments):
            v = arguments[k]
            if isinstance(v, str) and v and len(v) <= MAX_TARGET:
                key, raw = k, v
                break
    if isinstance(raw, list):
        raw = ",".join(sorted(str(x) for x in raw[:8]))
    if not isinstance(raw, str):
        return ""
    return f"{key}={_normalise(key, raw)}"


def _normalise(key: str, value: str) -> str:
    v = value.strip().lower()[:200]
    if "://" in v:  # a URL: its scheme and host
        scheme, _, rest = v.partition("://")
        v = f"{scheme}://{rest.split('/', 1)[0]}"
    elif key in ("path", "file", "filename") or ("/" in v and " " not in v):
        v = v.rsplit("/", 1)[0] + "/" if "/" in v.rstrip("/") else "./"  # its directory
    return _VOLATILE.sub("#", v)[:MAX_TARGET]


def symbol_of(event: Event) -> str | None:
    """The action an event is (``tool@target``), or None for an event that is not one."""
    if event.kind not in ACTION_KINDS or not isinstance(event.payload, Mapping):
        return None
    p = event.payload
    if event.kind == "message.sent":
        return f"send@to={_VOLATILE.sub('#', str(p.get('to_name') or p.get('to') or ''))}"
    return f"{p.get('tool')}@{target_of(p.get('arguments'))}"


class Distribution:
    """A run's actions: the recent window and the history before it (pure, incremental)."""

    def __init__(self, recent: int, history: int) -> None:
        self.recent: deque[tuple[str, str]] = deque()
        """(symbol, event id), oldest first."""
        self.history: deque[str] = deque()
        self.counts: Counter[str] = Counter()
        self.size, self.cap = recent, history

    def add(self, symbol: str, event: str) -> None:
        self.recent.append((symbol, event))
        if len(self.recent) > self.size:
            s, _ = self.recent.popleft()
            self.history.append(s)
            self.counts[s] += 1
            if len(self.history) > self.cap:
                old = self.history.popleft()
                self.counts[old] -= 1
                if not self.counts[old]:
                    del self.counts[old]

    def surprise(self) -> tuple[float, float, float]:
        """(the recent window's mean surprise, the history's own, the share of rare
        actions the history expects), in bits.

        A symbol the history met at most once is *rare*, and all rare symbols share one
        probability: the share of the history's own actions that were rare when judged
        by the others (Good-Turing's estimate of meeting something new, from the
        symbols met once and twice). Other symbols are judged by their share. The
        history's own surprise is leave-one-out (each action judged by the others), so
        a run spread thin over many tools expects to meet rare ones, and a run that
        kept to a few does not.
        """
        n = len(self.history)
        ones = sum(1 for c in self.counts.values() if c == 1)
        twos = sum(1 for c in self.counts.values() if c == 2)
        rare = (ones + 2 * twos + 1) / (n + 2)
        rare_bits = -math.log2(rare)
        own = 0.0
        for c in self.counts.values():
            own += c * (rare_bits if c <= 2 else -math.log2((c - 1) / (n - 1)))
        total = 0.0
        for s, _ in self.recent:
            c = self.counts.get(s, 0)
            total += rare_bits if c <= 1 else -math.log2(c / n)
        return total / len(self.recent), own / n, rare

    def js(self) -> float:
        """Jensen-Shannon divergence (bits) between the window and the history, over the
        window's support (a symbol only the history has adds half its share)."""
        n, w = len(self.history), len(self.recent)
        r = Counter(s for s, _ in self.recent)
        out, hist_in = 0.0, 0.0
        for s, c in r.items():
            p, q = c / w, self.counts.get(s, 0) / n
            m = (p + q) / 2
            out += p * math.log2(p / m) + (q * math.log2(q / m) if q else 0.0)
            hist_in += q
        return 0.5 * out + 0.5 * (1 - hist_in)


class DriftMonitor(Quiet):
    """See the module docstring."""

    name = NAME
    asking = False
    """It asks no provider (:class:`AskingDrift` does)."""
    kinds = ACTION_KINDS | {"step.finished"}

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.threshold = float(params["threshold"])
        self.min_history = int(params["min_history"])
        self.min_new = float(params["min_new"])
        self.dist = Distribution(int(params["recent"]), int(params["history"]))
        self.quiet_for = 0
        """Actions to come before the next signal (the window renews after one)."""
        self._fresh = False
        """A rare action came since the last judgement: without one the window cannot
        have become more unusual, so the step is not judged."""
        self._known: dict[str, str] = {}
        """Symbols by call fingerprint: a call made again costs one lookup."""

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        kind = event.kind
        if kind in ACTION_KINDS:
            fp = event.payload.get("fp") if isinstance(event.payload, Mapping) else None
            symbol = self._known.get(fp) if isinstance(fp, str) else None
            if symbol is None:
                symbol = symbol_of(event)
                if symbol is None:
                    return ()
                if isinstance(fp, str):
                    if len(self._known) >= KNOWN:
                        self._known.clear()
                    self._known[fp] = symbol
            self.dist.add(symbol, event.id)
            if self.dist.counts.get(symbol, 0) <= 1:
                self._fresh = True
            if self.quiet_for:
                self.quiet_for -= 1
        elif kind == "step.finished" and self._fresh:
            self._fresh = False
            return self._judge(view)
        return ()

    def _judge(self, view: View) -> list[Signal]:
        d = self.dist
        if (self.quiet_for or len(d.recent) < d.size or len(d.history) < self.min_history):
            return []
        rare = sum(1 for s, _ in d.recent if d.counts.get(s, 0) <= 1) / len(d.recent)
        if rare < self.min_new:
            return []  # most of the window is work the run has done before
        recent, own, nu = d.surprise()
        excess = recent - own
        if excess < self.threshold:
            return []
        self.quiet_for = d.size
        now = Counter(s for s, _ in d.recent).most_common(3)
        before = d.counts.most_common(3)
        figures = {"excess_bits": round(excess, 3), "recent_bits": round(recent, 3),
                   "history_bits": round(own, 3), "rare_share": round(nu, 3),
                   "js": round(d.js(), 3), "new_in_window": round(rare, 3),
                   "recent": dict(now), "history": dict(before), "window": len(d.recent),
                   "history_actions": len(d.history)}
        return [Signal(NAME, "distribution", f"run {view.run} step {view.step}: its last "
                       f"{len(d.recent)} actions ({_show(now)}) are {excess:.1f} bits more "
                       f"surprising than its history ({_show(before)}); is it still working "
                       f"on its goal {view.goal[:80]!r}?", evidence=tuple(e for _, e in d.recent),
                       figures=figures, threshold=self.threshold)]


class AskingDrift(DriftMonitor):
    """The drift monitor with its checks that ask a provider (:mod:`.goalcheck`): goal
    similarity by embeddings and a model as judge. A class of its own so that the
    monitor that asks nothing (the default) keeps its hot path as it was."""

    asking = True
    kinds = DriftMonitor.kinds | {ANSWER_KIND}

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        timeout = float(params["ask_timeout"])
        self.similarity = GoalSimilarity(
            NAME, str(params["embeddings"]), every=int(params["similarity_every"]),
            drop=float(params["similarity_drop"]), baseline=int(params["similarity_baseline"]),
            dimensions=int(params["dimensions"]), timeout=timeout) if params["embeddings"] else None
        self.judge = GoalJudge(NAME, str(params["judge"]), every=int(params["judge_every"]),
                               verdict=str(params["judge_verdict"]),
                               timeout=timeout) if params["judge"] else None
        self.outbox = Outbox()
        self._texts: deque[tuple[str, str]] = deque(
            maxlen=max(self.dist.size, int(params["judge_window"])))
        """The latest actions as a provider is shown them: (text, event id)."""

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        kind = event.kind
        if kind == ANSWER_KIND:
            return self._answered(event, view)
        out = list(super().observe(event, view))
        if kind == "step.finished":
            self._ask(event.id, view, fired=bool(out))
        elif kind in ACTION_KINDS and self.dist.recent and self.dist.recent[-1][1] == event.id:
            self._texts.append((action_text(event), event.id))  # it was an action
        return out

    def asks(self) -> list[Ask]:
        """The asks made since the last call (:mod:`.asks`)."""
        return self.outbox.drain()

    def _ask(self, cause: str, view: View, *, fired: bool) -> None:
        texts = list(self._texts)
        if self.similarity is not None:
            self.similarity.ask(self.outbox, view.run, view.goal, view.step, cause,
                                texts[-self.dist.size:])
        if self.judge is not None:
            self.judge.ask(self.outbox, view.run, view.goal, view.step, cause, texts,
                           fired=fired)

    def _answered(self, event: Event, view: View) -> list[Signal]:
        answer = Answer.of(event)
        if answer is None or answer.monitor != NAME:
            return []
        ask = self.outbox.take(answer)
        if ask is None:
            return []  # answered before, or asked before this monitor's window
        if ask.kind == "embeddings" and self.similarity is not None:
            out = self.similarity.answered(ask, answer, view.run, view.goal)
            if out and self.judge is not None:  # a cheap signal: ask the judge too
                self.judge.ask(self.outbox, view.run, view.goal, view.step, event.id,
                               list(self._texts), fired=True)
            return out
        if ask.kind == "judge" and self.judge is not None:
            return self.judge.answered(ask, answer, self.outbox, view.run, view.goal,
                                       list(self._texts))
        return []


def _show(pairs: list[tuple[str, int]]) -> str:
    return ", ".join(f"{s} x{c}" for s, c in pairs)


def _check(params: Mapping[str, Any], path: str) -> None:
    for key in ("recent", "history", "min_history"):
        if key in params and int(params[key]) < 1:
            raise ValueError(f"{path}.{key}: must be at least 1, got {params[key]}")
    if "threshold" in params and float(params["threshold"]) <= 0:
        raise ValueError(f"{path}.threshold: must be > 0 bits, got {params['threshold']}")
    for key in ("similarity_every", "similarity_baseline", "judge_window"):
        if key in params and int(params[key]) < 1:
            raise ValueError(f"{path}.{key}: must be at least 1, got {params[key]}")
    for key in ("judge_every", "dimensions"):
        if key in params and int(params[key]) < 0:
            raise ValueError(f"{path}.{key}: must be 0 (off) or more, got {params[key]}")
    if "similarity_drop" in params and not 0 < float(params["similarity_drop"]) < 1:
        raise ValueError(f"{path}.similarity_drop: must be between 0 and 1 (a share of the "
                         f"early similarity), got {params['similarity_drop']}")
    if "ask_timeout" in params and float(params["ask_timeout"]) <= 0:
        raise ValueError(f"{path}.ask_timeout: must be > 0 seconds, got {params['ask_timeout']}")
    verdict = params.get("judge_verdict", "")
    if verdict and verdict not in LEVELS:
        raise ValueError(f"{path}.judge_verdict: {verdict!r} is not a verdict; use one of "
                         f"{', '.join(LEVELS)}, or \"\" for the monitor's stages")


DEFAULTS: Final[dict[str, Any]] = {
    "recent": 6, "history": 64, "min_history": 8, "threshold": 2.0, "min_new": 0.5,
    # Asking a provider (off while no model is named):
    "embeddings": "", "similarity_every": 1, "similarity_drop": 0.3, "similarity_baseline": 3,
    "dimensions": 0, "judge": "", "judge_every": 10, "judge_window": 12,
    "judge_verdict": "pause", "ask_timeout": 30.0}

def make(params: Mapping[str, Any]) -> DriftMonitor:
    """The drift monitor for one run: :class:`AskingDrift` when a model is named."""
    return AskingDrift(params) if params["embeddings"] or params["judge"] else DriftMonitor(params)


register(MonitorKind(NAME, make, DEFAULTS, stages=(Level.ALERT,), enabled=True,
                     doc="tools and targets shifting away from the run's own history",
                     window=256, check=_check))
