"""ftmock: a 10,000-guest / 200-hypervisor check-in, and 200 registrations with CSR.

Targets (issue 2): the check-in's job FINISHED in under 2 s; 200 CSR registrations in under 10 s.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.table import print_table
from tests.conftest import FtmockServer

HOSTS, GUESTS_PER_HOST, REGISTRATIONS = 200, 50, 200


def _session(server: FtmockServer) -> requests.Session:
    s = requests.Session()
    s.auth = server.admin_auth
    return s


def _report() -> bytes:
    hyps = []
    for h in range(HOSTS):
        guests = [{"guestId": f"{h:08x}-0000-4000-8000-{g:012x}", "state": 1,
                   "attributes": {"virtWhoType": "esx", "active": 1}} for g in range(GUESTS_PER_HOST)]
        hyps.append({"hypervisorId": {"hypervisorId": f"host-{h}"}, "name": f"esx{h}.example.com",
                     "guestIds": guests, "facts": {"cpu.cpu_socket(s)": "2", "hypervisor.type": "VMware ESXi"}})
    return json.dumps({"hypervisors": hyps}).encode()


def checkin(server: FtmockServer, s: requests.Session, body: bytes) -> tuple[float, float, dict[str, Any]]:
    """Seconds from sending to FINISHED as the client sees it, the job's own time, and its result."""
    start = time.monotonic()
    r = s.post(f"{server.url}/hypervisors/admin?reporter_id=bench", data=body, verify=str(server.ca_path),
               headers={"Content-Type": "text/plain"}, timeout=120)
    r.raise_for_status()
    job = r.json()
    while job["state"] not in ("FINISHED", "FAILED"):
        time.sleep(0.01)
        job = s.get(f"{server.url}/jobs/{job['id']}", verify=str(server.ca_path), timeout=60).json()
    elapsed = time.monotonic() - start
    assert job["state"] == "FINISHED", job
    job_s = (datetime.fromisoformat(job["updated"]) - datetime.fromisoformat(job["created"])).total_seconds()
    return elapsed, job_s, job["resultData"]


def register_one(server: FtmockServer, s: requests.Session, n: int) -> float:
    start = time.monotonic()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench-{n}")]))
           .sign(key, hashes.SHA256()))
    body = {"name": f"bench-{n}", "facts": {"virt.uuid": f"bench-{n}"},
            "csr": csr.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                               fromlist=["Encoding"]).Encoding.PEM).decode()}
    r = s.post(f"{server.url}/consumers?owner=admin", json=body, verify=str(server.ca_path), timeout=60)
    r.raise_for_status()
    return time.monotonic() - start


@contextmanager
def running_ftmock() -> Iterator[FtmockServer]:
    """An ftmock server on a fresh data directory, for the length of a benchmark."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ftmock"
        data.mkdir()
        server = FtmockServer(data_dir=data)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def main() -> None:
    with running_ftmock() as server:
        s = _session(server)
        body = _report()
        rows = []
        first = checkin(server, s, body)
        rows.append(["first check-in (all created)", f"{first[0]:.2f}", f"{first[1]:.2f}", "< 2 s"])
        again = checkin(server, s, body)
        rows.append(["same report again (unchanged)", f"{again[0]:.2f}", f"{again[1]:.2f}", "< 2 s"])
        print_table(f"ftmock check-in: {HOSTS} hypervisors, {HOSTS * GUESTS_PER_HOST} guests, "
                    f"{len(body) / 1e6:.1f} MB", ["run", "client s", "server job s", "target"], rows)

        start = time.monotonic()
        per = [register_one(server, s, n) for n in range(REGISTRATIONS)]
        sequential = time.monotonic() - start
        start = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: register_one(server, _session(server), 10_000 + n), range(REGISTRATIONS)))
        parallel = time.monotonic() - start
        print_table(f"ftmock registrations with CSR (EC P-256), {REGISTRATIONS} each",
                    ["mode", "total s", "median ms", "target"],
                    [["sequential, one connection", f"{sequential:.2f}",
                      f"{statistics.median(per) * 1000:.1f}", "< 10 s"],
                     ["4 clients in parallel", f"{parallel:.2f}", "-", "< 10 s"]])


if __name__ == "__main__":
    main()
