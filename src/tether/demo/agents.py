"""The demo's night shift: agents on a scripted model, on real files.

* ``ingest`` (a sync step function) drops the night's support tickets into
  ``inbox/`` once an hour, as reversible file writes;
* ``triage`` (an async step function) wakes every half hour, asks the model to
  classify each new ticket, appends it to ``notes/triage.md`` and moves it to
  ``done/``;
* ``librarian`` (the built-in tool-calling agent) sets up the notes folder once;
* ``reporter`` sleeps until 06:00, asks the model for a digest and sends it: an
  irreversible effect (an mbox entry in ``outbox/``, which cannot be unsent);
* ``router`` gets each hour's tickets from ``ingest`` as a message
  (``ctx.send`` / ``ctx.receive``), asks the model which team each one is for
  and sends the answers on to ``dispatcher``;
* ``dispatcher`` keeps the teams' queues: it appends each ticket it is sent to
  ``queues/TEAM.md`` and rewrites ``queues/index.md`` (reversible file writes).

The router goes wrong at night: it keeps its whole conversation, to stay
consistent, and once that holds :data:`DRIFT_AFTER` tickets the scripted model
loses the thread and parrots its previous answer, so from 01:00 on every
ticket would land in the infra queue. The policy catches it live: an invariant
(``[monitors.agent.router.invariants]`` in :data:`POLICY`) says a ticket routed
to a team mentions one of that team's words, and the router decides in one step
and sends in the next, so the invariant is checked between the two. The first
wrong answer breaks it; the verdict quarantines the router before its answers
leave, and the dispatcher's queues get nothing from it. ``tether impact`` shows
what the bad step reached (the router alone) and ``tether rollback --cascade``
undoes it.

The policy (:data:`POLICY`, written to the demo folder as ``tether.toml``) also keeps
quiet hours until 07:00: the digest is deferred to the morning, and the page
triage wants to send for a security ticket at night waits for a human's
approval, so the demo ends with that approval pending.

The scripted model answers from the conversation alone, so a step re-run after
a crash gets the same answers. ``build(model)`` puts any model behind them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tether.models.base import Message, Model, ModelResponse, ToolCall, ToolSpec
from tether.models.scripted import ScriptedModel
from tether.runtime.agent import Agent, AgentLike, StepAgent
from tether.runtime.outcome import AwaitMessages, Continue, Done, SleepUntil
from tether.tools.base import current, tool
from tether.tools.files import fs_append, fs_list, fs_mkdir, fs_move, fs_read, fs_write

NIGHT_START = datetime(2026, 11, 30, 21, 0, tzinfo=UTC).timestamp()
"""21:00 UTC: the demo's evening."""
HOUR = 3600.0
MORNING = NIGHT_START + 9 * HOUR  # 06:00

TICKETS: dict[int, list[str]] = {
    0: ["Checkout page returns 500 for every customer since 20:45, site is down",
        "Please change the billing address on invoice 2231"],
    1: ["Refund request for order 1182, the parcel arrived damaged"],
    2: ["Database outage in eu-west: orders are failing to save"],
    4: ["Typo on the pricing page: 'anual' should be 'annual'",
        "Password reset emails are not arriving"],
    5: ["Security: hundreds of failed logins from unknown IPs on the admin panel"],
    6: ["Feature request: dark mode for the dashboard"],
}
URGENT_WORDS = ("down", "outage", "500", "security", "failing", "not arriving")
TEAM_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("security", ("security", "failed logins")),
    ("billing", ("billing", "invoice", "refund")),
    ("accounts", ("password", "login")),
    ("infra", ("500", "down", "outage", "database")),
    ("product", ("typo", "feature", "pricing", "dashboard")),
)
"""Which team a ticket is for: the first team with a word in it (what a reviewer says)."""
TEAMS = tuple(team for team, _ in TEAM_WORDS)
DRIFT_AFTER = 4
"""The scripted router model parrots its last answer once the conversation holds this
many answered tickets."""
ROUTE_PROMPT = ("You route support tickets to one team: " + ", ".join(TEAMS)
                + ". Answer with the team's name only.")


def _hour(t: float) -> int:
    return int((t - NIGHT_START) // HOUR)


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M")


def _arrivals(t: float) -> str:
    """What the names of the tickets ingest drops at ``t`` start with."""
    return f"inbox/{_clock(t).replace(':', '')}-"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:32]


def team_for(text: str) -> str:
    """The team a ticket is for, by :data:`TEAM_WORDS` (the right answer)."""
    low = text.lower()
    for team, words in TEAM_WORDS:
        if any(w in low for w in words):
            return team
    return "product"


def team_of(answer: str | None) -> str:
    """The team a model's answer names (``unsorted`` if none): a safe file name."""
    low = (answer or "").lower()
    found = [(low.find(t), t) for t in TEAMS if t in low]
    return min(found)[1] if found else "unsorted"


def queue_line(item: dict[str, Any]) -> str:
    """A ticket's line in its team's queue file."""
    return f"- [{item['at']}] {item['text']}\n"


def queue_index(counts: dict[str, int]) -> str:
    """``queues/index.md``: how many tickets each team's queue holds."""
    rows = "".join(f"| [{t}]({t}.md) | {n} |\n" for t, n in sorted(counts.items()))
    return f"# Queues\n\n| team | tickets |\n|---|---|\n{rows}"


# -- the scripted model ---------------------------------------------------------

def night_script(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """What the scripted model answers, from the conversation alone."""
    last = str(messages[-1].get("content") or "") if messages else ""
    if last.startswith("Classify this support ticket"):
        ticket = last.split("\n", 1)[-1].lower()
        return ModelResponse("urgent" if any(w in ticket for w in URGENT_WORDS) else "routine")
    if last.startswith("Route this ticket"):
        answers = [str(m.get("content") or "") for m in messages if m.get("role") == "assistant"]
        if len(answers) >= DRIFT_AFTER:
            # The night's fault: with a long conversation the model loses the thread and
            # repeats its previous answer, whatever the ticket says.
            return ModelResponse(answers[-1])
        return ModelResponse(team_for(last.split("\n", 1)[-1]))
    if last.startswith("Write the morning digest"):
        lines = [ln for ln in last.splitlines() if ln.startswith("- ")]
        urgent = [ln for ln in lines if "urgent" in ln]
        body = (f"Good morning. {len(lines)} tickets were triaged overnight; {len(urgent)} "
                "urgent:\n" + "\n".join(urgent) + "\nThe triaged tickets are filed under done/; "
                "any still in inbox/ wait for triage.")
        return ModelResponse(body)
    return _librarian_turn(messages)


def _librarian_turn(messages: Sequence[Message]) -> ModelResponse:
    turns = sum(1 for m in messages if m.get("role") == "assistant")
    if turns == 0:
        return ModelResponse(None, (ToolCall("call_1", "fs_mkdir", '{"path": "notes"}'),
                                    ToolCall("call_2", "fs_mkdir", '{"path": "done"}')))
    if turns == 1:
        index = ("# Night shift notes\\n\\n- triage.md: every ticket, classified\\n"
                 "- ../done/: tickets handled\\n- ../outbox/: what was sent\\n")
        return ModelResponse(None, (ToolCall("call_3", "fs_write",
                                             f'{{"path": "notes/README.md", "content": "{index}"}}'),))
    return ModelResponse("The notes folder is ready.")


def scripted(delay: float = 0.0) -> ScriptedModel:
    """The demo's scripted model; ``delay`` seconds per call (``--pace``)."""
    return ScriptedModel(night_script, name="scripted", delay=delay)


# -- tools ----------------------------------------------------------------------

@tool(effect="irreversible")
def send_digest(to: str, subject: str, body: str) -> str:
    """Send an email. Irreversible: once sent it cannot be unsent."""
    ws = current().workspace
    if ws is None:
        raise RuntimeError("send_digest needs a workspace")
    (ws / "outbox").mkdir(exist_ok=True)
    with open(ws / "outbox" / "sent.mbox", "a", encoding="utf-8") as f:
        f.write(f"From tether-demo\nTo: {to}\nSubject: {subject}\n\n{body}\n\n")
    return f"sent '{subject}' to {to}"


@tool(effect="irreversible")
def page_oncall(message: str) -> str:
    """Page the on-call engineer. Irreversible: a page wakes someone up."""
    ws = current().workspace
    if ws is None:
        raise RuntimeError("page_oncall needs a workspace")
    (ws / "outbox").mkdir(exist_ok=True)
    with open(ws / "outbox" / "pages.log", "a", encoding="utf-8") as f:
        f.write(f"PAGE: {message}\n")
    return "paged the on-call engineer"


ROUTED_RULE = ("all(any(w in t.text.lower() for w in team_words.get(t.team, []))"
               " for t in state.get('outgoing', {}).get('routed', []))")
"""The router's invariant: every ticket it is about to send mentions a word of its team
(its answers wait in ``state["outgoing"]`` for the next step, which sends them)."""

POLICY = """\
# The night shift's policy (tether policy check / explain work on this file).
[defaults]
timezone = "UTC"

[[rule]]
id = "page-at-night"
tool = "page_oncall"
when = { between = "00:00-07:00" }
decide = "approve"
reason = "waking someone at night needs a human's OK"

[[rule]]
id = "digest-in-the-morning"
tool = "send_digest"
when = { between = "00:00-07:00" }
decide = "defer"
reason = "the digest can wait for the morning: quiet hours until 07:00"

[[rule]]
id = "daytime-messages"
tool = ["page_oncall", "send_digest"]
decide = "allow"
reason = "outside quiet hours"

# The router's answers are checked as it makes them (docs/monitors.md, "Invariants"): a
# ticket routed to a team must mention one of that team's words. A wrong answer is cheap
# to recognise even where a right one takes a model; the same team many times in a row is
# fine, as long as each ticket mentions it. Broken, the router is quarantined at once: it
# sends its answers a step after it makes them, so they never reach the dispatcher.
[monitors.agent.router.invariants]
stages = ["quarantine"]

[monitors.agent.router.invariants.named]
""" + f"routed_to_a_team_it_mentions = {json.dumps(ROUTED_RULE)}\n" + """
[monitors.agent.router.invariants.constants.team_words]
""" + "".join(f"{team} = {json.dumps(list(words))}\n" for team, words in TEAM_WORDS)
"""The night's policy: quiet hours, and the invariant that catches the router."""


# -- the agents -----------------------------------------------------------------

def ingest_step(ctx: Any, state: dict[str, Any]) -> Any:
    """Drop this hour's tickets into the inbox, then sleep an hour (sync on purpose)."""
    now = ctx.now()
    hour = _hour(now)
    if hour not in state.setdefault("hours_done", []):
        if hour == 0:
            ctx.call(fs_mkdir, path="inbox")
        batch = []
        for n, text in enumerate(TICKETS.get(hour, [])):
            name = f"{_arrivals(now)}{n}-{_slug(text)}.txt"
            ctx.call(fs_write, path=name, content=text + "\n")
            batch.append({"file": name, "text": text})
            state["tickets"] = state.get("tickets", 0) + 1
        last = hour >= max(TICKETS)
        if batch or last:  # the hour's tickets, in one message, for the router
            ctx.send("router", {"at": _clock(now), "tickets": batch, "last": last},
                     topic="tickets")
        state["hours_done"].append(hour)
    if hour >= max(TICKETS):
        return Done(f"{state.get('tickets', 0)} tickets delivered")
    return SleepUntil(NIGHT_START + (hour + 1) * HOUR)


async def triage_step(ctx: Any, state: dict[str, Any]) -> Any:
    """Classify new tickets with the model, file them, sleep half an hour."""
    now = await ctx.now()
    if now < NIGHT_START + HOUR / 2:  # the librarian and ingest set up at 21:00
        return SleepUntil(NIGHT_START + HOUR / 2)
    files = await ctx.call(fs_list, path="inbox")
    # Tickets ingest drops at this very moment wait for the next wake-up: both runs wake on
    # the hour, and which of them the worker happens to get to the workspace first must
    # not decide when a ticket is triaged (nor at which step triage asks for approval).
    for path in [f for f in files if not f.startswith(_arrivals(now))]:
        text = (await ctx.call(fs_read, path=path)).strip()
        resp = await ctx.model([
            {"role": "system", "content": "You triage support tickets. Answer with one word: "
                                          "urgent or routine."},
            {"role": "user", "content": f"Classify this support ticket:\n{text}"}])
        label = "urgent" if "urgent" in (resp.content or "").lower() else "routine"
        await ctx.call(fs_append, path="notes/triage.md",
                       content=f"- [{_clock(now)}] {label}: {text}\n")
        if label == "urgent" and "security" in text.lower():
            # Security incidents page the on-call engineer: irreversible, and at night the
            # policy asks a human first (see POLICY).
            await ctx.call(page_oncall, message=text)
        await ctx.call(fs_move, src=path, dst="done/" + path.split("/", 1)[1])
        state.setdefault("handled", []).append({"ticket": path, "label": label})
    if now >= MORNING - HOUR / 2:
        return Done(f"{len(state.get('handled', []))} tickets triaged")
    return SleepUntil(now + HOUR / 2)


async def reporter_step(ctx: Any, state: dict[str, Any]) -> Any:
    """At 06:00, write the digest with the model and send it (irreversible)."""
    now = await ctx.now()
    if now < MORNING:
        return SleepUntil(MORNING)
    notes = await ctx.call(fs_read, path="notes/triage.md")
    resp = await ctx.model([
        {"role": "system", "content": "You write short morning digests for the on-call lead."},
        {"role": "user", "content": "Write the morning digest from these notes:\n" + notes}])
    await ctx.call(send_digest, to="oncall-lead@example.com", subject="Overnight digest",
                   body=resp.content or "")
    state["sent"] = True
    return Done("digest sent")


def _await_tickets(took_some: bool = True) -> AwaitMessages:
    """Sleep until the next message, but no later than the morning (a safety net: the
    night's last batch is handled by then whatever happens). A wake-up that took nothing
    waits with no deadline."""
    return AwaitMessages(until=MORNING if took_some else None)


async def router_step(ctx: Any, state: dict[str, Any]) -> Any:
    """Ask the model which team each ticket ingest sends is for; tell the dispatcher.

    The answers are made in one step and sent in the next: the policy's invariant is
    checked when a step ends, so a wrong answer is caught before anyone acts on it."""
    if not state.get("listening"):
        state["listening"] = True  # nothing can have arrived before the night starts
        return _await_tickets()
    out = state.pop("outgoing", None)
    if out is not None:  # made (and checked) last step: send it
        await ctx.send("dispatcher", out, topic="routed")
        n = len(state.get("history", []))
        return Done(f"{n} tickets routed") if out["last"] else _await_tickets()
    history: list[dict[str, str]] = state.setdefault("history", [])
    routed, last = [], False
    msgs = await ctx.receive()
    for msg in msgs:
        last = last or bool(msg.body.get("last"))
        for t in msg.body.get("tickets", []):
            convo: list[Message] = [{"role": "system", "content": ROUTE_PROMPT}]
            for h in history:  # the whole conversation, to stay consistent
                convo += [{"role": "user", "content": f"Route this ticket:\n{h['text']}"},
                          {"role": "assistant", "content": h["team"]}]
            convo.append({"role": "user", "content": f"Route this ticket:\n{t['text']}"})
            team = team_of((await ctx.model(convo)).content)
            history.append({"text": t["text"], "team": team})
            routed.append({"file": t["file"], "text": t["text"], "at": msg.body["at"],
                           "team": team})
    if routed or last:
        state["outgoing"] = {"routed": routed, "last": last}
        return Continue()
    return _await_tickets(bool(msgs))


async def dispatcher_step(ctx: Any, state: dict[str, Any]) -> Any:
    """Put each routed ticket in its team's queue file; keep ``queues/index.md`` current."""
    if not state.get("ready"):
        await ctx.call(fs_mkdir, path="queues")
        state["ready"] = True
        return _await_tickets()
    counts: dict[str, int] = state.setdefault("counts", {})
    last, changed = False, False
    msgs = await ctx.receive()
    for msg in msgs:
        last = last or bool(msg.body.get("last"))
        for item in msg.body.get("routed", []):
            await ctx.call(fs_append, path=f"queues/{item['team']}.md", content=queue_line(item))
            counts[item["team"]] = counts.get(item["team"], 0) + 1
            changed = True
    if changed:
        await ctx.call(fs_write, path="queues/index.md", content=queue_index(counts))
    return Done(f"{sum(counts.values())} tickets queued") if last else _await_tickets(bool(msgs))


def build(model: Model) -> dict[str, AgentLike]:
    """The demo's agents by reference, all on ``model``."""
    files = [fs_list, fs_read, fs_write, fs_append, fs_mkdir, fs_move]
    return {
        "tether.demo.agents:ingest": StepAgent(ingest_step, name="ingest", tools=files),
        "tether.demo.agents:triage": StepAgent(triage_step, name="triage",
                                               tools=[*files, page_oncall], model=model),
        "tether.demo.agents:reporter": StepAgent(reporter_step, name="reporter",
                                                 tools=[fs_read, send_digest], model=model),
        "tether.demo.agents:librarian": Agent(
            "librarian", model=model, tools=files,
            instructions="You keep the night shift's workspace tidy. Create the folders "
                         "notes/ and done/, then write notes/README.md describing them."),
        "tether.demo.agents:router": StepAgent(router_step, name="router", model=model),
        "tether.demo.agents:dispatcher": StepAgent(dispatcher_step, name="dispatcher",
                                                   tools=[fs_mkdir, fs_append, fs_write]),
    }


_default = build(scripted())
ingest = _default["tether.demo.agents:ingest"]
triage = _default["tether.demo.agents:triage"]
reporter = _default["tether.demo.agents:reporter"]
librarian = _default["tether.demo.agents:librarian"]
router = _default["tether.demo.agents:router"]
dispatcher = _default["tether.demo.agents:dispatcher"]
