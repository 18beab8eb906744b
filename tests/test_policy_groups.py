"""A policy's ``[groups]``: approvers named as ``group:NAME`` expand to the group's people, an
unknown group is refused with its key path, and a decision is held to the people."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether import Done, StepAgent, Worker, approvals, start_run, tool
from tether.core.policy import Action, PolicyError, parse_policy, policy_from_text, rules_from_python
from tether.errors import UsageError
from tether.policies import apply_policy, in_force
from tether.store.sqlite import SQLiteStore

POLICY = """
[defaults]
approvers = ["group:leads"]

[groups]
oncall = ["ada", "bob"]
leads = ["cy"]

[[rule]]
id = "big-pay"
tool = "send"
decide = "approve"
approvers = ["group:oncall", "dee", "bob"]
"""


def _action(tool: str, effect: str = "irreversible") -> Action:
    return Action(run="r", agent="a", swarm=None, tool=tool, effect=effect, arguments={}, at=0.0)


def test_groups_expand_in_rules_and_defaults_each_person_once() -> None:
    p = parse_policy(POLICY, source="p.toml")
    assert p.groups == {"oncall": ("ada", "bob"), "leads": ("cy",)}
    assert p.decide(_action("send")).approvers == ("ada", "bob", "dee")
    assert p.decide(_action("other")).approvers == ("cy",)  # the default approval


@pytest.mark.parametrize(("text", "said"), [
    ('[[rule]]\nid = "r"\ndecide = "approve"\napprovers = ["ada", "group:oncal"]\n'
     '[groups]\noncall = ["ada"]\n',
     "p.toml: rule 'r': approvers[1]: unknown group 'oncal' (did you mean 'oncall'?); "
     "[groups] defines oncall"),
    ('[defaults]\napprovers = ["group:x"]\n',
     "p.toml: defaults.approvers[0]: unknown group 'x'; [groups] defines no groups"),
    ('[groups]\noncall = ["ada", "group:leads"]\nleads = ["cy"]\n',
     "p.toml: groups.oncall[1]: 'group:leads': a group lists people, not groups"),
    ('[groups]\noncall = []\n', "p.toml: groups.oncall: expected a list of user names"),
    ('[groups]\noncall = "ada"\n', "p.toml: groups.oncall: expected a list of user names"),
    ('groups = ["ada"]\n', "p.toml: groups: expected a table of name = [people]"),
    ('[groups]\noncall = ["ada", ""]\n', "p.toml: groups.oncall[1]: expected a non-empty string"),
])
def test_a_bad_group_is_refused_with_its_key_path(text: str, said: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, source="p.toml")
    assert str(err.value).startswith(said), err.value


def test_groups_given_in_python_and_recorded_as_json_compile_back_the_same() -> None:
    p = rules_from_python([{"id": "r", "tool": "send", "decide": "approve",
                            "approvers": ["group:oncall"]}], groups={"oncall": ["ada", "bob"]})
    again = policy_from_text(p.text, p.format, source="store")
    assert again.hash == p.hash and again.groups == {"oncall": ("ada", "bob")}
    assert again.decide(_action("send")).approvers == ("ada", "bob")
    with pytest.raises(PolicyError, match="unknown group 'oncall'"):
        rules_from_python([{"id": "r", "decide": "approve", "approvers": ["group:oncall"]}])


SENT: list[int] = []


@tool(effect="irreversible")
def send(amount: int) -> str:
    """Send money (irreversible)."""
    SENT.append(amount)
    return "sent"


async def _pay(ctx: Any, state: dict[str, Any]) -> Any:
    return Done(await ctx.call(send, amount=5))


PAY = StepAgent(_pay, name="payer", tools=[send])


def test_only_a_member_of_the_named_group_may_decide(tmp_path: Path) -> None:
    SENT.clear()
    store = SQLiteStore(tmp_path / "t.db")
    apply_policy(store, parse_policy(POLICY, source="p.toml"), who="human:ops")
    assert in_force(store).policy.groups["oncall"] == ("ada", "bob")
    run = start_run(store, PAY, agent_ref="payer", goal="pay")
    asyncio.run(Worker(store, agents={"payer": PAY}, poll_interval=0.01).run(until_idle=True))
    (req,) = store.approvals(run=run)
    assert req.approvers == ("ada", "bob", "dee")
    with pytest.raises(UsageError, match=r"cy may not decide .* names ada, bob, dee"):
        approvals.decide(store, req.id, approve=True, who="human:cy")
    approvals.decide(store, req.id, approve=True, who="human:bob")  # a token name or OS user
    asyncio.run(Worker(store, agents={"payer": PAY}, poll_interval=0.01).run(until_idle=True))
    assert SENT == [5] and store.get_run(run).status == "done"  # type: ignore[union-attr]
