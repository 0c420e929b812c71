"""ftmock: a 45,000-guest / 200-hypervisor check-in as ftreport sends it, after an FT failover.

ftreport sends the full report on every change, so the case that matters is a huge report of which
little changed. Timed from the POST to the job FINISHED (as the client sees it, polling every 10 ms)
on a real `ftmock serve` over HTTPS with a verified server certificate and HTTP Basic (a check-in is
a user's call, as ftreport or virt-who with a password make it): the first report (all created),
the identical report again, and the report after one FT group failed over (its primary gone from
its hypervisor, the backup reported as role 0, a new backup instance on a third hypervisor).
Target: the failover report in at most 0.3 s. FTBENCH_ROUNDS (default 3) sets the runs per row,
FTBENCH_REPORT_HOSTS (200) and FTBENCH_REPORT_GUESTS (225 per host) the size.
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests

from bench.ftmock_server import checkin, running_ftmock
from bench.table import print_table

HOSTS = int(os.environ.get("FTBENCH_REPORT_HOSTS", "200"))
GUESTS_PER_HOST = int(os.environ.get("FTBENCH_REPORT_GUESTS", "225"))
FT_PAIRS = 10
ROUNDS = int(os.environ.get("FTBENCH_ROUNDS", "3"))


def _vm(n: int) -> str:
    return f"{n:08x}-7a3c-4d2e-9f10-{n:012x}"


def _instance(pair: int, generation: int) -> str:
    return f"{pair:08x}-1f7e-4c1a-8b2d-{generation:012x}"


def _ft_guest(pair: int, generation: int, role: int, generations: tuple[int, int]) -> dict[str, Any]:
    return {"guestId": _vm(10_000_000 + pair), "state": 1, "attributes": {
        "virtWhoType": "esx", "active": 1, "instanceUUID": _instance(pair, generation),
        "ftinfo.role": str(role), "ftinfo.instanceUUIDs": [_instance(pair, g) for g in generations]}}


def build_report(failed_over: int = 0) -> dict[str, Any]:
    """The full report. FT pair p runs its primary on host 2p and its backup on host 2p+1; after
    `failed_over` failovers of pair 0 its primary runs on host k, its backup on host k+1."""
    hosts: list[list[dict[str, Any]]] = [[] for _ in range(HOSTS)]
    for h in range(HOSTS):
        hosts[h] = [{"guestId": _vm(h * GUESTS_PER_HOST + g), "state": 1,
                     "attributes": {"virtWhoType": "esx", "active": 1}} for g in range(GUESTS_PER_HOST)]
    for pair in range(FT_PAIRS):
        gen = failed_over if pair == 0 else 0
        where = (2 * pair + gen) % HOSTS
        pair_gens = (gen, gen + 1)
        hosts[where].append(_ft_guest(pair, gen, 0, pair_gens))
        hosts[(where + 1) % HOSTS].append(_ft_guest(pair, gen + 1, 1, pair_gens))
    return {"hypervisors": [
        {"hypervisorId": {"hypervisorId": f"host-{h}"}, "name": f"esx{h}.example.com", "guestIds": guests,
         "facts": {"cpu.cpu_socket(s)": "2", "hypervisor.type": "VMware ESXi", "hypervisor.version": "8.0.2"}}
        for h, guests in enumerate(hosts)]}


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _counts(result: dict[str, Any]) -> str:
    return " ".join(f"{k} {len(v)}" for k, v in result.items() if v)


def _row(what: str, runs: list[tuple[float, float, dict[str, Any]]], target: str) -> list[str]:
    return [what, str(len(runs)), f"{median([r[0] for r in runs]):.2f}", f"{median([r[1] for r in runs]):.2f}",
            _counts(runs[-1][2]), target]


def main() -> None:
    with running_ftmock() as server:
        s = requests.Session()
        s.auth = server.admin_auth
        first = json.dumps(build_report(0)).encode()
        guests = first.count(b'"guestId"')
        created = [checkin(server, s, first)]
        same = [checkin(server, s, first) for _ in range(ROUNDS)]
        failovers = [checkin(server, s, json.dumps(build_report(k)).encode()) for k in range(1, ROUNDS + 1)]
        assert all(len(r[2].get("failovers", [])) == 1 for r in failovers), failovers[-1][2]
        print_table(f"ftmock hypervisor report: {HOSTS} hypervisors, {guests} guests ({FT_PAIRS} FT pairs), "
                    f"{len(first) / 1e6:.1f} MB, over HTTPS",
                    ["report", "runs", "POST -> FINISHED s (median)", "job created -> finished s", "result",
                     "target"],
                    [_row("first report", created, "-"),
                     _row("identical report", same, "-"),
                     _row("one FT group failed over", failovers, "<= 0.3 s")])


if __name__ == "__main__":
    main()
