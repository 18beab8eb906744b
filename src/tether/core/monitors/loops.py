"""``loops``: a run repeating itself instead of making progress (docs/monitors.md).

Rules, each judged on the run's own events:

* ``identical_calls``: the same effect (tool and arguments) asked for ``repeat`` times
  in a row. What a write tool says back is no sign of progress ("appended 12 bytes,
  now 48") : writing the same thing again is the loop.
* ``no_progress``: the same read asked again after answering the same ``repeat`` times
  in a row (after normalisation). A read whose answer changed is progress, and starts
  the streak again: polling a queue is not a loop. A failed call is the ``errors``
  rule's and ends the streak (a retry after a failure is not a lost thread).
* ``alternation`` (period 2, A-B-A-B) and ``cycle`` (periods 3 to ``max_period``):
  the last calls repeating a block of calls, twice, with no read in it answering
  differently the second time.
* ``errors``: ``errors`` calls in a row failed (the tool raised, or the call was
  rejected); a call that succeeds ends the streak, so a retry that works is not flagged.
* ``same_answer``: the model gave the same answer (at least ``answer_min_chars``
  long, asking for no tool) ``answers`` times in a row to requests that differ: it
  lost the thread. Short answers never count: a classifier answers the same label to
  different inputs. An answer's text counts whether or not it also asks for tools.

The call rules are judged in :meth:`Loops.propose`, before the call runs, so the
host can refuse it; a refused call journals no call event, so the streak it belongs
to is not reset by the refusal and the next identical request is judged again (and
escalates). A sleep, a wake-up, received messages or a rollback start the call rules
afresh: a run that waited for the world, or was told something new, is not looping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tether.core.events import Event
from tether.core.monitors.base import MonitorKind, Proposal, View, register
from tether.core.monitors.normalise import digest, maybe_fresh, skeleton, text_key
from tether.core.monitors.verdicts import Level, Signal

NAME: Final = "loops"
DEFAULTS: Final[Mapping[str, Any]] = {"repeat": 3, "max_period": 4, "errors": 3,
                                      "answers": 3, "answer_min_chars": 40}
RESETS: Final = frozenset({"run.sleeping", "run.woke"})
FED: Final = RESETS | {"tool.called", "effect.intent", "effect.done", "effect.failed",
                       "model.called", "message.received", "rollback"}
"""What it is fed: ``rollback`` opens an epoch (see :meth:`Loops.observe`), so the calls
of the abandoned branch are forgotten before the next call is proposed."""


@dataclass(slots=True)
class Call:
    """One call of the run, as the rules compare it."""

    key: str
    """Tool and normalised arguments (:func:`call_key`)."""
    tool: str
    write: bool
    ev: str
    raw: Any = None
    """A read's result (or error), as journaled."""
    changed: bool = False
    """A read that answered differently from the last call with the same key."""
    _result: bytes | None = None

    def result(self) -> bytes:
        """The normalised result: worked out only when there is another call to compare it
        with (the common step repeats nothing, and pays nothing)."""
        if self._result is None:
            self._result = digest(self.raw)
        return self._result


@dataclass(slots=True)
class Answer:
    """A model's answer, normalised only when it must be compared in full."""

    content: str
    fp: str
    skeleton: str
    _text: str | None = None

    def text(self) -> str:
        if self._text is None:
            self._text = text_key(self.content)
        return self._text

    def same(self, other: Answer) -> bool:
        """Equal once normalised (the skeletons tell most answers apart for nothing)."""
        return self.content == other.content or (
            self.skeleton == other.skeleton and self.text() == other.text())


def call_key(tool: str, arguments: Any, fp: str | None = None) -> str:
    """What makes two calls the same call: the tool and its arguments, with what a
    caller makes fresh for each call stripped (normalise ``ids=False``).

    With the call's fingerprint ``fp`` (which hashes the tool and the raw arguments),
    arguments with nothing to strip, the common case, are keyed by it: no hashing."""
    if fp is not None and not maybe_fresh(arguments):
        return fp
    return "n:" + digest([tool, arguments], ids=False).hex()


class Loops:
    """The ``loops`` monitor for one run; see the module docstring."""

    name = NAME
    kinds = FED

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        p = {**DEFAULTS, **(params or {})}
        self.repeat = max(2, int(p["repeat"]))
        self.max_period = max(2, int(p["max_period"]))
        self.errors = max(1, int(p["errors"]))
        self.answers = max(2, int(p["answers"]))
        self.min_chars = int(p["answer_min_chars"])
        self.calls: deque[Call] = deque(maxlen=2 * self.max_period)
        self.streak: list[Call] = []
        """The latest run of identical calls without progress (its last ``repeat``: the
        evidence), oldest first."""
        self.repeats = 0
        """How long that run is."""
        self.failures: list[str] = []
        self.answer: Answer | None = None
        """The last long model answer."""
        self.said: list[str] = []
        """The ``model.called`` events of the current run of the same answer."""
        self.epoch = 0
        self.asked: tuple[str, str] = ("", "")
        """The last proposed call's fingerprint and key: its event reuses the key."""

    def _key(self, tool: str, arguments: Any, fp: object) -> str:
        # The fingerprint hashes the raw arguments, so an equal one means an equal key.
        if fp == self.asked[0]:
            return self.asked[1]
        return call_key(tool, arguments, fp if isinstance(fp, str) else None)

    # -- observing -------------------------------------------------------------
    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        kind, p = event.kind, event.payload
        if event.epoch != self.epoch:
            self.epoch = event.epoch
            self.forget()
        if not isinstance(p, dict):
            return ()
        if kind == "tool.called":
            return self._called(event, p)
        if kind == "effect.intent":  # an effect's result is not compared: see the docstring
            tool = str(p.get("tool"))
            self._add(Call(self._key(tool, p.get("arguments"), p.get("fp")), tool, True, event.id))
        elif kind in ("effect.done", "effect.failed"):
            return self._outcome(event, kind == "effect.failed")
        elif kind == "model.called":
            return self._answered(event, p)
        elif kind in RESETS or (kind == "message.received" and p.get("messages")):
            self.forget()
        return ()

    def forget(self) -> None:
        """Start the call rules afresh (not the error streak: a tool that keeps failing
        across a sleep is still failing)."""
        self.calls.clear()
        self.streak, self.repeats = [], 0

    def _called(self, event: Event, p: dict[str, Any]) -> Iterable[Signal]:
        tool = str(p.get("tool"))
        failed = "error" in p
        args = p.get("raw_arguments") if p.get("rejected") else p.get("arguments")
        c = Call(self._key(tool, args, p.get("fp")), tool, False, event.id,
                 p.get("error") if failed else p.get("result"))
        if failed:  # a failure is the errors rule's: retrying after one is no lost thread
            self.streak, self.repeats = [], 0
            self.calls.append(c)
        else:
            self._add(c)
        return self._outcome(event, failed)

    def _add(self, c: Call) -> None:
        if not c.write:
            prev = next((o for o in reversed(self.calls) if o.key == c.key), None)
            c.changed = prev is not None and prev.result() != c.result()
        last = self.streak[-1] if self.streak else None
        if last is not None and last.key == c.key and not c.changed:
            self.streak.append(c)
            del self.streak[:-self.repeat]
            self.repeats += 1
        else:
            self.streak, self.repeats = [c], 1
        self.calls.append(c)

    def _outcome(self, event: Event, failed: bool) -> tuple[Signal, ...]:
        # Eager (not a generator): the state changes whether or not the caller iterates.
        if not failed:
            self.failures = []
            return ()
        self.failures.append(event.id)
        n = len(self.failures)
        if n % self.errors:
            return ()
        return (Signal(NAME, "errors", f"{n} calls in a row failed; the run keeps trying "
                       "without getting anywhere", evidence=tuple(self.failures[-self.errors:]),
                       figures={"failures": n}, threshold=self.errors),)

    def _answered(self, event: Event, p: dict[str, Any]) -> tuple[Signal, ...]:
        r = p.get("response")
        if not isinstance(r, dict):
            return ()
        # An answer that also asks for tools counts by its text too: the same long reply
        # posted to every ticket is the parrot, whatever the calls around it.
        content = r.get("content")
        if not isinstance(content, str) or len(content) < self.min_chars:
            self.answer, self.said = None, []
            return ()
        new = Answer(content, str(p.get("fp")), skeleton(content))
        prev, self.answer = self.answer, new
        if prev is None or not prev.same(new):
            self.said = [event.id]
            return ()
        if prev.fp == new.fp:  # the same request again: the same answer is no news
            return ()
        self.said.append(event.id)
        if len(self.said) < self.answers:
            return ()
        return (Signal(NAME, "same_answer", f"the model gave the same answer to "
                       f"{len(self.said)} different requests in a row: it lost the thread",
                       evidence=tuple(self.said[-self.answers:]),
                       figures={"answers": len(self.said), "chars": len(content),
                                "answer": new.text()[:120]}, threshold=self.answers),)

    # -- proposed calls -------------------------------------------------------
    def propose(self, call: Proposal, view: View) -> Iterable[Signal]:
        k = call_key(call.tool, call.arguments, call.fp)
        self.asked = (call.fp, k)
        s = self.streak
        # A read must have answered the same `repeat` times before it is judged: a queue
        # polled empty twice, then full, is polling, not a loop.
        need = self.repeat + (call.effect == "read")
        if s and s[-1].key == k and self.repeats + 1 >= need:
            return (self._repeated(call, self.repeats + 1),)
        return self._cycle(call, k)

    def _repeated(self, call: Proposal, n: int) -> Signal:
        if call.effect != "read":
            rule, what = "identical_calls", f"{call.tool} asked for the {_nth(n)} time in a row " \
                "with the same arguments"
        else:
            rule, what = "no_progress", f"{call.tool} asked for the {_nth(n)} time in a row " \
                "with the same arguments, and it answered the same each time"
        return Signal(NAME, rule, what, evidence=tuple(c.ev for c in self.streak),
                      figures={"tool": call.tool, "repeats": n}, threshold=self.repeat)

    def _cycle(self, call: Proposal, k: str) -> Iterator[Signal]:
        calls = self.calls
        for p in range(2, min(self.max_period, (len(calls) + 1) // 2) + 1):
            if calls[-p].key != k:  # the call p back is not this one: no cycle of p
                continue
            hist = list(calls)[-2 * p + 1:]
            block, again = hist[:p], hist[p:]
            keys = [c.key for c in block]
            if keys != [c.key for c in again] + [k] or len(set(keys)) < 2:
                continue
            if any(c.changed for c in again):  # a read answered differently: progress
                continue
            tools = [c.tool for c in block]
            yield Signal(NAME, "alternation" if p == 2 else "cycle",
                         f"the run keeps repeating the calls {' -> '.join(tools)} "
                         f"({call.tool} would start them again) with no new result",
                         evidence=tuple(c.ev for c in block + again),
                         figures={"period": p, "tools": tools}, threshold=2)
            return


def _nth(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


KIND: Final = register(MonitorKind(
    NAME, Loops, DEFAULTS, stages=(Level.ALERT, Level.BLOCK, Level.PAUSE), window=128,
    doc="repeated calls, alternations, error streaks and repeated model answers"))
