"""Fixtures for ftagent tests (the guests and orgs come from tests/kit, through tests/conftest.py):
the stub HTTP server, and the etcd cluster the lease tests share."""

from tests.ftagent.stubserver import stub
from tests.kit.etcd import etcd, etcd_cluster

__all__ = ["etcd", "etcd_cluster", "stub"]
