"""ftreport on a big vCenter: 200 hosts / 10,000 VMs of the simulator (10 clusters x 20 hosts,
1,000 VMs per cluster), and the time from an FT failover in vCenter to the report reaching ftmock.

Targets (issue 4): `ftreport -o -p` at most 1.5x the wall time of a bare pyvmomi bulk retrieval of
the same VM properties measured in the same run, and under 150 MB peak RSS.
(virt-who 1.32 `--print` on this inventory: about 27 s and 266 MB.)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.table import print_table
from tests.conftest import FtmockServer
from tests.ftreport.conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim
from tests.kit.ca import server_tls

CLUSTERS, HOSTS_PER_CLUSTER, VMS_PER_CLUSTER, FT_PAIRS = 10, 20, 1000, 10
ROUNDS = 3
# govmomi's simulator ignores maxObjects and sends every object in one page, which ftreport
# refuses from a vCenter that was asked for fewer: the benchmarks ask for pages as big as that.
SIMULATOR_PAGE = 1_000_000

BARE = r"""
import json, ssl, sys
from pyVim.connect import SmartConnect
from pyVmomi import vim, vmodl
url, ca, user, pwd = sys.argv[1:5]
hostport = url.split("//")[1].split("/")[0]
host, port = hostport.rsplit(":", 1)
si = SmartConnect(host=host, port=int(port), user=user, pwd=pwd, sslContext=ssl.create_default_context(cafile=ca))
content = si.RetrieveContent()
view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
pc = vmodl.query.PropertyCollector
spec = pc.FilterSpec(
    objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[pc.TraversalSpec(name="t", path="view", skip=False,
                                                                               type=vim.view.ContainerView)])],
    propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=["config.uuid", "config.ftInfo.role",
             "config.ftInfo.instanceUuids", "runtime.faultToleranceState", "runtime.powerState", "runtime.host"])])
result = content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
n = len(result.objects)
while result.token:
    result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
    n += len(result.objects)
print(n)
"""


def _measure(args: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """(wall seconds, peak RSS MB, stdout) of a child process."""
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[:3]} exited with {proc.returncode}")
        out.seek(0)
        return wall, usage.ru_maxrss / 1024, out.read()


def _bulk(sim: Vcsim, work: Path, env: dict[str, str]) -> list[list[object]]:
    conf = work / "esx.conf"
    conf.write_text(f"[global]\nstate_dir={work / 'state'}\n\n[vcenter]\ntype=esx\nserver={sim.url}\n"
                    f"username={VCSIM_USER}\npassword={VCSIM_PASSWORD}\nca_cert={sim.tls.ca_path}\n"
                    f"page_size={SIMULATOR_PAGE}\n")
    bare_times, bare_rss, ft_times, ft_rss = [], [], [], []
    guests = hypervisors = 0
    for _ in range(ROUNDS):
        wall, rss, out = _measure([sys.executable, "-c", BARE, sim.url, str(sim.tls.ca_path), VCSIM_USER,
                                   VCSIM_PASSWORD], env)
        assert int(out) == CLUSTERS * VMS_PER_CLUSTER, out
        bare_times.append(wall)
        bare_rss.append(rss)
        wall, rss, out = _measure([sys.executable, "-m", "ftreport", "-c", str(conf), "-o", "-p"], env)
        body = json.loads(out)
        hypervisors = len(body["hypervisors"])
        guests = sum(len(h["guestIds"]) for h in body["hypervisors"])
        ft_times.append(wall)
        ft_rss.append(rss)
    bare, ours = statistics.median(bare_times), statistics.median(ft_times)
    return [
        ["bare pyvmomi RetrievePropertiesEx (VM props)", f"{bare:.2f}", f"{max(bare_rss):.0f}", "", "reference"],
        ["ftreport -o -p", f"{ours:.2f}", f"{max(ft_rss):.0f}", f"{ours / bare:.2f}x",
         f"{hypervisors} hypervisors, {guests} guests"],
        ["target", "", "< 150", "<= 1.5x", ""],
    ]


def _new_org(server: FtmockServer) -> str:
    key = f"bench-{int(time.time() * 1000)}"
    r = requests.post(server.url + "/owners", json={"key": key}, auth=server.admin_auth,
                      verify=str(server.ca_path), timeout=30)
    r.raise_for_status()
    return key


def _roles(server: FtmockServer, org: str) -> dict[str, str]:
    r = requests.get(server.url + f"/owners/{org}/consumers", auth=server.admin_auth,
                     verify=str(server.ca_path), timeout=60)
    r.raise_for_status()
    return {c["facts"]["instanceUUID"]: c["facts"]["ftinfo.role"] for c in r.json()
            if "instanceUUID" in c["facts"] and "failedOverTo" not in c}


def _failover_latency(sim: Vcsim, server: FtmockServer, work: Path, env: dict[str, str],
                      label: str, rounds: int) -> list[object]:
    org = _new_org(server)
    slug = "".join(c if c.isalnum() else "-" for c in label)
    conf = work / f"daemon-{slug}.conf"
    conf.write_text(
        f"[global]\nstate_dir={work / ('state-' + slug)}\nsettle=0.2\n\n[vcenter]\ntype=esx\nserver={sim.url}\n"
        f"username={VCSIM_USER}\npassword={VCSIM_PASSWORD}\nca_cert={sim.tls.ca_path}\nowner={org}\n"
        f"page_size={SIMULATOR_PAGE}\n"
        f"rhsm_hostname={server.url}\nrhsm_ca_cert={server.ca_path}\nrhsm_username={server.admin_auth[0]}\n"
        f"rhsm_password={server.admin_auth[1]}\n")
    log_path = work / f"daemon-{slug}.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "ftreport", "-c", str(conf)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 300
            while "report accepted" not in log_path.read_text():
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError(f"first report not accepted; see {log_path}")
                time.sleep(0.1)
            latencies = []
            for i in range(rounds):
                group = sim.state()["ft"][i]
                backup = group["instances"][1]["instanceUuid"]
                started = time.monotonic()
                sim.failover(str(i))
                deadline = started + 120
                while _roles(server, org).get(backup) != "0":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"failover {i} did not reach ftmock; see {log_path}")
                    time.sleep(0.02)
                latencies.append(time.monotonic() - started)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
    return [label, rounds, f"{statistics.median(latencies):.2f}", f"{max(latencies):.2f}"]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ftreport-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, FTREPORT_CONFIG=str(work / "none.conf"), FTREPORT_CONFIG_DIR=str(work / "none.d"))
        env.pop("NOTIFY_SOCKET", None)
        tls = server_tls(work / "ca")
        big = Vcsim(work / "big", tls, ["-cluster", str(CLUSTERS), "-host", str(HOSTS_PER_CLUSTER),
                                        "-vm", str(VMS_PER_CLUSTER), "-ft", str(FT_PAIRS)])
        small = Vcsim(work / "small", tls, ["-cluster", "1", "-host", "4", "-vm", "8", "-ft", "3"])
        (work / "ftmock").mkdir()
        server = FtmockServer(data_dir=work / "ftmock")
        rows: list[list[object]] = []
        latency: list[list[Any]] = []
        try:
            started = time.monotonic()
            big.workdir.mkdir()
            big.start(timeout=300)
            setup = time.monotonic() - started
            rows = _bulk(big, work, env)
            server.start()
            small.workdir.mkdir()
            small.start()
            latency.append(_failover_latency(small, server, work, env, "4 hosts / 8 VMs", 3))
            latency.append(_failover_latency(big, server, work, env, "200 hosts / 10,000 VMs", 3))
        finally:
            big.stop()
            small.stop()
            server.stop()
        print_table(f"ftreport esx: {CLUSTERS * HOSTS_PER_CLUSTER} hosts / {CLUSTERS * VMS_PER_CLUSTER} VMs "
                    f"(simulator built in {setup:.1f} s; median of {ROUNDS})",
                    ["run", "wall s", "peak RSS MB", "vs bare", "note"], rows)
        print_table("FT failover in vCenter -> report accepted by ftmock (daemon mode)",
                    ["inventory", "failovers", "median s", "max s"], latency)


if __name__ == "__main__":
    main()
