"""Integrations with the agent frameworks and tool servers people already use.

One package per framework, each an optional extra imported behind a guard that
names the install command. Each plugs into the same runtime hooks, so a
framework's agent gets what a native tether agent gets (a journaled, replayable
run; policies and approvals before every effect; budgets; monitors; audit):

- ``StepContext.model_call`` (through :func:`tether.current_step`): the
  framework's own model call, journaled and replayed;
- :func:`tether.schema_tool`: the framework's tools (described by a JSON schema)
  as tether tools with an effect class, gated by the policy.
"""
