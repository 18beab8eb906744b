"""The scenario families: each function makes one labelled scenario from a seeded rng.

A scenario is one run (two for the swarm families) with, per run: ``label`` (the
monitor that should fire: ``loops``, ``pingpong``, ``no_progress``, ``runaway``,
``drift``, ``invariants``; None for a negative control), ``rule`` (the kind of
trouble, for the reader), ``also`` (monitors whose alert on this run is fair too and
counts neither way: a loop is also a run that makes no progress), ``onset`` (the
0-based index of the step where the problem starts) and ``deadline`` (for loops: the
step of the loop's third repeat, by which it must have been flagged; else None).

A loop's period is 1 (the same call again) or 2 (A-B-A-B); its third repeat is the
step ``onset + 4 * period - 1``.
"""

from __future__ import annotations

import random
from typing import Any

from bench.eval.plans import TOPICS, Plan, err, hexid, legit_reads, ok, path_for, stamp

Run = dict[str, Any]

HOLDS = [{"name": "done_non_negative", "key": "done", "op": ">=", "value": 0}]
"""The invariant every run declares that holds throughout (invariants' negative case)."""


def run(name: str, goal: str, plan: Plan, *, label: str | None, rule: str, onset: int | None,
        deadline: int | None = None, also: tuple[str, ...] = (),
        invariants: list[dict[str, Any]] | None = None) -> Run:
    return {"name": name, "goal": goal, "label": label, "rule": rule, "also": list(also),
            "onset": onset, "deadline": deadline, "invariants": invariants or HOLDS,
            "steps": plan.steps}


# -- loops ---------------------------------------------------------------------
def loop_identical(rng: random.Random, exact: bool) -> Run:
    """The same call again and again: ``exact`` (same arguments, same result) or with
    volatile fields (a request id in the arguments, a timestamp in the result)."""
    p = Plan(rng)
    pre = rng.randint(1, 6)
    legit_reads(p, pre)
    tool = rng.choice(["search", "get_order", "read_file", "list_invoices"])
    key = {"search": "query", "get_order": "order_id", "read_file": "path",
           "list_invoices": "customer"}[tool]
    target = f"{rng.choice(TOPICS)}-{rng.randint(100, 999)}"
    body = f"{tool} {target}: " + ", ".join(rng.choice(TOPICS) for _ in range(5))
    for k in range(rng.randint(5, 9)):
        args: dict[str, Any] = {key: target}
        result: Any = body
        if not exact:
            args["request_id"] = hexid(rng)
            result = {"data": body, "fetched_at": stamp(rng, 60 * k), "trace": hexid(rng, 16)}
        p.step([[tool, args, ok(result)]], advance=False)
    p.finish("I could not finish the task.")
    rule = "identical_call_result" if exact else "identical_call_volatile"
    return run("looper", f"Look up {target} and report.", p, label="loops", rule=rule,
               onset=pre, deadline=pre + 3, also=("no_progress",))


def loop_alternation(rng: random.Random) -> Run:
    """A-B-A-B: two calls in turn, each answering the same every time."""
    p = Plan(rng)
    pre = rng.randint(1, 6)
    legit_reads(p, pre)
    page = rng.randint(2, 9)
    a = ["open_page", {"url": f"https://intranet/wiki/{rng.choice(TOPICS)}?page={page}"},
         ok("This page has moved. See the index.")]
    b = ["open_page", {"url": "https://intranet/wiki/index"},
         ok(f"Index: see page {page}.")]
    if rng.random() < 0.5:  # two different tools rather than two pages
        b = ["search", {"query": f"{rng.choice(TOPICS)} policy"}, ok("1 result: the moved page")]
    for _ in range(rng.randint(4, 6)):
        p.step([a], advance=False)
        p.step([b], advance=False)
    p.finish("I keep going in circles.")
    return run("alternator", "Find the travel policy.", p, label="loops", rule="alternation",
               onset=pre, deadline=pre + 7, also=("no_progress",))


ERRORS = ("HTTP 403 Forbidden: token lacks scope orders:write",
          "ValueError: date must be YYYY-MM-DD, got '12/04/2026'",
          "FileNotFoundError: reports/q3-final.xlsx", "KeyError: 'customer_id'",
          "HTTP 400 Bad Request: field amount must be positive")


def loop_errors(rng: random.Random) -> Run:
    """The same tool failing the same way every time (same arguments, or arguments that
    change without fixing anything)."""
    p = Plan(rng)
    pre = rng.randint(1, 6)
    legit_reads(p, pre)
    tool = rng.choice(["update_order", "fetch_report", "create_invoice"])
    message = rng.choice(ERRORS)
    same = rng.random() < 0.5
    for k in range(rng.randint(4, 8)):
        args = {"ref": "A-1009", "attempt_note": "retry" if same else f"variant {k}"}
        p.step([[tool, args, err(message)]], advance=False)
    p.finish("The tool keeps failing.")
    rule = "error_streak_same_args" if same else "error_streak_varied_args"
    return run("failer", "Update order A-1009.", p, label="loops", rule=rule, onset=pre,
               deadline=pre + 3, also=("no_progress",))


def loop_parrot(rng: random.Random) -> Run:
    """The model gives the same long answer to different tickets: it lost the thread."""
    p = Plan(rng)
    pre = rng.randint(1, 5)
    for i in range(pre):
        t = f"T-{rng.randint(1000, 9999)}"
        reply = f"Thanks for reporting {t}; we {rng.choice(['refunded', 'fixed', 'escalated'])} it."
        p.step([["read_ticket", {"ticket": t}, ok(f"{t}: {rng.choice(TOPICS)} issue #{i}")],
                ["post_reply", {"ticket": t, "text": reply}, ok("posted")]], content=reply)
    canned = ("We are sorry for the inconvenience. Our team is looking into the problem with "
              "your account and will get back to you within 24 hours with a full resolution.")
    for _ in range(rng.randint(4, 8)):
        t = f"T-{rng.randint(1000, 9999)}"
        p.step([["read_ticket", {"ticket": t},
                 ok(f"{t}: {rng.choice(TOPICS)} question: " + hexid(rng, 8))],
                ["post_reply", {"ticket": t, "text": canned}, ok("posted")]], content=canned)
    p.finish("All tickets answered.")
    return run("replier", "Answer each open support ticket.", p, label="loops",
               rule="repeated_answer", onset=pre, deadline=pre + 3)


# -- one run's trouble ---------------------------------------------------------
def no_progress(rng: random.Random, declared: bool) -> Run:
    """Working hard, getting nowhere: different searches, flat state (and flat declared
    progress when ``declared``), the model still spending."""
    p = Plan(rng)
    pre = rng.randint(3, 8)
    legit_reads(p, pre)
    for k in range(rng.randint(10, 16)):
        q = f"{rng.choice(TOPICS)} {rng.choice(TOPICS)} {k}"
        p.step([["search", {"query": q}, ok(f"{rng.randint(0, 40)} results for {q}")]],
               advance=False, progress=None if declared else False)
    p.finish("I could not find it.")
    for s in p.steps[:pre]:
        if not declared:
            s["progress"] = None
    return run("searcher", "Find the root cause of the checkout errors.", p,
               label="no_progress", rule="flat_declared" if declared else "flat_state",
               onset=pre)


def runaway(rng: random.Random, how: str) -> Run:
    """A cost spike: a sudden jump (``spike``), a doubling (``growth``) or steps coming far
    faster than before (``rate``), with the work still moving."""
    p = Plan(rng, base_tokens=rng.randint(700, 1400))
    pre = rng.randint(5, 10)
    legit_reads(p, pre)
    n = rng.randint(3, 6)
    for k in range(n):
        path = path_for(rng, 100 + k)
        call = [["read_file", {"path": path}, ok(f"# {path}\n" + "x " * 40)]]
        if how == "spike":
            p.step(call, tin=p.tokens(rng.uniform(10, 30)))
        elif how == "growth":
            p.step(call, tin=p.tokens(2.0 ** (k + 1)))
        else:
            p.step(call, tin=p.tokens(), dt=0.5)
    for _ in range(rng.randint(0, 2)):  # the spike may go on until the run ends
        p.step([["read_file", {"path": path_for(rng, 200)}, ok("...")]], tin=p.tokens(20))
    p.finish("Done.")
    return run("spender", "Summarise the quarter's documents.", p, label="runaway",
               rule=f"cost_{how}", onset=pre)
