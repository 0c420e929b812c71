"""The README's main command (`make demo` runs scripts/demo.py): the use case end to end, as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_demo_runs_the_use_case_to_the_end(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "DEMO_DIR": str(tmp_path / "demo")}, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # Before the heartbeat agent takes the lease, status says the workload must not run.
    assert "does not hold the FT lease and must not run the workload" in out
    assert "lease HELD (generation 1" in out
    before = re.search(r"identity before the failover: (\S+)", out)
    after = re.search(r"identity after the failover:  (\S+) \(failed over from (\S+)\)", out)
    assert before and after and after.group(1) != before.group(1) and after.group(2) == before.group(1)
    assert "is entitled from the virt pool of hypervisor-b.example.com" in out
