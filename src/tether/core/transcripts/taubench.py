"""tau-bench trajectories: ``{"task_id", "trial", "reward", "info", "traj"}`` per run,
``traj`` an OpenAI chat-format message list (sierra-research/tau-bench's
``historical_trajectories``).

The environment reports a tool that raised as a tool message ``Error: ...``
(tau-bench's ``Env.step``), so such a result is journaled as the tool's error,
as tether journals a tool that raised. ``reward`` (1.0 success, 0.0 failure)
becomes the run's outcome; the ground-truth actions are left out (they are the
grader's, not what the agent did).
"""

from __future__ import annotations

from typing import Any, Final

from tether.core.transcripts.chat import goal_of, read_messages
from tether.core.transcripts.model import Transcript
from tether.errors import InvalidTranscript

ERROR_PREFIX: Final = "Error: "


def tool_error(content: str) -> str | None:
    """tau-bench's convention for a tool that raised."""
    return content[len(ERROR_PREFIX):] if content.startswith(ERROR_PREFIX) else None


def from_taubench(value: Any, record: int) -> Transcript:
    """One tau-bench trajectory record."""
    if not isinstance(value, dict):
        raise InvalidTranscript(record, "", "a tau-bench record must be an object with "
                                f"traj, task_id and reward, not {type(value).__name__}")
    if "traj" not in value:
        raise InvalidTranscript(record, "traj", "missing: the message list of the run")
    reward = value.get("reward")
    if reward is not None and not isinstance(reward, int | float):
        raise InvalidTranscript(record, "reward", f"{reward!r} is not a number")
    turns, trailing = read_messages(value["traj"], record, where="traj", error_of=tool_error)
    outcome: dict[str, Any] = {}
    if reward is not None:
        outcome = {"reward": float(reward), "success": float(reward) >= 1.0}
    meta = {k: value[k] for k in ("task_id", "trial") if k in value}
    info = value.get("info")
    if isinstance(info, dict) and isinstance(info.get("task"), dict):
        user = info["task"].get("user_id")
        if isinstance(user, str):
            meta["user_id"] = user
    return Transcript(record=record, format="tau-bench", turns=tuple(turns),
                      goal=goal_of(value["traj"]), agent="tau-bench",
                      trailing=tuple(trailing), outcome=outcome, meta=meta)
