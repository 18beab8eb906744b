"""Audit: verifying the journal's hash chains."""

from tether.audit.verify import VerifyReport, verify_store

__all__ = ["VerifyReport", "verify_store"]
