"""Monitors: pure observers of a run's events that return verdicts (docs/monitors.md).

:mod:`.base` is the contract, :mod:`.verdicts` the levels and the escalation ladder,
:mod:`.settings` the policy file's ``[monitors]`` tables; the built-ins register
themselves when :mod:`.builtins` is imported, which importing this package does.
"""

from tether.core.monitors import builtins as builtins
from tether.core.monitors.base import KINDS, Monitor, MonitorKind, Proposal, Quiet, View, register
from tether.core.monitors.settings import Configured, MonitorSettings, MonitorSpecError, compile_monitors
from tether.core.monitors.verdicts import LEVELS, Level, Signal, Verdict, escalate

__all__ = ["KINDS", "LEVELS", "Configured", "Level", "Monitor", "MonitorKind", "MonitorSettings",
           "MonitorSpecError", "Proposal", "Quiet", "Signal", "Verdict", "View", "compile_monitors",
           "escalate", "register"]
