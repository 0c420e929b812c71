"""A fleet at scale: 1,000 FT VMs in the simulator, reported by ftreport's daemon, registered on
ftmock. A host failure leaves 100 of them without a secondary: the fleet view and the metrics
name exactly those 100 after the one report that follows, and none once vSphere has made new
secondaries."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import report_config
from tests.ftreport.conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim
from tests.kit.ca import server_tls
from tests.kit.ftmock import FtmockServer
from tests.kit.orgs import new_org
from tests.kit.wait import wait_until

GROUPS, HOSTS = 1000, 20  # 2 clusters of 10 hosts; each host runs 50 primaries and 50 backups


@pytest.fixture
def fleet_vcsim(tmp_path: Path) -> Iterator[Vcsim]:
    sim = Vcsim(workdir=tmp_path / "vcsim", tls=server_tls(tmp_path / "vcsim-ca", "127.0.0.1", "localhost"),
                args=["-cluster", "2", "-host", str(HOSTS // 2), "-vm", str(GROUPS), "-ft", str(GROUPS),
                      "-ft-spread"])
    sim.start(timeout=120)
    yield sim
    sim.stop()


class Fleet:
    def __init__(self, server: FtmockServer, org: str) -> None:
        self.server, self.org = server, org
        self.session = requests.Session()
        self.session.auth = server.admin_auth
        self.verify = str(server.ca_path)  # per request: REQUESTS_CA_BUNDLE would win over Session.verify

    def get(self, path: str) -> Any:
        r = self.session.get(self.server.url + path, timeout=120, verify=self.verify)
        assert r.status_code == 200, r.text
        return r.json() if r.headers["Content-Type"].startswith("application/json") else r.text

    def unprotected(self) -> dict[str, list[str]]:
        """guest id -> reasons, from the fleet view of the org's FT groups."""
        return {g["guestId"].lower(): g["reasons"] for g in self.get(f"/fleet/orgs/{self.org}/ftgroups")
                if g["protection"] == "unprotected"}

    def metrics(self) -> dict[tuple[str, str], float]:
        out = {}
        for family in text_string_to_metric_families(self.get("/fleet/metrics")):
            for s in family.samples:
                if s.labels["org"] == self.org:
                    out[s.name, s.labels.get("protection") or s.labels["reason"]] = s.value
        return out

    def reports_applied(self) -> int:
        conn = sqlite3.connect(self.server.data_dir / "ftmock.db", timeout=30)
        try:
            row = conn.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state = 'FINISHED' "
                               "AND id LIKE 'hypervisor_update_%'", (self.org,)).fetchone()
        finally:
            conn.close()
        return int(row[0])

    def register_all(self, virt_uuids: list[str]) -> dict[str, dict[str, Any]]:
        """Each VM's guest registers (the server makes its key); virt.uuid -> the consumer."""
        def one(virt_uuid: str) -> dict[str, Any]:
            r = self.session.post(f"{self.server.url}/consumers?owner={self.org}", timeout=120, verify=self.verify,
                                  json={"name": f"vm-{virt_uuid[:8]}", "facts": {"virt.uuid": virt_uuid}})
            assert r.status_code == 200, r.text
            return dict(r.json())

        with ThreadPoolExecutor(4) as pool:
            return dict(zip(virt_uuids, pool.map(one, virt_uuids)))

    def follow_failover(self, consumer: dict[str, Any], tmp_path: Path) -> None:
        """The guest's next request as its old identity gets the 308 that hands it the successor's."""
        cert, key = tmp_path / f"{consumer['uuid']}.pem", tmp_path / f"{consumer['uuid']}-key.pem"
        cert.write_text(consumer["idCert"]["cert"])
        key.write_text(consumer["idCert"]["key"])
        r = requests.get(f"{self.server.url}/consumers/{consumer['uuid']}", cert=(str(cert), str(key)),
                         verify=str(self.server.ca_path), timeout=60, allow_redirects=False)
        assert r.status_code == 308, r.text


def test_a_host_failure_in_a_fleet_of_1000(fleet_vcsim: Vcsim, server: FtmockServer, tmp_path: Path,
                                           isolated_reporter_env: None) -> None:
    sim = fleet_vcsim
    fleet = Fleet(server, new_org(server))
    groups = sim.state()["ft"]
    assert len(groups) == GROUPS
    conf = report_config(tmp_path / "ftreport.conf", server, fleet.org,
                         {"type": "esx", "server": sim.url, "username": VCSIM_USER, "password": VCSIM_PASSWORD,
                          "ca_cert": sim.tls.ca_path,
                          # The simulator sends its first update set whole (govmomi ignores maxObjectUpdates):
                          # 2,022 objects, more than the default page the reporter accepts.
                          "page_size": 5000}, extra_global={"settle": 0.5})
    log = open(tmp_path / "ftreport.log", "wb")  # noqa: SIM115
    daemon = subprocess.Popen([sys.executable, "-m", "ftreport", "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=log)
    try:
        wait_until(lambda: fleet.reports_applied() >= 1, 120, "the first report")
        guests = fleet.register_all([g["uuid"] for g in groups])
        assert fleet.unprotected() == {}
        before = fleet.metrics()
        assert (before["ftmock_ft_groups", "protected"], before["ftmock_ft_groups", "unprotected"]) == (GROUPS, 0)

        applied = fleet.reports_applied()
        host = groups[0]["instances"][0]["hostName"]
        hit = {uuid.lower() for uuid in sim.fail_host(host)}
        assert len(hit) == 100
        wait_until(lambda: fleet.reports_applied() > applied, 60, "the report after the host failure")
        # One report later, exactly those 100 are unprotected, each because it has no secondary; the
        # 50 whose primary ran there also because their guest has not followed the failover yet.
        failed_over = {g["uuid"].lower() for g in groups if g["instances"][0]["hostName"] == host}
        assert len(failed_over) == 50 and failed_over <= hit
        unprotected = fleet.unprotected()
        assert set(unprotected) == hit
        assert {uuid for uuid, reasons in unprotected.items()
                if reasons == ["needSecondary", "secondaryNotReported", "guestNotRegistered"]} == failed_over
        assert {uuid for uuid, reasons in unprotected.items()
                if reasons == ["needSecondary", "secondaryNotReported"]} == hit - failed_over
        assert fleet.reports_applied() == applied + 1
        for virt_uuid, consumer in guests.items():
            if virt_uuid.lower() in failed_over:
                fleet.follow_failover(consumer, tmp_path)
        assert set(map(tuple, fleet.unprotected().values())) == {("needSecondary", "secondaryNotReported")}
        after = fleet.metrics()
        assert (after["ftmock_ft_groups", "protected"], after["ftmock_ft_groups", "unprotected"]) == (900, 100)
        assert after["ftmock_ft_groups_unprotected", "needSecondary"] == 100
        assert after["ftmock_ft_groups_unprotected", "secondaryNotReported"] == 100
        assert after["ftmock_ft_groups_unprotected", "guestNotRegistered"] == 0

        # vSphere makes new secondaries: the fleet is whole again.
        applied = fleet.reports_applied()
        sim.add_secondary("*", state="running")
        wait_until(lambda: fleet.reports_applied() > applied, 60, "the report after the new secondaries")
        assert fleet.unprotected() == {}
        restored = fleet.metrics()
        assert (restored["ftmock_ft_groups", "protected"], restored["ftmock_ft_groups", "unprotected"]) == (GROUPS, 0)
        assert restored["ftmock_ft_groups_unprotected", "needSecondary"] == 0
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
