"""Fixtures for ftagent tests."""

from tests.ftagent.stubserver import stub

__all__ = ["stub"]
