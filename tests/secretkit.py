"""A corpus of real-looking secrets, and a swarm that passes them around (for the
redaction tests; the crash test's worker subprocess imports the agents from here).

``leaker`` writes every secret to the blackboard, sends it to ``inbox`` in a message
(its topic holds one too), then calls ``hold``, an idempotent effect: with
``$SECRETKIT_KILL=1`` the tool SIGKILLs its own process there, after the message and
the write are durable (they commit with the effect's intent), so the re-run step
replays them from the journal. ``inbox`` waits for the message, reads the board and
keeps what it got in its state.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from tests import crashkit as ck
from tether import AwaitMessages, Done, StepAgent, tool

# Real-looking, made up: the shapes providers issue (none of these is a live credential).
SECRETS = {
    "openai_key": "sk-proj-Zq7Tg2mW9xLr4VbN8cK1pQ3sY6dF0hJ5aE2uI7oR",
    "openai_legacy": "sk-4fKq9ZtW2mXr7VbN1cLp3sY8dG6hJ0aE5uI2oRkT",
    "anthropic_key": "sk-ant-api03-Xk2pLm9QrT4vWz7bN1cY5dF8gH3jK6aS0eU-9qQ",
    "aws_access_key_id": "AKIAQ3EGRT7VXW2MBN4P",
    "aws_secret_access_key": "aws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY1",
    "github_token": "ghp_R4nd0mLo0k1ngT0kenV4lue0123456789abcd",
    "github_pat": "github_pat_11ABCDEFG0abcdefghijkl_MNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz012345",
    "slack_token": "xoxb-2048123456-5012345678901-Qh7bT2nV8mK3pL9sR4wX1cZ6",
    "slack_webhook": "https://hooks.slack.com/services/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",
    "jwt": ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6Ik"
            "pvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
    "private_key": ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUA"
                    "AAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----"),
    "bearer_token": "Authorization: Bearer 8f2KqZ7tW1mXr9VbN3cLp5sY0dG4hJ6aE",
}
"""The part of each value that must not reach the store: all of it but a label."""

TICKET = "tok_q7tg2mw9xlr4vbn8ck1pq3sy"
"""A secret only the policy's own pattern knows (``ticket_token``)."""

POLICY = ('[[rule]]\nid = "allow-all"\ndecide = "allow"\n\n'
          '[redaction]\npatterns = { ticket_token = "tok_[a-z0-9]{24}" }\n')
"""Every tool allowed (these tests are not about approvals), and one pattern of its own."""

ALL = "\n".join([*SECRETS.values(), f"ticket {TICKET}"])
"""Every secret of the corpus in one text."""

KILL_ENV = "SECRETKIT_KILL"


def needle(text: str) -> str:
    """The secret inside a sample (the label before it may stay)."""
    for lead in ("aws_secret_access_key = ", "Authorization: Bearer "):
        text = text.removeprefix(lead)
    return text.splitlines()[1] if "PRIVATE KEY" in text else text


def needles() -> dict[str, str]:
    """Every secret to search a store's bytes for, by name."""
    return {**{n: needle(s) for n, s in SECRETS.items()}, "ticket_token": TICKET}


@tool(effect="irreversible", idempotent=True)
def hold(note: str) -> str:
    """An effect after the send (SIGKILLs its process first under ``$SECRETKIT_KILL``)."""
    if os.environ.get(KILL_ENV) == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    ck._side("hold")
    return note


async def _leak(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.board.set("creds", {"all": ALL, "region": "eu-west-1"})
    await ctx.send("inbox", {"text": ALL, "n": 1}, topic=f"keys {SECRETS['github_token']}")
    await ctx.send("inbox", "hello")  # nothing to redact: the plain fingerprint
    await ctx.call(hold, note="after the send")
    state["sent"] = 2
    return Done()


async def _inbox(ctx: Any, state: dict[str, Any]) -> Any:
    got = await ctx.receive()
    state.setdefault("got", []).extend({"topic": m.topic, "body": m.body} for m in got)
    if len(state["got"]) < 2:
        return AwaitMessages()
    entry = await ctx.board.get("creds")
    state["board"] = entry.value if entry is not None else None
    return Done()


leaker = StepAgent(_leak, name="leaker", tools=[hold])
inbox = StepAgent(_inbox, name="inbox")
