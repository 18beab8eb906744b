"""Imports every built-in monitor so that each registers itself (one line each)."""
