"""Imports every built-in monitor so that each registers itself (one line each)."""
from tether.core.monitors import drift as drift
from tether.core.monitors import invariants as invariants
from tether.core.monitors import loops as loops
from tether.core.monitors import pingpong as pingpong
from tether.core.monitors import progress as progress
from tether.core.monitors import runaway as runaway
