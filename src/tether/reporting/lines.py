"""Text for people: one line per journal event, cut to fit a terminal or a web page.

Pure functions from records to strings; the commands print them. A summary
keeps what an operator reads first (the tool and its arguments, the model's
answer, the error, the wake time) and drops what only a machine needs (call
indexes, fingerprints, hashes, tracebacks); ``--full`` shows the payload whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from tether.core.events import Event
from tether.core.ids import parse_iso

_NOISE = frozenset({"i", "fp", "traceback", "hash", "spec", "checkpoint", "after", "undo",
                    "policy_hash"})
"""Payload fields a one-line summary leaves out (``--full`` shows them)."""


def compact(value: Any) -> str:
    """A JSON value on one line; a string as it is."""
    if isinstance(value, str):
        return " ".join(value.split())
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, ending in an ellipsis when cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


def room(width: int, rows: Sequence[Mapping[str, str]], cols: Sequence[str],
         flexible: str, *, least: int = 12) -> int:
    """Characters left for column ``flexible`` in a rich table (default box, a space of
    padding each side) ``width`` wide whose other ``cols`` show ``rows`` whole; at least
    ``least``."""
    fixed = sum(3 + max(len(c), *(len(r[c]) for r in rows)) for c in cols if c != flexible)
    return max(least, width - 1 - fixed - 3)


def at(t: Any) -> str:
    """A wake time or deadline (seconds since the epoch) for people, or ``-``."""
    if not isinstance(t, int | float) or isinstance(t, bool):
        return "-"
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(t)


def journal_at(text: Any) -> str:
    """A time as the journal holds it (ISO-8601 UTC, the run's clock) in :func:`at`'s
    form, or ``-``; a text that is no such time, as it is."""
    if not isinstance(text, str):
        return "-"
    try:
        return at(parse_iso(text))
    except ValueError:
        return text


def arguments(args: Any) -> str:
    """A tool's arguments as ``key=value, ...`` (strings bare), on one line."""
    if isinstance(args, dict):
        return ", ".join(f"{k}={compact(v)}" for k, v in args.items())
    return compact(args)


def _call(tool: Any, args: Any) -> str:
    return f"{tool}({arguments(args)})"


def _model(p: dict[str, Any]) -> str:
    resp = p.get("response") or {}
    calls = resp.get("tool_calls") or []
    said = " ".join(_call(c.get("name"), _args(c.get("arguments"))) for c in calls)
    if resp.get("content"):
        said = f"{compact(resp['content'])!r}" + (f" {said}" if said else "")
    usage = resp.get("usage") or {}
    tokens = int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
    cost = p.get("cost_usd")
    money = f" ${cost:.5f}" if isinstance(cost, int | float) else ""
    return f"{p.get('model')}: {said or '(empty answer)'}  [{tokens} tok{money}]"


def _args(raw: Any) -> Any:
    """A model's raw argument text, parsed when it is JSON (it usually is)."""
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def _pairs(p: dict[str, Any]) -> str:
    kept = {k: v for k, v in p.items() if k not in _NOISE}
    if len(kept) == 1 and ("error" in kept or "reason" in kept):
        return compact(next(iter(kept.values())))  # the words say it all
    return " ".join(f"{k}={compact(v)}" for k, v in kept.items())


def summary(e: Event) -> str:
    """What an event says, on one line (not cut: :func:`cut` it to the room left)."""
    p = e.payload
    if p is None:
        return "(payload erased)"
    if not isinstance(p, dict):
        return compact(p)
    k = e.kind
    if k == "model.called":
        return _model(p)
    if k in ("tool.called", "effect.intent"):
        text = _call(p.get("tool"), p.get("arguments", _args(p.get("raw_arguments"))))
        if "error" in p:
            return f"{text} failed: {compact(p['error'])}"
        return text + (f" → {compact(p['result'])}" if "result" in p else "")
    if k == "effect.done":
        return f"→ {compact(p.get('result'))}"
    if k in ("run.sleeping", "step.finished") and p.get("until") is not None:
        rest = _pairs({key: v for key, v in p.items() if key != "until"})
        return f"until {at(p['until'])}" + (f" {rest}" if rest else "")
    if k == "policy.decided":
        rule = f" by rule {p['rule']}" if p.get("rule") else ""
        return f"{p.get('verdict')} {p.get('tool')} ({p.get('effect')}){rule}: " \
               f"{compact(p.get('reason'))}"
    if k == "message.received" and isinstance(p.get("messages"), list):
        bodies = " ".join(compact(m.get("body")) for m in p["messages"] if isinstance(m, dict))
        return f"{len(p['messages'])} message(s): {bodies}"
    if k == "run.started":
        return f"{p.get('name')} ({p.get('agent')}): {compact(p.get('goal'))}"
    if k == "alert":
        return (f"{p.get('verdict')} by {p.get('monitor')} ({p.get('rule')}, stage "
                f"{p.get('stage')}): {compact(p.get('message'))}")
    if k == "monitor.answer":
        return _answer(p)
    return _pairs(p)


def _answer(p: dict[str, Any]) -> str:
    """A monitor's answer without its vectors (a line of numbers says nothing)."""
    head, ask = f"{p.get('monitor')} {p.get('kind')} {p.get('model')}", f"(ask {p.get('ask')})"
    got = p.get("answer") if isinstance(p.get("answer"), dict) else {}
    if p.get("error") or not got:
        return f"{head} failed: {compact(p.get('error'))} {ask}"
    if isinstance(got.get("vectors"), list):
        sizes = sorted({len(v) for v in got["vectors"] if isinstance(v, list)})
        return f"{head}: {len(got['vectors'])} vector(s) of {'/'.join(map(str, sizes))} {ask}"
    return f"{head}: {compact(got.get('content'))} {ask}"


def _head(seq: str, time: str, kind: str, epoch_step: str, actor: str, *, wide: bool) -> str:
    if wide:
        return f"{seq:>5}  {time:<19}  {epoch_step:<10} {cut(actor, 18):<18} {kind:<19} "
    return f"{seq:>4} {time[-8:]:<8} {kind:<17} "


def header(width: int, *, wide: bool) -> str:
    """The column names above :func:`event_line` lines."""
    return cut(_head("seq", "time", "kind", "epoch.step", "actor", wide=wide) + "summary", width)


def event_line(e: Event, width: int, *, wide: bool) -> str:
    """One event as one line of at most ``width`` characters (the summary is cut)."""
    head = _head(str(e.seq), f"{e.time[:10]} {e.time[11:19]}", e.kind, f"{e.epoch}.{e.step}",
                 e.actor, wide=wide)
    return head + cut(summary(e), max(10, width - len(head)))


def full_payload(e: Event) -> str:
    """The whole payload, indented JSON (for ``--full``)."""
    if e.payload is None:
        return "(payload erased)"
    return orjson.dumps(e.payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
