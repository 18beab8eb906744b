"""The policy gate: every tool call passes here before it runs.

The runtime, not the prompt, enforces the operator's rules. A decision is
journaled (``policy.decided``) with the rule and the policy's hash; ``deny``
tells the model why, ``defer`` puts the run to sleep until the window ends,
``approve`` files a durable approval request and parks the run (no worker
slot) until a human decides. On replay the journaled decision stands: an
approval granted before a crash is not asked for again, and an action runs at
most once after it (the effect rules take over from there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.core import budget as budgets
from tether.core.clock import WallClock
from tether.core.events import Event
from tether.core.fold import awaiting_reason
from tether.core.pausepoints import PausePoints
from tether.errors import AwaitApproval, Deferred, PauseRequested, ToolDenied
from tether.runtime.run_budget import RunBudget
from tether.runtime.stepping import StepRuntime
from tether.store.records import ApprovalRow
from tether.system_clock import SYSTEM_CLOCK
from tether.tools.base import Tool

if TYPE_CHECKING:
    from tether.core.policy import Decision, Policy

GATE_KINDS = ("policy.decided", "approval.requested", "approval.decided")


@dataclass(slots=True)
class Gate:
    """What the journal says about the gate of one call of the in-flight step."""

    decided: Event | None = None
    requested: Event | None = None
    answered: Event | None = None

    def empty(self) -> bool:
        return self.decided is None and self.requested is None and self.answered is None

    def add(self, e: Event) -> None:
        if e.kind == "policy.decided":
            self.decided = e
        elif e.kind == "approval.requested":
            self.requested = e
        elif e.kind == "approval.decided":
            self.answered = e


@dataclass(slots=True)
class Oversight:
    """The gate of one run being driven. ``source`` gives the policy in force; None (an
    executor built without one) means the built-in defaults, which ask before irreversible
    effects."""

    rt: StepRuntime
    budget: RunBudget
    pause_points: PausePoints
    source: Callable[[], Policy | None]
    gates: dict[int, Gate] = field(default_factory=dict)
    wall: WallClock = SYSTEM_CLOCK
    """The clock approvals expire by (people's time, whatever the run's clock)."""

    @property
    def policy(self) -> Policy:
        """The policy in force now (a worker re-reads the store's every scheduling pass)."""
        return self.source() or _builtin()

    def record(self, e: Event) -> None:
        """Index a gate event of the in-flight step (on restore)."""
        self.gates.setdefault(int(e.payload["i"]), Gate()).add(e)

    def clear(self) -> None:
        """Forget the finished step's gates: the next step's calls are decided afresh."""
        self.gates.clear()

    def _gate(self, i: int, t: Tool, args_json: dict[str, Any], step: int) -> Gate:
        """The journaled gate of this call, if it is this call's: same step, tool, arguments."""
        g = self.gates.get(i)
        if g is None:
            return Gate()
        for e in (g.decided, g.requested):
            if e is None:
                continue
            if e.step != step or e.payload.get("tool") != t.name or (
                    "arguments" in e.payload and e.payload["arguments"] != args_json):
                self.rt.nondeterminism(step, i, expected=f"{e.kind} for {e.payload.get('tool')}",
                                       got=f"a call of {t.name} with other arguments")
        return g

    async def check(self, t: Tool, args: dict[str, Any], args_json: dict[str, Any], i: int,
                    step: int) -> dict[str, Any]:
        """Return the arguments to run with, or raise to deny, defer or wait."""
        g = self._gate(i, t, args_json, step)
        ask_first = t.effect == "irreversible" and self.pause_points.before_irreversible
        if (t.effect != "irreversible" and self.policy is _builtin() and not ask_first
                and g.empty()):
            # No policy applied: the defaults allow this, as every worker would; journaling
            # a decision per read or undoable call would cost the hot path for nothing.
            return args
        # A journaled decision stands, with or without a policy loaded now.
        if g.answered is not None:
            return self._answered(t, args, g.answered)
        if g.requested is not None:
            rid = g.requested.id
            raise AwaitApproval(awaiting_reason(self.rt.journal.run, rid, t.name),
                                detail={"approval": rid, "awaiting_approval": True})
        if g.decided is not None:
            d = g.decided.payload
            if d["verdict"] == "allow":
                return args
            if d["verdict"] == "deny":
                raise ToolDenied(_denied(t.name, d.get("rule"), d.get("reason", "")))
            if d["verdict"] == "defer" and self.rt.clock() < float(d["until"]):
                raise Deferred(d.get("reason", ""), until=float(d["until"]))
            if d["verdict"] == "approve":
                return await self._request(t, args_json, i, step, d)
        return await self._decide(t, args, args_json, i, step)

    async def check_model(self, model: str, i: int, step: int) -> None:
        """Rules on model calls (``effect = "model"``, ``tool`` = the model's name), e.g. a
        budget-style rule: deny pauses the run, defer sleeps it; approve is not meaningful
        for a model call and pauses it too. Decided afresh each time: nothing ran yet."""
        policy = _model_rules(self.policy)
        if policy is None:
            return
        from tether.core.policy import Action
        row = self.rt.journal.row
        action = Action(run=row.id, agent=self.rt.agent, swarm=row.swarm, tool=model,
                        effect="model", arguments={}, at=self.rt.clock(),
                        budget_used=self._used())
        d = policy.decide(action)
        self.rt.journal.append("policy.decided", {
            "i": i, "tool": model, "effect": "model", "verdict": d.verdict, "rule": d.rule,
            "reason": d.reason, "policy_hash": policy.hash,
            **({"until": d.until} if d.verdict == "defer" else {})}, step=step)
        if d.verdict == "allow":
            return
        if d.verdict == "defer" and d.until is not None:
            await self.rt.flush()
            raise Deferred(d.reason, until=d.until)
        raise PauseRequested(f"run {row.id} step {step}: a call of model {model} was "
                             f"{d.verdict}-ed by policy rule {d.rule!r}: {d.reason}; change the "
                             "rule or the budget, then `tether resume`",
                             detail={"rule": d.rule, "verdict": d.verdict})

    def _used(self) -> dict[str, float]:
        """Fraction of each budget cap used, lifetime caps and rolling windows alike."""
        row = self.rt.journal.row
        out = {}
        for key, cap in row.budget.items():
            lim = budgets.parse_key(key)
            if lim.window is None:
                used = budgets.value(row.usage, lim.metric)
            else:
                base = self.budget.window_usage(lim.window)
                used = budgets.value(base, lim.metric)
            out[lim.cap] = used / cap if cap else 1.0  # a rule names the cap, not its on_exceed
        return out

    async def _decide(self, t: Tool, args: dict[str, Any], args_json: dict[str, Any], i: int,
                      step: int) -> dict[str, Any]:
        policy = self.policy
        row = self.rt.journal.row
        always = t.name in row.spec.get("always_allow", [])
        d = None if always else policy.decide(self._action(t, args_json))
        payload: dict[str, Any] = {
            "i": i, "tool": t.name, "effect": t.effect,
            "verdict": "allow" if d is None else d.verdict,
            "rule": "always-allow" if d is None else d.rule,
            "reason": ("an operator approved this tool for this run, always" if d is None
                       else d.reason),
            "policy_hash": policy.hash}
        if (d is not None and t.effect == "irreversible" and self.pause_points.before_irreversible
                and (d.verdict == "allow" or (d.verdict == "approve" and d.rule is None))):
            # A pause point before irreversible effects: a human looks even where rules allow.
            payload.update(verdict="approve", rule="pause-point:before-irreversible",
                           reason="the run's pause points ask before every irreversible effect")
        if d is not None and d.verdict == "defer":
            payload["until"] = d.until
        if d is not None and d.verdict == "approve":
            payload.update(approvers=list(d.approvers), expires_after=d.expires_after,
                           on_expiry=d.on_expiry)
        self.rt.journal.append("policy.decided", payload, step=step)
        verdict = payload["verdict"]
        if verdict == "allow":
            return args
        if verdict == "deny":
            raise ToolDenied(_denied(t.name, payload["rule"], payload["reason"]))
        if verdict == "defer":
            await self.rt.flush()
            raise Deferred(payload["reason"], until=float(payload["until"]))
        return await self._request(t, args_json, i, step, payload)

    async def _request(self, t: Tool, args_json: dict[str, Any], i: int, step: int,
                       d: Mapping[str, Any]) -> dict[str, Any]:
        j = self.rt.journal
        now = self.wall.now()  # approvals are for people: wall time, whatever the run's clock
        expires = d.get("expires_after")
        ev = j.append("approval.requested", {
            "i": i, "tool": t.name, "effect": t.effect, "arguments": args_json,
            "rule": d.get("rule"), "reason": d.get("reason", ""),
            "approvers": list(d.get("approvers") or []),
            "expires_at": now + float(expires) if expires else None,
            "on_expiry": d.get("on_expiry") or "deny"}, step=step)
        row = ApprovalRow(id=ev.id, run=j.run, epoch=j.row.epoch, step=step, idx=i, tool=t.name,
                          effect=t.effect, arguments=args_json, rule=d.get("rule"),
                          reason=str(d.get("reason", "")),
                          policy_hash=str(d.get("policy_hash", "")),
                          approvers=tuple(d.get("approvers") or ()), requested_at=now,
                          expires_at=ev.payload["expires_at"], on_expiry=ev.payload["on_expiry"])
        j.approval(row)
        await self.rt.flush()
        self.gates.setdefault(i, Gate()).requested = ev
        raise AwaitApproval(awaiting_reason(j.run, ev.id, t.name),
                            detail={"approval": ev.id, "awaiting_approval": True})

    def _answered(self, t: Tool, args: dict[str, Any], e: Event) -> dict[str, Any]:
        p = e.payload
        if p["decision"] != "approved":
            why = p.get("note") or "no reason given"
            raise ToolDenied(f"tool {t.name} was not run: {p['decision']} by {p.get('by')}: {why}")
        edited = p.get("arguments")
        return t.validate(edited) if edited is not None else args

    def _action(self, t: Tool, args_json: dict[str, Any]) -> Any:
        from tether.core.policy import Action
        row = self.rt.journal.row
        return Action(run=row.id, agent=self.rt.agent, swarm=row.swarm, tool=t.name,
                      effect=t.effect, arguments=args_json, at=self.rt.clock(),
                      budget_used=self._used())


_MODEL_RULES: dict[int, tuple[Policy, Policy | None]] = {}


def _model_rules(policy: Policy) -> Policy | None:
    """The rules that name ``effect = "model"``, in order, or None when there are none.

    Only those gate model calls: a rule written for tools (say, one with no ``effect``)
    must not start refusing model calls by accident.
    """
    hit = _MODEL_RULES.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    from tether.core import policy as compiled
    rules = [r for r in policy.rules if r.effect is not None and "model" in r.effect]
    sub = compiled.Policy(rules, policy_hash=policy.hash, source=policy.source,
                          defaults=policy.defaults) if rules else None
    _MODEL_RULES[id(policy)] = (policy, sub)
    return sub


def _builtin() -> Policy:
    """The built-in defaults (cached by core): in force where no policy was applied."""
    from tether.core.policy import builtin_policy
    return builtin_policy()


def _denied(tool: str, rule: str | None, reason: str) -> str:
    by = f"policy rule {rule!r}" if rule else "the default policy"
    return f"tool {tool} was not run: denied by {by}" + (f": {reason}" if reason else "")


def decision_payload(d: Decision) -> dict[str, Any]:
    """The journal form of a policy decision (used by `tether policy explain --json` too)."""
    return {"verdict": d.verdict, "rule": d.rule, "reason": d.reason, "until": d.until,
            "approvers": list(d.approvers), "expires_after": d.expires_after,
            "on_expiry": d.on_expiry, "policy_hash": d.policy_hash}
