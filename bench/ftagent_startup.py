"""ftagent start-up and check-in cost, as whole processes, against a local ftmock.

Prints the median wall time of N runs (FTAGENT_BENCH_RUNS, default 20) of `python -c pass`,
`ftagent --help`, `ftagent identity` and `ftagent identity --json` on a registered guest, plus a
whole `ftagent checkin`, and the number of HTTP requests and TLS connections a check-in with
nothing changed makes.

The commands run as an installed package runs them, from compiled bytecode: each runs once before
it is timed, with the bytecode kept in the run's temporary directory (PYTHONPYCACHEPREFIX) whatever
PYTHONDONTWRITEBYTECODE says, so that compiling the sources (about 10 ms for cli.py alone) is not
counted, nor left in the source tree.
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

from bench.table import print_table

__all__ = ["main"]

BIN = Path(sys.executable).parent
FTAGENT = str(BIN / "ftagent")
PASSWORD = "bench-secret"


def _timed(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float, float]:
    times = []
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # compiles
    for _ in range(runs):
        start = time.perf_counter()
        res = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        times.append((time.perf_counter() - start) * 1000)
        if res.returncode != 0:
            raise RuntimeError(f"{cmd} exited {res.returncode}: {res.stderr.decode()[-300:]}")
    return statistics.median(times), min(times), max(times)


def main() -> None:
    runs = int(os.environ.get("FTAGENT_BENCH_RUNS", "20"))
    with tempfile.TemporaryDirectory(prefix="ftagent-bench-") as tmp:
        root = Path(tmp)
        data = root / "ftmock"
        data.mkdir()
        log = open(root / "ftmock.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(
            [sys.executable, "-m", "ftmock", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data)],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, FTMOCK_ADMIN_PASSWORD=PASSWORD),
        )
        try:
            deadline = time.monotonic() + 30
            while not (data / "url").exists() or not (data / "url").read_text().strip():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("ftmock did not start")
                time.sleep(0.05)
            url = (data / "url").read_text().strip()
            agent = root / "agent"
            (agent / "facts").mkdir(parents=True)
            (agent / "facts" / "virt.facts").write_text(json.dumps({"virt.uuid": "4c4c4544-0000-1111-2222-333344445555"}))
            conf = agent / "ftagent.conf"
            conf.write_text(
                f"[server]\nurl = {url}\nca_cert = {data / 'ca.pem'}\n"
                "[agent]\nidentity_dir = id\nentitlement_dir = ent\nfacts_dir = facts\nlock_file = lock\n"
            )
            env = dict(os.environ, FTAGENT_CONFIG=str(conf), FTAGENT_PASSWORD=PASSWORD,
                       PYTHONPYCACHEPREFIX=str(root / "pycache"))
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            subprocess.run([FTAGENT, "register", "--org", "admin", "--username", "admin"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            rows = []
            for label, cmd in [
                ("python -c pass", [sys.executable, "-c", "pass"]),
                ("ftagent --help", [FTAGENT, "--help"]),
                ("ftagent identity", [FTAGENT, "identity"]),
                ("ftagent identity --json", [FTAGENT, "identity", "--json"]),
                ("ftagent checkin (whole process, TLS)", [FTAGENT, "checkin"]),
            ]:
                median, low, high = _timed(cmd, env, runs)
                rows.append((label, f"{median:.0f}", f"{low:.0f}", f"{high:.0f}"))
            print_table(f"ftagent start-up, wall ms over {runs} runs", ["command", "median", "min", "max"], rows)
            out = subprocess.run([FTAGENT, "checkin", "--json"], env=env, check=True, capture_output=True, text=True)
            result = json.loads(out.stdout)
            print_table("ftagent checkin with nothing changed", ["HTTP requests", "TLS connections", "facts sent"],
                        [(result["requests"], result["connections"], result["facts_sent"])])
        finally:
            server.terminate()
            server.wait(timeout=20)
            log.close()


if __name__ == "__main__":
    main()
