"""Fixtures for ftagent tests."""

from tests.ftagent.agentenv import guest, org
from tests.ftagent.stubserver import stub

__all__ = ["guest", "org", "stub"]
