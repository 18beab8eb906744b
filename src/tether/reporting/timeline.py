"""The night as a picture: runs as lanes, their marks on a shared time axis, as SVG.

Self-contained (no script, no external font or stylesheet), so the HTML report
can be mailed and opened anywhere. Every mark has a ``<title>`` (its label and
time), which browsers show on hover and screen readers read.
"""

from __future__ import annotations

import datetime as dt
from html import escape

from tether.reporting.overnight import Mark, NightReport

LANE = 26
LEFT = 170
WIDTH = 960

#: Fill per mark (effects by class, alerts by verdict); shapes tell kinds apart too.
COLOURS = {"read": "#9aa5b1", "reversible": "#3b82f6", "compensable": "#8b5cf6",
           "irreversible": "#dc2626", "undone": "#16a34a", "failed": "#f97316",
           "asked": "#eab308", "decided": "#a16207", "paused": "#64748b",
           "resumed": "#94a3b8", "quarantined": "#7f1d1d", "released": "#0f766e",
           "rollback": "#15803d", "stopped": "#111827", "finished": "#111827",
           "alert": "#f59e0b", "block": "#ea580c", "pause": "#dc2626",
           "quarantine": "#7f1d1d", "stop": "#111827"}


def svg(report: NightReport, tz: dt.tzinfo) -> str:
    """The timeline of ``report`` (an empty picture saying so when nothing happened)."""
    runs = [r for r in report.runs if r.marks]
    if not runs or report.first is None or report.last is None:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="40" '
                'role="img"><text x="8" y="24" font-family="sans-serif" font-size="13">'
                'nothing happened in this window</text></svg>')
    t0, t1 = report.first, max(report.last, report.first + 60)
    span = t1 - t0
    height = 40 + LANE * len(runs) + 24

    def x(t: float) -> float:
        return LEFT + (WIDTH - LEFT - 16) * (t - t0) / span

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" role="img" font-family="sans-serif" '
           'font-size="12"><title>Timeline of the window: one lane per run</title>']
    for i, tick in enumerate(_ticks(t0, t1)):
        tx = x(tick)
        label = dt.datetime.fromtimestamp(tick, tz).strftime("%H:%M")
        out.append(f'<line x1="{tx:.1f}" y1="24" x2="{tx:.1f}" y2="{height - 20}" '
                   f'stroke="#e5e7eb"/><text x="{tx:.1f}" y="16" text-anchor="middle" '
                   f'fill="#374151" data-tick="{i}">{label}</text>')
    for lane, r in enumerate(runs):
        y = 40 + LANE * lane
        out.append(f'<text x="8" y="{y + 4}" fill="#111827">{escape(r.name[:22])}</text>'
                   f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - 16}" y2="{y}" stroke="#d1d5db"/>')
        for m in r.marks:
            out.append(_mark(m, x(m.time), y, tz))
    out.append(_legend(height - 6))
    out.append("</svg>")
    return "".join(out)


def _mark(m: Mark, cx: float, y: float, tz: dt.tzinfo) -> str:
    colour = COLOURS.get(m.level or m.kind, COLOURS.get(m.kind, "#6b7280"))
    when = dt.datetime.fromtimestamp(m.time, tz).strftime("%H:%M:%S")
    title = f"<title>{escape(when)} {escape(m.label)}</title>"
    if m.kind == "alert":  # a triangle: alerts stand out whatever their colour
        pts = f"{cx:.1f},{y - 8} {cx - 7:.1f},{y + 6} {cx + 7:.1f},{y + 6}"
        return f'<polygon points="{pts}" fill="{colour}" data-kind="alert">{title}</polygon>'
    if m.kind in ("asked", "decided", "paused", "resumed", "quarantined", "released",
                  "stopped", "finished", "rollback"):
        return (f'<rect x="{cx - 5:.1f}" y="{y - 5}" width="10" height="10" fill="{colour}" '
                f'data-kind="{m.kind}">{title}</rect>')
    return (f'<circle cx="{cx:.1f}" cy="{y}" r="4" fill="{colour}" data-kind="{m.kind}">'
            f'{title}</circle>')


def _legend(y: float) -> str:
    items = [("irreversible", "irreversible effect"), ("reversible", "reversible effect"),
             ("undone", "undone"), ("alert", "alert (triangle)"), ("asked", "approval asked"),
             ("paused", "paused")]
    out, x = [], 8.0
    for key, text in items:
        out.append(f'<rect x="{x}" y="{y - 9}" width="9" height="9" fill="{COLOURS[key]}"/>'
                   f'<text x="{x + 13}" y="{y}" fill="#374151">{text}</text>')
        x += 14 + 7 * len(text) + 14
    return "".join(out)


def _ticks(t0: float, t1: float) -> list[float]:
    """Round times across the span: about six ticks, on whole 5, 15, 30... minutes."""
    span = t1 - t0
    step = next((s for s in (60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400)
                 if span / s <= 8), 86400.0)
    first = (int(t0 // step) + 1) * step
    return [float(t) for t in range(int(first), int(t1) + 1, int(step))]
