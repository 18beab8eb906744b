"""The ``[monitors]`` tables of a policy file: which monitors watch which runs, with
what thresholds and stages.

::

    [monitors.loops]                  # every run
    repeat = 3                        # the monitor's own parameters
    stages = ["alert", "block", "pause"]

    [monitors.swarm.night.storms]     # the runs of swarm "night"
    enabled = false

    [monitors.agent.router.invariants]
    stages = ["quarantine"]           # an agent's runs: over the swarm's, over the base

A monitor not named keeps its defaults (the cheap built-ins are on). Parameters are
checked against the monitor's defaults when the policy is compiled, so a typo is
refused with the key path, never ignored: a broken configuration does not quietly
weaken a guard.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tether.core.monitors.base import KINDS, MonitorKind
from tether.core.monitors.verdicts import Level, parse_level

SCOPES: Final = ("agent", "swarm")
COMMON: Final = ("enabled", "stages")


class MonitorSpecError(ValueError):
    """A ``[monitors]`` table that does not compile; the message has the key path."""


@dataclass(frozen=True, slots=True)
class Configured:
    """One monitor as it applies to one run."""

    kind: MonitorKind
    params: Mapping[str, Any]
    stages: tuple[Level, ...]
    enabled: bool


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Compiled ``[monitors]`` tables (empty: every built-in on its defaults)."""

    base: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    agent: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    swarm: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)

    def for_run(self, agent: str, swarm: str | None) -> tuple[Configured, ...]:
        """Every registered monitor as configured for a run of ``agent`` in ``swarm``."""
        out = []
        for name, kind in KINDS.items():
            merged: dict[str, Any] = dict(self.base.get(name, {}))
            if swarm is not None:
                merged.update(self.swarm.get(swarm, {}).get(name, {}))
            merged.update(self.agent.get(agent, {}).get(name, {}))
            stages = merged.pop("stages", None)
            enabled = merged.pop("enabled", kind.enabled)
            out.append(Configured(kind, {**kind.defaults, **merged},
                                  tuple(stages) if stages is not None else kind.stages,
                                  bool(enabled)))
        return tuple(out)


def compile_monitors(data: object) -> MonitorSettings:
    """Compile the ``monitors`` table of a policy.

    Raises:
        MonitorSpecError: an unknown monitor or parameter, a value of the wrong type, or
            a stage that is not a verdict; the message starts with the key path.
    """
    if data is None:
        return MonitorSettings()
    table = _table(data, "monitors")
    base = {k: _one(k, v, f"monitors.{k}") for k, v in table.items() if k not in SCOPES}
    scoped: dict[str, dict[str, dict[str, Mapping[str, Any]]]] = {s: {} for s in SCOPES}
    for scope in SCOPES:
        for who, monitors in _table(table.get(scope, {}), f"monitors.{scope}").items():
            path = f"monitors.{scope}.{who}"
            scoped[scope][who] = {k: _one(k, v, f"{path}.{k}")
                                  for k, v in _table(monitors, path).items()}
    return MonitorSettings(base, scoped["agent"], scoped["swarm"])


def _table(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MonitorSpecError(f"{path}: expected a table, got {type(value).__name__}")
    return value


def _one(name: str, value: object, path: str) -> Mapping[str, Any]:
    kind = KINDS.get(name)
    if kind is None:
        raise MonitorSpecError(f"{path}: no monitor is called {name!r}; the monitors are "
                               f"{', '.join(sorted(KINDS))}")
    out: dict[str, Any] = {}
    for key, v in _table(value, path).items():
        where = f"{path}.{key}"
        if key == "stages":
            if not isinstance(v, list) or not v:
                raise MonitorSpecError(f"{where}: expected a non-empty list of verdicts, e.g. "
                                       '["alert", "pause"]')
            try:
                out[key] = tuple(parse_level(s, where=where) for s in v)
            except ValueError as exc:
                raise MonitorSpecError(str(exc)) from None
        elif key == "enabled":
            if not isinstance(v, bool):
                raise MonitorSpecError(f"{where}: expected true or false, got {v!r}")
            out[key] = v
        elif key not in kind.defaults:
            known = ", ".join([*COMMON, *sorted(kind.defaults)])
            raise MonitorSpecError(f"{where}: monitor {name!r} has no parameter {key!r}; it "
                                   f"takes {known}")
        else:
            out[key] = _typed(v, kind.defaults[key], where)
    if kind.check is not None:
        try:
            kind.check(out, path)
        except ValueError as exc:
            raise MonitorSpecError(str(exc)) from None
    return out


def _typed(v: object, default: object, where: str) -> object:
    """``v`` if it has the default's type (ints pass for floats); MonitorSpecError if not."""
    if default is None or (isinstance(v, type(default)) and not (
            isinstance(v, bool) and not isinstance(default, bool))):
        return v
    if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    raise MonitorSpecError(f"{where}: expected {type(default).__name__} like {default!r}, got "
                           f"{v!r}")
