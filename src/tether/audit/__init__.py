"""Audit: verifying the journal's hash chains."""

from tether.audit.report import VerifyReport
from tether.audit.verify import verify_store

__all__ = ["VerifyReport", "verify_store"]
