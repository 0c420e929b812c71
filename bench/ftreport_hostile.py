"""ftreport against a hostile vCenter at full size (issue 30), and the scanner's cost in small chunks.

1. Decoding CPU of answers fed in 100-byte chunks (as a slow or hostile server can send them): one
   object of 2 MiB, with the bounds raised to let it through (the scanner's hold-back alone: it
   used to join and search again everything held back on every chunk, 10.7 s of CPU for this
   answer), the same with today's bounds, and a regular 5,200-object answer in 100-byte and in
   64 KiB chunks. Run the same file against an older tree to compare (``PYTHONPATH=OLD/src``).
2. ``ftreport -o -p`` against the simulator (2 clusters x 3 hosts, 12 VMs) through the paging
   proxy of the tests, which makes the ``RetrievePropertiesEx`` answer hostile
   (``tests/ftreport/vimhostile.py``): a flood of 500 MB of unknown elements within the default
   ``max_answer_size`` (512 MiB), one of 600 MB past it, a million levels of nesting, a host
   name of 200 MB, a page of 1.1 million objects, and an answer sent one byte a second. Wall
   time, peak RSS and outcome of each, against a normal run through the same proxy.

Goals: every case ends with its one-line error within ``timeout`` (or, for the flood within the
bounds, with the normal report) at about the normal run's peak RSS; the chunked decoding is
linear (100-byte chunks cost no more than a few times 64 KiB ones).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.table import print_table
from ftreport.sources import vimscan
from ftreport.sources.vimstream import decode_retrieve
from tests.ftreport.conftest import VCSIM_PASSWORD, VCSIM_USER, Vcsim
from tests.ftreport.peak import run_measured
from tests.ftreport.vimhostile import big_page, deep, drip, flood, huge_text
from tests.ftreport.vimproxy import HostileAnswer, PagingProxy
from tests.kit.ca import server_tls

VIM = Path(__file__).resolve().parent.parent / "tests" / "ftreport" / "data" / "vim"
ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/'
            'soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/'
            'XMLSchema-instance">\n<soapenv:Body>\n<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval>')
END = "</returnval></RetrievePropertiesExResponse>\n</soapenv:Body>\n</soapenv:Envelope>"


def _records() -> dict[str, dict[str, dict[str, Any]]]:
    return {"VirtualMachine": {}, "HostSystem": {}, "ClusterComputeResource": {}}


def _regular_answer(copies: int = 400) -> bytes:
    """The simulator's recorded answer (13 objects) with its objects repeated under new moIds."""
    data = (VIM / "retrieve.xml").read_bytes()
    first, last = data.index(b"<objects>"), data.rindex(b"</objects>") + len(b"</objects>")
    objects = data[first:last]
    parts = [re.sub(rb">(vm|host|domain-c)-(\d+)<", lambda m, n=n: b">%s-%d-%s<" % (m.group(1), n, m.group(2)),
                    objects) for n in range(copies)]
    return data[:first] + b"".join(parts) + data[last:]


def _decode_cpu(answer: bytes, chunk: int, runs: int = 3) -> tuple[float, str]:
    """(CPU seconds, outcome) of folding ``answer`` fed in ``chunk``-byte pieces."""
    times, outcome = [], ""
    for _ in range(runs):
        records = _records()
        started = time.thread_time()
        try:
            page = decode_retrieve((answer[i:i + chunk] for i in range(0, len(answer), chunk)), records)
            outcome = f"{page.objects:,} objects ({page.scanned:,} scanned)"
        except Exception as exc:  # the bound's error (VimLimitError, which an older tree does not have)
            outcome = f"{type(exc).__name__}: {exc}"
        times.append(time.thread_time() - started)
    return statistics.median(times), outcome


def _chunked() -> list[list[object]]:
    big = (ENVELOPE + '<objects><obj type="HostSystem">host-1</obj><propSet><name>name</name><val xsi:type="xsd:string">'
           + "h" * (2 << 20) + "</val></propSet></objects>" + END).encode()
    rows: list[list[object]] = []
    parse: Any = None
    try:
        from ftreport.sources import vimparse as parse
    except ImportError:  # an older tree: no parser bounds
        pass
    saved = (vimscan._ELEMENT_LIMIT, parse.MAX_TEXT if parse is not None else 0)
    try:
        vimscan._ELEMENT_LIMIT = 4 << 20  # the scanner's hold-back limit before the bounds
        if parse is not None:
            parse.MAX_TEXT = 4 << 20
        cpu, outcome = _decode_cpu(big, 100, runs=1)
        rows.append(["one 2 MiB object, bounds raised to 4 MiB", "100 B", f"{len(big) / 1e6:.1f} MB",
                     f"{cpu * 1000:.0f}", outcome])
    finally:
        vimscan._ELEMENT_LIMIT = saved[0]
        if parse is not None:
            parse.MAX_TEXT = saved[1]
    cpu, outcome = _decode_cpu(big, 100, runs=1)
    rows.append(["one 2 MiB object, the bounds as they are", "100 B", f"{len(big) / 1e6:.1f} MB",
                 f"{cpu * 1000:.0f}", outcome])
    regular = _regular_answer()
    for chunk in (100, 64 * 1024):
        cpu, outcome = _decode_cpu(regular, chunk)
        rows.append(["the regular shape, 5,200 objects", f"{chunk:,} B", f"{len(regular) / 1e6:.1f} MB",
                     f"{cpu * 1000:.0f}", outcome])
    return rows


CASES: list[tuple[str, HostileAnswer | None, dict[str, object]]] = [
    ("normal", None, {}),
    ("flood: 500 MB of unknown elements", flood(500 << 20), {"timeout": 600}),
    ("flood: 600 MB of unknown elements", flood(600 << 20), {"timeout": 600}),
    ("1,000,000 levels of nesting (3 MB)", deep(1_000_000), {}),
    ("host name of 200 MB", huge_text(200 << 20), {}),
    ("one page of 1,100,000 objects", big_page(1_100_000), {}),
    ("one byte a second (timeout = 5)", drip(), {"timeout": 5}),
]


def _hostile(work: Path) -> list[list[object]]:
    tls = server_tls(work / "ca")
    sim = Vcsim(work / "sim", tls, ["-cluster", "2", "-host", "3", "-vm", "4", "-standalone-host", "1", "-ft", "2"])
    sim.workdir.mkdir()
    sim.start()
    rows: list[list[object]] = []
    env = dict(os.environ, FTREPORT_CONFIG=str(work / "none.conf"), FTREPORT_CONFIG_DIR=str(work / "none.d"),
               FTREPORT_STATE_DIR=str(work / "state"))
    env.pop("NOTIFY_SOCKET", None)
    env.pop("FTREPORT_ESX_DECODER", None)
    try:
        with PagingProxy(sim.url, tls.cert_path, tls.key_path, tls.ca_path) as proxy:
            for label, answer, extra in CASES:
                keys = {"type": "esx", "server": proxy.url, "username": VCSIM_USER, "password": VCSIM_PASSWORD,
                        "ca_cert": tls.ca_path, "timeout": 60, **extra}
                conf = work / "esx.conf"
                conf.write_text("[vcenter]\n" + "".join(f"{k}={v}\n" for k, v in keys.items()))
                if answer is not None:
                    proxy.hostile("RetrievePropertiesEx", answer)
                try:
                    run = run_measured(["-c", str(conf), "-o", "-p"], env, work, timeout=900)
                finally:
                    proxy.hostile("RetrievePropertiesEx", None)
                if run.returncode == 0:
                    outcome = f"report of {len(json.loads(run.stdout)['hypervisors'])} hypervisors"
                else:
                    errors = [line for line in run.stderr.splitlines() if "ERROR" in line and "vcenter:" in line]
                    outcome = errors[0].split(" stopped: ", 1)[-1] if errors else run.stderr.strip()[-200:]
                after = run.ended - proxy.arrived["RetrievePropertiesEx"] if answer is not None else None
                rows.append([label, f"{run.ended - run.started:.2f}", "" if after is None else f"{after:.2f}",
                             f"{run.rss_mib:.0f}", outcome])
    finally:
        sim.stop()
    return rows


def main() -> None:
    print_table("Decoding CPU in small chunks (median of 3; the first case once)",
                ["answer", "chunks", "size", "CPU ms", "outcome"], _chunked())
    with tempfile.TemporaryDirectory(prefix="bench-ftreport-hostile-") as tmp:
        rows = _hostile(Path(tmp))
    print_table("ftreport -o -p against a hostile vCenter (RetrievePropertiesEx made hostile by the proxy)",
                ["case", "wall s", "s after the call", "peak RSS MiB", "outcome"], rows)


if __name__ == "__main__":
    main()
