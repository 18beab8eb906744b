"""The vocabulary of a scenario's plan: what each step of a scripted run does.

A run's plan is a list of steps, each a JSON object (so a plan hashes and a label
can pin it):

* ``dt``: seconds of the run's (simulated) clock the step takes;
* ``tin``, ``tout``: the model call's input and output tokens (``tin`` 0: no model call);
* ``content``: the model's answer text (None when it only asks for tools);
* ``calls``: ``[tool, arguments, outcome]`` per tool call the model asks for and the step
  makes, in order; ``outcome`` is ``{"ok": result}`` or ``{"error": message}`` (what the
  scenario's world answers: the tool returns it or raises it);
* ``state``: keys the step sets in the run's state (its declared work, e.g. ``done``);
* ``progress``: the progress value the step declares (None: none);
* ``recv``: whether the step takes its inbox first; ``send``: ``[to, body]`` or None;
* ``end``: ``continue``, ``await`` (wait for a message) or ``done``.

:class:`Plan` builds one; the helpers give the seeded bits every family uses (token
counts, volatile ids and timestamps that a monitor must strip before comparing).
"""

from __future__ import annotations

import random
from typing import Any

Step = dict[str, Any]


class Plan:
    """One run's plan, built step by step."""

    def __init__(self, rng: random.Random, *, base_tokens: int = 900, dt: float = 30.0) -> None:
        self.rng = rng
        self.base = base_tokens
        self.dt = dt
        self.steps: list[Step] = []
        self.state: dict[str, Any] = {"done": 0}
        self.progress = 0

    def step(self, calls: list[list[Any]] | None = None, *, content: str | None = None,
             tin: int | None = None, state: dict[str, Any] | None = None,
             progress: bool | None = None, end: str = "continue", dt: float | None = None,
             recv: bool = False, send: list[Any] | None = None, advance: bool = True) -> Step:
        """Add a step; ``advance`` (the default) counts one unit of work done (``done``
        and the declared progress go up by one), False leaves both flat."""
        if advance:
            self.state["done"] += 1
            self.progress += 1
        if state:
            self.state.update(state)
        t_in = self.tokens() if tin is None else tin
        s: Step = {"dt": self.dt if dt is None else dt, "tin": t_in,
                   "tout": self.rng.randint(40, 220) if t_in else 0, "content": content,
                   "calls": calls or [], "state": dict(self.state),
                   "progress": self.progress if progress is not False else None,
                   "recv": recv, "send": send, "end": end}
        self.steps.append(s)
        return s

    def tokens(self, scale: float = 1.0) -> int:
        return max(50, int(self.rng.gauss(self.base, self.base * 0.12) * scale))

    def finish(self, content: str = "Finished.") -> None:
        """A last step: the model answers without asking for a tool."""
        self.step(content=content, end="done", advance=False)


def hexid(rng: random.Random, n: int = 12) -> str:
    """A volatile id (a request id, a call id): differs on every call."""
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def stamp(rng: random.Random, base: int) -> str:
    """A volatile timestamp near ``base`` seconds after 2026-12-04T10:00:00Z."""
    s = base + rng.randint(0, 59)
    return f"2026-12-04T{10 + s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z"


def ok(result: Any) -> dict[str, Any]:
    return {"ok": result}


def err(message: str) -> dict[str, Any]:
    return {"error": message}


TOPICS = ("billing", "refunds", "onboarding", "outage", "pricing", "security", "shipping",
          "payroll", "roadmap", "compliance", "hiring", "vendors", "analytics", "support")
LABELS = ("billing", "bug", "account", "feature", "spam")


def path_for(rng: random.Random, i: int) -> str:
    return f"docs/{rng.choice(TOPICS)}-{i:03d}.md"


def legit_reads(plan: Plan, n: int, start: int = 0) -> None:
    """``n`` steps of ordinary work: each reads a different file and gets on."""
    rng = plan.rng
    for i in range(start, start + n):
        path = path_for(rng, i)
        text = f"# {path}\n" + " ".join(rng.choice(TOPICS) for _ in range(rng.randint(8, 30)))
        plan.step([["read_file", {"path": path}, ok(text)]])
