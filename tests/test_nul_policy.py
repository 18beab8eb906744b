"""A NUL character (``\\x00``) in a policy's texts or a tool's name, refused where it is loaded.

PostgreSQL's text cannot hold NUL (tests/test_nul_text.py): a rule id, reason or tool name
holding one reaches text columns (an approval's rule and reason, an effect's tool) and would
fail the run whose decision the store journals, on PostgreSQL only. So `tether policy
check/apply` refuses such a policy with one line naming the file, the rule and the field,
on both backends, and leaves the policy in force as it was; ``tool`` and ``schema_tool``
refuse such a name at definition. A rule's argument matchers may still look for a NUL: the
arguments are stored as JSON bytes, so a call holding one is decided, and denied, on both.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.pgworkers import cli
from tether import Done, StepAgent, ToolFailed, Worker, schema_tool, start_run, tool
from tether.core.policy import Action, PolicyError, rules_from_python
from tether.errors import ToolDefinitionError
from tether.policies import apply_policy
from tether.store import open_store

GOOD = '[[rule]]\nid = "pay-ok"\ntool = "pay"\ndecide = "allow"\n'

# (the policy, the rule and field the one error line must name); TOML writes NUL \u0000.
BAD = [
    pytest.param('[[rule]]\nid = "pay\\u0000ok"\ntool = "pay"\ndecide = "allow"\n',
                 r"rule 'pay\x00ok': id: 'pay\x00ok'", id="rule-id"),
    pytest.param('[[rule]]\nid = "pay"\ntool = "pay"\ndecide = "deny"\n'
                 'reason = "not\\u0000now"\n', r"rule 'pay': reason: 'not\x00now'", id="reason"),
    pytest.param('[[rule]]\nid = "pay"\ntool = ["pay", "p\\u0000y"]\ndecide = "deny"\n',
                 r"rule 'pay': tool[1]: 'p\x00y'", id="tool-name"),
    pytest.param('[[rule]]\nid = "pay"\ntool = "pay"\ndecide = "approve"\n'
                 'approvers = ["ann", "b\\u0000b"]\n', r"rule 'pay': approvers[1]: 'b\x00b'",
                 id="approver"),
    pytest.param('[[rule]]\nid = "pay"\ntool = "pay"\ndecide = "deny"\n"wh\\u0000en" = 1\n',
                 r"rule 'pay': wh\x00en: 'wh\x00en'", id="a-key"),
    pytest.param(GOOD + '[groups]\nfinance = ["bob", "c\\u0000rol"]\n',
                 r"groups.finance[1]: 'c\x00rol'", id="group-member"),
]


@pytest.fixture
def url(backend_url: str) -> str:
    """A fresh store of each backend (tests/conftest.py)."""
    return backend_url


def one_error(res: Any) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "\x00" not in res.stderr, res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith("error: "), line
    return str(line)


def in_force(url: str, tmp_path: Path) -> str:
    res = cli("--store", url, "policy", "show", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (shown,) = [json.loads(x) for x in res.stdout.splitlines()]
    return str(shown["hash"])


@pytest.mark.parametrize(("text", "named"), BAD)
def test_policy_apply_refuses_nul_naming_file_rule_and_field(url: str, tmp_path: Path,
                                                            text: str, named: str) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GOOD)
    bad.write_text(text)
    res = cli("--store", url, "policy", "apply", str(good), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    before = in_force(url, tmp_path)
    for args in (["policy", "check", str(bad)], ["--store", url, "policy", "apply", str(bad)]):
        line = one_error(cli(*args, cwd=tmp_path))
        assert line.startswith(f"error: {bad}: {named} contains a NUL character"), line
        assert "remove it or replace it" in line
    assert in_force(url, tmp_path) == before  # the good policy is still the one in force


def test_rules_given_in_python_are_held_to_the_same_rule() -> None:
    with pytest.raises(PolicyError, match=r"^<python>: rule 'r': reason: 'a\\x00b' contains"):
        rules_from_python([{"id": "r", "decide": "deny", "reason": "a\x00b"}])
    with pytest.raises(PolicyError, match=r"^<python>: defaults.approvers\[0\]: 'x\\x00' "):
        rules_from_python([], defaults={"approvers": ["x\x00"]})


@tool(effect="irreversible")
def write_note(path: str) -> str:
    """Write a note at ``path``."""
    return path


async def _writes_a_nul_path(ctx: Any, state: dict[str, Any]) -> Done:
    try:
        await ctx.call(write_note, path="notes/a\x00b")
    except ToolFailed as exc:
        return Done(f"refused: {exc}")
    return Done("written")


def test_an_argument_matcher_may_look_for_nul_and_decides_on_both_backends(url: str) -> None:
    policy = rules_from_python([{"id": "no-nul-paths", "tool": "write_note", "decide": "deny",
                                 "args": {"path": {"glob": "*\x00*"}}},
                                {"id": "notes", "tool": "write_note", "decide": "allow"}])
    at = {"run": "r", "agent": "a", "swarm": None, "tool": "write_note",
          "effect": "irreversible", "at": 0.0}
    assert policy.decide(Action(**at, arguments={"path": "a\x00b"})).rule == "no-nul-paths"
    assert policy.decide(Action(**at, arguments={"path": "ab"})).rule == "notes"
    store = open_store(url)
    try:
        apply_policy(store, policy, who="human:test")
        agent = StepAgent(_writes_a_nul_path, name="noter", tools=[write_note])
        run = start_run(store, agent, agent_ref="noter", goal="write")
        asyncio.run(Worker(store, agents={"noter": agent}, poll_interval=0.01).run(
            until_idle=True))
        row = store.get_run(run)
        assert row is not None and row.status == "done", row
        (decided,) = [e.payload for e in store.events(run) if e.kind == "policy.decided"]
        assert decided is not None
        assert (decided["verdict"], decided["rule"]) == ("deny", "no-nul-paths")
        assert store.effects(run=run) == []  # denied: it never ran
    finally:
        store.close()


@pytest.mark.parametrize("name", ["se\x00nd", "\x00"])
def test_a_tool_name_holding_nul_is_refused_at_definition(name: str) -> None:
    def send(to: str) -> str:
        return to

    said = re.escape(f"a tool's name {name!r} contains a NUL character")
    with pytest.raises(ToolDefinitionError, match=said):
        tool(name=name)(send)
    with pytest.raises(ToolDefinitionError, match=said):
        schema_tool(name, send, schema={"type": "object", "properties": {}})
    send.__name__ = name  # the default name is the function's
    with pytest.raises(ToolDefinitionError, match=said):
        tool(send)
