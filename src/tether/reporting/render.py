"""The night report as text, Markdown or one self-contained HTML file.

All three come from the same sections (:func:`sections`), so they say the
same things in the same order: what waits for a human first, then each swarm
and agent, the approvals, the alerts. Times are shown in the reader's chosen
zone and the header says they are the runs' own clocks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from html import escape

from tether.reporting.overnight import NightReport, RunNight
from tether.reporting.timeline import svg

FORMATS = ("text", "md", "html")


@dataclass(slots=True)
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    """Bullet items (Markdown-free text)."""
    sub: list[Section] = field(default_factory=list)


def _t(text: str, tz: dt.tzinfo) -> str:
    """An ISO time from the journal, in ``tz``, to the minute."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _bound(t: float | None, tz: dt.tzinfo) -> str:
    return "the beginning" if t is None else \
        dt.datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M")


def title(report: NightReport, tz: dt.tzinfo) -> str:
    return f"What happened from {_bound(report.since, tz)} to {_bound(report.until, tz)}" \
        if report.until is not None else f"What happened since {_bound(report.since, tz)}"


def sections(report: NightReport, tz: dt.tzinfo) -> list[Section]:
    """The report's content, in reading order."""
    out = [_waiting(report, tz), *_swarms(report)]
    if not report.swarms:
        out.append(Section("Runs", ["no run journaled anything in this window"]))
    return [*out, _approvals(report, tz), _alerts(report, tz)]


def _waiting(report: NightReport, tz: dt.tzinfo) -> Section:
    waiting = Section(f"Waiting for a human ({len(report.waiting)})")
    waiting.lines = [f"{w.what}: {w.run} since {_t(w.since, tz)}: {_short(w.detail)} -> "
                     f"`{w.command}`" for w in report.waiting] or [
        "nothing: no approval, doubt, pause, quarantine or unacked alert is waiting"]
    return waiting


def _swarms(report: NightReport) -> list[Section]:
    out = []
    for swarm, agents in report.swarms.items():
        s = Section(f"Swarm {swarm}")
        shared = report.shared.get(swarm)
        if shared:
            s.lines.append("shared budget: " + shared)
        for agent, runs in agents.items():
            sec = Section(f"Agent {agent}")
            for r in runs:
                sec.lines.append(_run_line(r))
                sec.lines += [f"  {x}" for x in _run_details(r)]
            s.sub.append(sec)
        out.append(s)
    return out


def _approvals(report: NightReport, tz: dt.tzinfo) -> Section:
    asked = Section(f"Approvals asked ({len(report.approvals)})")
    for a in report.approvals:
        head = f"{_t(a.asked, tz)} {a.name}: {a.tool} ({a.effect}), rule {a.rule}"
        if a.decision is None:
            asked.lines.append(f"{head}: still pending")
            continue
        secs = a.waited or 0.0
        waited = f"{secs / 60:.0f} min" if secs >= 60 else f"{secs:.0f} s"
        asked.lines.append(f"{head}: {a.decision} by {a.by} after {waited}"
                           + (f" ({a.note})" if a.note else ""))
    return asked


def _alerts(report: NightReport, tz: dt.tzinfo) -> Section:
    al = Section(f"Alerts ({len(report.alerts)})")
    for x in report.alerts:
        done = ", ".join(x["done"]) or "nothing else"
        acked = f"acked by {x['acked_by']}" if x.get("acked_by") else "not acked"
        al.lines.append(f"{_t(x['time'], tz)} {x['name']} step {x['step']}: {x['monitor']} "
                        f"({x['rule']}) {x['verdict']}: {_short(x['message'])} -> then: "
                        f"{done}; {acked} [{x['id']}]")
    return al


def _run_line(r: RunNight) -> str:
    eff = ", ".join(f"{n} {k}" for k, n in sorted(r.effects.items())) or "no effects"
    return (f"{r.name} ({r.row.id}), now {r.row.status}: {r.steps} steps, {eff}"
            + (f", {r.undone} undone" if r.undone else "")
            + (f", {r.failed} failed" if r.failed else ""))


def _short(text: str, width: int = 160) -> str:
    """A reason or message cut to one readable line (`tether show` has it whole)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _run_details(r: RunNight) -> list[str]:
    out = []
    if r.decisions:
        out.append("gate: " + ", ".join(f"{n} {k}" for k, n in sorted(r.decisions.items())))
    out += [f"denied: {_short(d)}" for d in r.denied[:5]]
    if r.model_calls:
        out.append(f"model: {r.model_calls} calls, {r.input_tokens} in / {r.output_tokens} "
                   f"out tokens, ${r.cost_usd:.4f}")
    spend = r.spending()
    if spend:
        out.append("budget: " + spend)
    out += [f"rollback {x}" for x in r.rollbacks]
    out += [f"quarantined {_short(x)}" for x in r.quarantines]
    out += [f"paused: {_short(x)}" for x in r.pauses[-3:]]
    return out


def text(report: NightReport, tz: dt.tzinfo) -> str:
    lines = [title(report, tz), _clock_note(report, tz), ""]
    for s in sections(report, tz):
        lines += _text_section(s, 0)
    return "\n".join(lines).rstrip() + "\n"


def _text_section(s: Section, depth: int) -> list[str]:
    pad = "  " * depth
    out = [pad + s.title]
    out += [f"{pad}  - {x}" if not x.startswith("  ") else f"{pad}    {x.strip()}"
            for x in s.lines]
    for sub in s.sub:
        out += _text_section(sub, depth + 1)
    return [*out, ""] if depth == 0 else out


def markdown(report: NightReport, tz: dt.tzinfo) -> str:
    lines = [f"# {title(report, tz)}", "", _clock_note(report, tz), ""]
    for s in sections(report, tz):
        lines += _md_section(s, 2)
    return "\n".join(lines).rstrip() + "\n"


def _md_section(s: Section, level: int) -> list[str]:
    out = ["#" * level + " " + s.title, ""]
    out += [f"- {_md(x)}" if not x.startswith("  ") else f"  - {_md(x.strip())}"
            for x in s.lines]
    if s.lines:
        out.append("")
    for sub in s.sub:
        out += _md_section(sub, level + 1)
    return out


def _md(x: str) -> str:
    """Agents' text must not become markup: escape what Markdown would read outside the
    `command` spans (inside them a backslash would show)."""
    parts = x.split("`")
    for i in range(0, len(parts), 2):
        for ch in "\\*_[]<>|#":
            parts[i] = parts[i].replace(ch, "\\" + ch)
    return "`".join(parts)


def html(report: NightReport, tz: dt.tzinfo) -> str:
    body = [f"<h1>{escape(title(report, tz))}</h1>",
            f"<p class=note>{escape(_clock_note(report, tz))}</p>",
            "<h2>Timeline</h2>", f"<figure>{svg(report, tz)}</figure>"]
    for s in sections(report, tz):
        body += _html_section(s, 2)
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{escape(title(report, tz))}</title>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;"
            "padding:0 1em;color:#111827}h2{border-bottom:1px solid #e5e7eb}"
            "li{margin:.2em 0}code{background:#f3f4f6;padding:0 .2em}"
            ".note{color:#4b5563}figure{margin:0;overflow-x:auto}"
            "li.sub{margin-left:1.5em;list-style:circle;color:#374151}</style></head><body>"
            + "".join(body) + "</body></html>\n")


def _html_section(s: Section, level: int) -> list[str]:
    out = [f"<h{level}>{escape(s.title)}</h{level}>"]
    if s.lines:
        items = []
        for x in s.lines:
            cell = escape(x.strip())
            # `command` in a line is code to copy
            parts = cell.split("`")
            cell = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
            items.append(f"<li{' class=sub' if x.startswith('  ') else ''}>{cell}</li>")
        out.append("<ul>" + "".join(items) + "</ul>")
    for sub in s.sub:
        out += _html_section(sub, min(level + 1, 6))
    return out


def _clock_note(report: NightReport, tz: dt.tzinfo) -> str:
    return (f"Times are in {tz} and are the runs' own clocks, as the journal holds them "
            f"(a simulated night shows simulated times); {report.events} events in the "
            "window. What waits for a human is as of now.")


def render(report: NightReport, fmt: str, tz: dt.tzinfo) -> str:
    """``report`` in ``fmt`` (one of :data:`FORMATS`)."""
    return {"text": text, "md": markdown, "html": html}[fmt](report, tz)
