"""Fixtures for ftagent tests."""

from tests.ftagent.agentenv import any_guest, guest, org
from tests.ftagent.heartbeat_kit import guests
from tests.ftagent.stubserver import stub

__all__ = ["any_guest", "guest", "guests", "org", "stub"]
