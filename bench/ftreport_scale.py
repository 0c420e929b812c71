"""ftreport at the scale of the largest vCenters (issue 17): the streaming SOAP decoder against pyvmomi.

Simulators of 10 clusters x 20 hosts with 100, 1,000 and 4,500 VMs per cluster (1,000 / 10,000 /
45,000 VMs), each measured in paired rounds (the runs of one round back to back, medians reported):

- bare pyvmomi: login + ``RetrievePropertiesEx`` of the VM properties, nothing else (the reference);
- ``ftreport -o -p`` with the streaming decoder (the default) and with ``decoder = pyvmomi``;

then ten 4,500-VM simulators collected at once against one of them alone (and ten stand-ins that
replay one simulator's recorded answers), the CPU to decode one such answer with the XML parser
alone and with the scanner of the regular shape in front of it, and the time from an FT failover
in the 45,000-VM simulator to the report accepted by ftmock (daemon mode, stream decoder).

Goals: 10,000 VMs <= 1.3 s and <= 50 MiB; 45,000 VMs <= 5 s and <= 100 MiB; ten vCenters at once
<= 1.5x one; failover on 45,000 VMs <= 1 s. FTBENCH_ROUNDS (default 3) sets the rounds,
FTBENCH_SCALE_SIZES (default ``100,1000,4500``) the VMs per cluster, FTBENCH_SCALE_PARTS (default
``sizes,failover,concurrent``) what is measured, FTBENCH_SCALE_SOURCE_VMS (4500) the VMs
of each of the ten vCenters.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench._vimreplay import Recording
from bench.ftreport_esx import BARE, SIMULATOR_PAGE, _new_org
from bench.table import print_table
from ftreport.sources.esx import PROPERTIES
from ftreport.sources.vimstream import decode_retrieve, filter_spec_xml
from tests.conftest import FtmockServer
from tests.ftreport.conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim
from tests.ftreport.peak import measure
from tests.kit.ca import TLSFiles, server_tls

CLUSTERS, HOSTS_PER_CLUSTER, FT_PAIRS = 10, 20, 10
SOURCES = 10
VMS_PER_SOURCE = int(os.environ.get("FTBENCH_SCALE_SOURCE_VMS", "4500"))
ROUNDS = int(os.environ.get("FTBENCH_ROUNDS", "3"))
SIZES = [int(s) for s in os.environ.get("FTBENCH_SCALE_SIZES", "100,1000,4500").split(",")]
PARTS = set(os.environ.get("FTBENCH_SCALE_PARTS", "sizes,failover,concurrent").split(","))


def _measure(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of a command, measured from a small spawner
    (tests/ftreport/peak.py says why)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = measure(args, env, Path(tmp), timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(f"{args[:3]} exited with {run.returncode}")
    return run.ended - run.started, run.rss_mib, run.stdout


# The floor: the same PropertyCollector request sent with http.client (login too, no
# pyVmomi), its answer parsed as it streams in and folded into one tuple per object. No report.
FLOOR = r"""
import http.client, re, ssl, sys
import xml.etree.ElementTree as ET
url, ca, user, pwd, spec = sys.argv[1:6]
host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
conn = http.client.HTTPSConnection(host, int(port), context=ssl.create_default_context(cafile=ca), timeout=300)
envelope = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>%s</soapenv:Body></soapenv:Envelope>')
headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "urn:vim25/7.0"}
def call(body):
    conn.request("POST", "/sdk", body=(envelope % body).encode(), headers=headers)
    return conn.getresponse()
def field(data, tag):
    return re.search(rb"<%s[^>]*>([^<]*)</%s>" % (tag.encode(), tag.encode()), data).group(1).decode()
sc = call('<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this>'
          '</RetrieveServiceContent>').read()
login = call('<Login xmlns="urn:vim25"><_this type="SessionManager">%s</_this><userName>%s</userName>'
             '<password>%s</password></Login>' % (field(sc, "sessionManager"), user, pwd))
login.read()
headers["Cookie"] = re.search(r'vmware_soap_session="?[^";]+"?', login.getheader("Set-Cookie")).group(0)
view = field(call('<CreateContainerView xmlns="urn:vim25"><_this type="ViewManager">%s</_this>'
                  '<container type="Folder">%s</container><type>VirtualMachine</type><type>HostSystem</type>'
                  '<type>ClusterComputeResource</type><recursive>true</recursive></CreateContainerView>'
                  % (field(sc, "viewManager"), field(sc, "rootFolder"))).read(), "returnval")
answer = call('<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">%s</_this>%s<options/>'
              '</RetrievePropertiesEx>' % (field(sc, "propertyCollector"), spec.replace("VIEW", view)))
V = "{urn:vim25}"
parser = ET.XMLPullParser(events=("end",))
objects = []
while True:
    chunk = answer.read1(65536)
    if not chunk:
        break
    parser.feed(chunk)
    for _event, elem in parser.read_events():
        if elem.tag == V + "objects":
            objects.append((elem[0].text, tuple((p[0].text, p[1].text if len(p[1]) == 0 else [i.text for i in p[1]])
                                                for p in elem.iterfind(V + "propSet"))))
            elem.clear()
print(len(objects))
"""


def _section(name: str, sim: Vcsim, decoder: str = "stream") -> str:
    return (f"[{name}]\ntype=esx\nserver={sim.url}\nusername={VCSIM_USER}\npassword={VCSIM_PASSWORD}\n"
            f"ca_cert={sim.tls.ca_path}\ndecoder={decoder}\npage_size={SIMULATOR_PAGE}\n\n")


def _mib(rss: float) -> str:
    return f"{rss:.0f}"  # _measure gives ru_maxrss (KiB) / 1024


def _sizes(work: Path, env: dict[str, str], tls: TLSFiles,
           server: FtmockServer) -> tuple[list[list[object]], list[list[object]]]:
    """Rows by size, and the failover row measured on the biggest simulator before it stops."""
    rows: list[list[object]] = []
    latency: list[list[object]] = []
    for per_cluster in SIZES if "sizes" in PARTS else [max(SIZES)]:
        vms = CLUSTERS * per_cluster
        sim = Vcsim(work / f"sim-{vms}", tls, ["-cluster", str(CLUSTERS), "-host", str(HOSTS_PER_CLUSTER),
                                               "-vm", str(per_cluster), "-ft", str(FT_PAIRS)])
        sim.workdir.mkdir()
        sim.start(timeout=900)
        try:
            confs = {}
            for decoder in ("stream", "pyvmomi"):
                confs[decoder] = work / f"{vms}-{decoder}.conf"
                confs[decoder].write_text(f"[global]\nstate_dir={work / 'state'}\n\n" + _section("vcenter", sim, decoder))
            runs: dict[str, list[tuple[float, float]]] = {"floor": [], "bare": [], "stream": [], "pyvmomi": []}
            outputs = set()
            spec = filter_spec_xml("specSet", "VIEW", PROPERTIES)
            for _ in range(ROUNDS if "sizes" in PARTS else 0):
                wall, rss, out = _measure([sys.executable, "-S", "-c", FLOOR, sim.url, str(sim.tls.ca_path), VCSIM_USER,
                                           VCSIM_PASSWORD, spec], env)
                assert int(out) == vms + CLUSTERS * (HOSTS_PER_CLUSTER + 1), out
                runs["floor"].append((wall, rss))
                wall, rss, out = _measure([sys.executable, "-c", BARE, sim.url, str(sim.tls.ca_path), VCSIM_USER,
                                           VCSIM_PASSWORD], env)
                assert int(out) == vms, out
                runs["bare"].append((wall, rss))
                for decoder in ("stream", "pyvmomi"):
                    wall, rss, out = _measure([sys.executable, "-m", "ftreport", "-c", str(confs[decoder]),
                                               "-o", "-p"], env)
                    outputs.add(out)
                    runs[decoder].append((wall, rss))
            if "sizes" not in PARTS:
                if "failover" in PARTS:
                    latency.append(_failovers(sim, server, work, env, 5))
                continue
            assert len(outputs) == 1, "the decoders' reports differ"
            bare = statistics.median(w for w, _ in runs["bare"])
            floor = statistics.median(w for w, _ in runs["floor"])
            for label, key in (("floor: raw SOAP + streamed parse", "floor"), ("bare pyvmomi retrieval", "bare"),
                               ("ftreport -o -p (stream)", "stream"), ("ftreport -o -p (decoder=pyvmomi)", "pyvmomi")):
                wall = statistics.median(w for w, _ in runs[key])
                rss = statistics.median(r for _, r in runs[key])
                rows.append([f"{vms:,}", label, f"{wall:.2f}", _mib(rss), f"{wall / bare:.2f}x", f"{wall / floor:.2f}x"])
            if per_cluster == max(SIZES) and "failover" in PARTS:
                latency.append(_failovers(sim, server, work, env, 5))
        finally:
            sim.stop()
    return rows, latency


# The simulators' share of a concurrent collection: log in, then ask each simulator for the same
# properties at once and only read the bytes (no decoding). All simulators run on this machine's
# cores, so this is the floor ten sources can reach here.
_SERVERS = r"""
import json, ssl, sys, threading, time
from pyVim.connect import SmartConnect
from pyVmomi import vim
from ftreport.sources.esx import PROPERTIES
from ftreport.sources.vimstream import VimSoapClient, filter_spec_xml
jobs = []
for url, ca, user, pwd in json.loads(sys.argv[1]):
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca)
    si = SmartConnect(host=host, port=int(port), user=user, pwd=pwd, sslContext=ctx)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(
        content.rootFolder, [vim.VirtualMachine, vim.HostSystem, vim.ClusterComputeResource], True)
    stub = si._GetStub()
    client = VimSoapClient(host=host, port=int(port), path="/sdk", ssl_context=ctx, timeout=120,
                           session_id=stub.GetSessionId(), soap_action=stub.versionId)
    body = ('<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">%s</_this>%s<options/>'
            '</RetrievePropertiesEx>' % (content.propertyCollector._moId, filter_spec_xml("specSet", view._moId, PROPERTIES)))
    jobs.append((client, body))
started = time.monotonic()
threads = [threading.Thread(target=c.call, args=(b, lambda chunks: sum(len(x) for x in chunks))) for c, b in jobs]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(time.monotonic() - started)
"""


def _concurrent(work: Path, env: dict[str, str], tls: TLSFiles) -> list[list[object]]:
    sims = [Vcsim(work / f"multi-{i}", tls, ["-cluster", "1", "-host", str(HOSTS_PER_CLUSTER),
                                             "-vm", str(VMS_PER_SOURCE), "-ft", "2"]) for i in range(SOURCES)]
    try:
        for sim in sims:
            sim.workdir.mkdir()
            sim.start(timeout=900)
        one = work / "one.conf"
        one.write_text(f"[global]\nstate_dir={work / 'state'}\n\n" + _section("vc0", sims[0]))
        many = work / "many.conf"
        many.write_text(f"[global]\nstate_dir={work / 'state'}\n\n"
                        + "".join(_section(f"vc{i}", sim) for i, sim in enumerate(sims)))
        singles, alls, rss_one, rss_all, floor_one, floor_all = [], [], [], [], [], []
        guests = 0
        creds = [[sim.url, str(sim.tls.ca_path), VCSIM_USER, VCSIM_PASSWORD] for sim in sims]
        for _ in range(ROUNDS):
            for group, into in ((creds[:1], floor_one), (creds, floor_all)):
                _w, _r, out = _measure([sys.executable, "-c", _SERVERS, json.dumps(group)], env)
                into.append(float(out))
            wall, rss, _out = _measure([sys.executable, "-m", "ftreport", "-c", str(one), "-o", "-p"], env)
            singles.append(wall)
            rss_one.append(rss)
            wall, rss, out = _measure([sys.executable, "-m", "ftreport", "-c", str(many), "-o", "-p"], env)
            alls.append(wall)
            rss_all.append(rss)
            guests = out.count('"guestId"')
        replayed = _replayed(work, env, sims[0])
    finally:
        for sim in sims:
            sim.stop()
    single, together = statistics.median(singles), statistics.median(alls)
    f_one, f_all = statistics.median(floor_one), statistics.median(floor_all)
    return [
        [f"simulators only: 1 x {VMS_PER_SOURCE:,}", f"{f_one:.2f}", "", "1.00x", "bytes read, not decoded"],
        [f"simulators only: {SOURCES} x {VMS_PER_SOURCE:,} at once", f"{f_all:.2f}", "", f"{f_all / f_one:.2f}x",
         "the floor on this machine"],
        [f"1 x {VMS_PER_SOURCE:,} VMs", f"{single:.2f}", _mib(statistics.median(rss_one)), "1.00x", ""],
        [f"{SOURCES} x {VMS_PER_SOURCE:,} VMs at once", f"{together:.2f}", _mib(statistics.median(rss_all)),
         f"{together / single:.2f}x", f"{guests:,} guests (identical simulators: one merged report)"],
        *replayed,
    ]


def _replayed(work: Path, env: dict[str, str], sim: Vcsim) -> list[list[object]]:
    """One vs ten stand-in vCenters that replay one simulator's recorded answers at its pace
    (bench/_vimreplay.py): the reporter's own share, as with vCenters on machines of their own."""
    recording = Recording(sim.url, sim.tls.cert_path, sim.tls.key_path, sim.tls.ca_path)
    recording.start()
    try:
        conf = work / "record.conf"
        conf.write_text(f"[global]\nstate_dir={work / 'state'}\n\n"
                        + _section("rec", sim).replace(f"server={sim.url}", f"server={recording.url}"))
        _measure([sys.executable, "-m", "ftreport", "-c", str(conf), "-o", "-p"], env)
    finally:
        recording.stop()
    recorded = work / "answers.pickle"
    recording.save(recorded)
    _DECODE_ROWS[:] = _decode_cpu(max((a.body for a in recording.answers.values()), key=len))
    slowest = max(a.seconds for a in recording.answers.values())
    server = subprocess.Popen([sys.executable, "-m", "bench._vimreplay", "serve", str(recorded),
                               str(sim.tls.cert_path), str(sim.tls.key_path), str(SOURCES)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    try:
        assert server.stdout is not None
        urls = json.loads(server.stdout.readline())
        sections = [_section(f"vc{i}", sim).replace(f"server={sim.url}", f"server={url}") for i, url in enumerate(urls)]
        one, many = work / "replay-one.conf", work / "replay-many.conf"
        one.write_text(f"[global]\nstate_dir={work / 'state'}\n\n" + sections[0])
        many.write_text(f"[global]\nstate_dir={work / 'state'}\n\n" + "".join(sections))
        runs: dict[Path, list[tuple[float, float]]] = {one: [], many: []}
        for _ in range(ROUNDS):
            for conf in (one, many):
                wall, rss, _out = _measure([sys.executable, "-m", "ftreport", "-c", str(conf), "-o", "-p"], env)
                runs[conf].append((wall, rss))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    single = statistics.median(w for w, _ in runs[one])
    together = statistics.median(w for w, _ in runs[many])
    return [
        [f"replayed: 1 x {VMS_PER_SOURCE:,} VMs", f"{single:.2f}", _mib(statistics.median(r for _, r in runs[one])),
         "1.00x", f"recorded answers, the slowest after {slowest:.2f} s as the simulator gave it"],
        [f"replayed: {SOURCES} x {VMS_PER_SOURCE:,} VMs at once", f"{together:.2f}",
         _mib(statistics.median(r for _, r in runs[many])), f"{together / single:.2f}x",
         "servers that cost no CPU: the reporter's own share"],
    ]


_DECODE_ROWS: list[list[object]] = []


def _decode_cpu(answer: bytes, runs: int = 9) -> list[list[object]]:
    """CPU to fold one recorded RetrievePropertiesEx answer into fresh records: the XML parser
    alone, and the scanner of the regular shape in front of it (in 16 KiB chunks, as TLS gives them)."""
    chunks = [answer[i:i + 16384] for i in range(0, len(answer), 16384)]
    rows: list[list[object]] = []
    for scan, label in ((False, "XML parser alone"), (True, "scanner of the regular shape, then the parser")):
        times, scanned, objects = [], 0, 0
        for _ in range(runs):
            records: dict[str, dict[str, dict[str, object]]] = {"VirtualMachine": {}, "HostSystem": {},
                                                                "ClusterComputeResource": {}}
            started = time.thread_time()
            page = decode_retrieve(chunks, records, scan=scan)
            times.append(time.thread_time() - started)
            scanned, objects = page.scanned, page.objects
        rows.append([label, f"{len(answer) / 1e6:.2f} MB", f"{objects:,}", f"{scanned:,}",
                     f"{statistics.median(times) * 1000:.0f}"])
    return rows


def _log_time(line: str) -> float:
    """Epoch seconds of a log line ("2026-11-27 17:22:46,928 DEBUG ...", local time)."""
    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def _consumer_of(server: FtmockServer, org: str, instance: str) -> str:
    r = requests.get(server.url + f"/owners/{org}/consumers", auth=server.admin_auth,
                     verify=str(server.ca_path), timeout=60)
    r.raise_for_status()
    return next(str(c["uuid"]) for c in r.json() if c["facts"].get("instanceUUID") == instance)


def _role(server: FtmockServer, consumer: str) -> str | None:
    r = requests.get(server.url + f"/consumers/{consumer}", auth=server.admin_auth,
                     verify=str(server.ca_path), timeout=60)
    r.raise_for_status()
    role = r.json()["facts"].get("ftinfo.role")
    return None if role is None else str(role)


def _failovers(sim: Vcsim, server: FtmockServer, work: Path, env: dict[str, str], rounds: int) -> list[object]:
    """Failover -> report accepted by ftmock, split at the moment the source had the update set
    (the daemon runs with debug logging, which logs "N object updates" when one is decoded)."""
    org = _new_org(server)
    conf = work / "daemon.conf"
    conf.write_text(
        f"[global]\nstate_dir={work / 'daemon-state'}\nsettle=0.2\ndebug=true\n\n" + _section("vcenter", sim)
        + f"owner={org}\nrhsm_hostname={server.url}\nrhsm_ca_cert={server.ca_path}\n"
        f"rhsm_username={server.admin_auth[0]}\nrhsm_password={server.admin_auth[1]}\n")
    log_path = work / "daemon.log"
    totals, simulator, ours, server_side = [], [], [], []
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "ftreport", "-c", str(conf)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 600
            while "report accepted" not in log_path.read_text():
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError(f"first report not accepted; see {log_path}")
                time.sleep(0.1)
            for i in range(rounds):
                time.sleep(1.5)  # let the daemon's previous report settle
                seen = len(log_path.read_text().splitlines())
                backup = sim.state()["ft"][i]["instances"][1]["instanceUuid"]
                # Poll the backup's own consumer: listing the org's consumers (with 45,000 guest
                # ids) ten times a second would load the server being measured.
                consumer = _consumer_of(server, org, backup)
                started, wall_started = time.monotonic(), time.time()
                sim.failover(str(i))
                deadline = started + 120
                while _role(server, consumer) != "0":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"failover {i} did not reach ftmock; see {log_path}")
                    time.sleep(0.02)
                total = time.monotonic() - started
                deadline = time.monotonic() + 30
                while True:  # the daemon logs the acceptance just after ftmock's job finished
                    lines = log_path.read_text().splitlines()[seen:]
                    accepted = [line for line in lines if "report accepted by" in line]
                    if accepted or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                update = next((_log_time(line) for line in lines if "object updates" in line), None)
                totals.append(total)
                if update is not None and accepted:
                    # "... in N.NN s": the check-in's duration, POST to finished job.
                    took = float(accepted[0].rsplit(" in ", 1)[1].split()[0])
                    posted = _log_time(accepted[0]) - took
                    simulator.append(max(0.0, update - wall_started))
                    ours.append(max(0.0, posted - update))
                    server_side.append(took)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" if values else "-"

    vms = CLUSTERS * int(sim.args[sim.args.index("-vm") + 1])
    return [f"{vms:,} VMs (stream)", rounds, med(totals), f"{max(totals):.2f}", med(simulator),
            med(ours), med(server_side)]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ftreport-scale-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, FTREPORT_CONFIG=str(work / "none.conf"), FTREPORT_CONFIG_DIR=str(work / "none.d"))
        env.pop("NOTIFY_SOCKET", None)
        env.pop("FTREPORT_ESX_DECODER", None)
        tls = server_tls(work / "ca")
        (work / "ftmock").mkdir()
        server = FtmockServer(data_dir=work / "ftmock")
        server.start()
        try:
            sizes, latency = _sizes(work, env, tls, server)
        finally:
            server.stop()
        print_table(f"ftreport esx by inventory size ({CLUSTERS} clusters x {HOSTS_PER_CLUSTER} hosts; "
                    f"median of {ROUNDS} paired rounds)",
                    ["VMs", "run", "wall s", "peak RSS MiB", "vs bare", "vs floor"], sizes)
        print_table("FT failover in the simulator -> report accepted by ftmock (daemon, settle 0.2 s)",
                    ["inventory", "failovers", "to accepted s", "max s", "simulator: change -> update set s",
                     "ftreport: update set -> POST s", "ftmock: POST -> job done s"],
                    latency)
        if "concurrent" not in PARTS:
            return
        concurrent = _concurrent(work, env, tls)
        print_table(f"{SOURCES} vCenters collected at once (`ftreport -o -p`, median of {ROUNDS} paired rounds)",
                    ["sources", "wall s", "peak RSS MiB", "vs one", "note"], concurrent)
        print_table(f"Decoding one simulator answer of {VMS_PER_SOURCE:,} VMs (CPU, median of 9)",
                    ["decoder", "answer", "objects", "of them scanned", "CPU ms"], _DECODE_ROWS)


if __name__ == "__main__":
    main()
