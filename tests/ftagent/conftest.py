"""Fixtures for ftagent tests (the guests and orgs come from tests/kit, through tests/conftest.py)."""

from tests.ftagent.stubserver import stub

__all__ = ["stub"]
