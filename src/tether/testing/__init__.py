"""Test helpers shipped with tether, for tether's own tests and for yours.

``tether.testing.openai_server.FakeChatServer`` is a real loopback HTTP server
that speaks the Chat Completions wire format, so model adapters are tested
over real sockets instead of patched clients.
"""

from __future__ import annotations

from tether.core.policy import Policy, parse_policy
from tether.store.protocol import Store

__all__ = ["allow_tools"]


def allow_tools(store: Store, *tools: str, who: str = "system:test") -> Policy:
    """Apply (journaled, like ``tether policy apply``) a policy that allows ``tools`` outright,
    or every tool when none is named: for tests about something other than approvals.

    Without an applied policy, irreversible calls wait for a person's approval.
    """
    from tether.policies import apply_policy
    names = ", ".join(f'"{t}"' for t in tools)
    text = ('[[rule]]\nid = "tests-allow"\n' + (f"tool = [{names}]\n" if tools else "")
            + 'decide = "allow"\n')
    policy = parse_policy(text, source="<tether.testing.allow_tools>")
    apply_policy(store, policy, who=who)
    return policy
