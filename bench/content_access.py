"""Simple Content Access at scale: an org with 5,000 content sets.

ftmock issues the content access certificate (the first certificate listing after a content
change), ftagent fetches and installs it, and writes the repository file; then a check-in with
nothing changed (nothing rewritten). Prints median wall times over N content changes
(CONTENT_BENCH_RUNS, default 5) and the sizes involved. The issue's bound: issuing, and installing
plus writing the repository file, each under 0.5 s.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.ftmock_server import running_ftmock
from bench.table import print_table

__all__ = ["main"]

PRODUCTS = 50
SETS_PER_PRODUCT = 100


def _admin(server: Any, method: str, path: str, **kw: Any) -> Any:
    r = requests.request(method, server.url + path, auth=server.admin_auth, verify=str(server.ca_path), timeout=120,
                         **kw)
    r.raise_for_status()
    return r.json() if r.content else None


def _product(server: Any, org: str, n: int, sets: int) -> None:
    content = [{"content": {"id": f"c{n}-{i}", "label": f"layered-{n}-repo-{i}-rpms", "name": f"Layered {n} repo {i}",
                            "type": "yum", "contentUrl": f"/content/dist/layered/rhel9/$basearch/p{n}/r{i}/os",
                            "gpgUrl": "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release"}, "enabled": i % 3 == 0}
               for i in range(sets)]
    _admin(server, "POST", f"/owners/{org}/products", json={"id": f"P{n}", "name": f"Layered {n}",
                                                            "productContent": content})
    _admin(server, "POST", f"/owners/{org}/pools", json={"productId": f"P{n}", "quantity": 10})


def main() -> None:
    from ftagent.agent import Agent
    from ftagent.config import load_config

    runs = int(os.environ.get("CONTENT_BENCH_RUNS", "5"))
    with running_ftmock() as server, tempfile.TemporaryDirectory(prefix="sca-bench-") as tmp:
        org = "sca-bench"
        _admin(server, "POST", "/owners", json={"key": org})
        for n in range(PRODUCTS):
            _product(server, org, n, SETS_PER_PRODUCT)
        root = Path(tmp)
        (root / "facts").mkdir()
        (root / "repos").mkdir()
        conf = root / "ftagent.conf"
        conf.write_text(f"[server]\nurl = {server.url}\nca_cert = {server.ca_path}\n"
                        "[agent]\nidentity_dir = id\nentitlement_dir = ent\nfacts_dir = facts\nlock_file = lock\n"
                        "[content]\nrepo_file = repos/redhat.repo\n")
        agent = Agent(load_config(conf))
        agent.register(org, username=server.admin_auth[0], password=server.admin_auth[1])
        uuid = agent.current_identity().uuid
        session = requests.Session()
        session.cert = (str(agent.identity.cert_path), str(agent.identity.key_path))
        session.verify = str(server.ca_path)

        issue, quiet, fetch_install, repo_write, refresh_all = [], [], [], [], []
        for run in range(runs):
            # A content change: the next listing issues a new certificate for 5,000 + run content sets.
            _product(server, org, 1000 + run, 1)
            start = time.perf_counter()
            session.get(f"{server.url}/consumers/{uuid}/certificates/serials", timeout=120, verify=str(server.ca_path)).raise_for_status()
            issue.append(time.perf_counter() - start)
            start = time.perf_counter()
            session.get(f"{server.url}/consumers/{uuid}/certificates/serials", timeout=120, verify=str(server.ca_path)).raise_for_status()
            quiet.append(time.perf_counter() - start)
            # ftagent: fetch and install the new certificate (the repository file is timed on its own below).
            listener, agent.entitlements.listener = agent.entitlements.listener, None
            start = time.perf_counter()
            agent.entitlements.refresh(agent.connection(), uuid)
            fetch_install.append(time.perf_counter() - start)
            agent.entitlements.listener = listener
            overrides = agent.repos.cached_overrides(uuid) or []
            start = time.perf_counter()
            assert agent.repos.write(agent.repos.repos(overrides))
            repo_write.append(time.perf_counter() - start)
            agent.config.content.repo_file.unlink()
            start = time.perf_counter()
            agent.refresh()
            refresh_all.append(time.perf_counter() - start)

        repo_file = agent.config.content.repo_file
        mtime = repo_file.stat().st_mtime_ns
        start = time.perf_counter()
        result = agent.checkin()
        checkin = time.perf_counter() - start
        untouched = repo_file.stat().st_mtime_ns == mtime
        [serial] = agent.entitlements.serials()
        cert_size = agent.entitlements.cert_path(serial).stat().st_size
        sets = len(agent.repositories(online=False))
        agent.close()

        def ms(values: list[float]) -> str:
            return f"{statistics.median(values) * 1000:.0f}"

        print_table(f"Simple Content Access, {sets} content sets, median of {runs} content changes (ms)",
                    ["step", "median ms", "max ms", "bound"],
                    [["ftmock: first listing after a change (issues the certificate)", ms(issue),
                      f"{max(issue) * 1000:.0f}", "< 500"],
                     ["ftmock: listing again (certificate kept)", ms(quiet), f"{max(quiet) * 1000:.0f}", "-"],
                     ["ftagent: fetch and install the certificate", ms(fetch_install),
                      f"{max(fetch_install) * 1000:.0f}", "< 500 with the next row"],
                     ["ftagent: read it and write the repository file", ms(repo_write),
                      f"{max(repo_write) * 1000:.0f}", "< 500 with the row above"],
                     ["ftagent refresh (all of it, overrides fetched, file restored)", ms(refresh_all),
                      f"{max(refresh_all) * 1000:.0f}", "-"]])
        print_table("sizes, and a check-in with nothing changed",
                    ["certificate file", "repository file", "check-in ms", "requests", "file rewritten"],
                    [[f"{cert_size / 1024:.0f} KiB", f"{repo_file.stat().st_size / 1024:.0f} KiB",
                      f"{checkin * 1000:.0f}", result.requests, "no" if untouched else "YES"]])


if __name__ == "__main__":
    main()
