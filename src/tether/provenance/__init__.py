"""Provenance: rolling a run back, with its real side effects."""
