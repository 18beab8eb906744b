"""Imports every built-in monitor so that each registers itself (one line each)."""
from tether.core.monitors import invariants as invariants
