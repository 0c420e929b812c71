"""Running a command (``ftreport`` as a user would), with its own peak RSS and when it ran.

The peak is the child's ``ru_maxrss``, read by a bare ``python -S`` that starts it: Linux
carries the peak of the process a child was forked from across ``exec``, so a child of pytest (or
of a benchmark) would never show less than its parent. The exit time is ``time.monotonic()`` in
that starter, comparable with the same clock in any other process of the machine.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Run", "measure", "run_measured"]

_SPAWN = r"""
import os, sys, time
out, args = sys.argv[1], sys.argv[2:]
started = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execv(args[0], args)
_pid, status, usage = os.wait4(pid, 0)
ended = time.monotonic()
with open(out, "w") as f:
    f.write(f"{started} {ended} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    started: float  # time.monotonic() when it was started
    ended: float  # and when it exited
    rss_mib: float  # its peak RSS


def measure(argv: list[str], env: Mapping[str, str], work: Path, timeout: float = 120) -> Run:
    """Run ``argv`` (``work``: a directory for the measurement's own file)."""
    result = work / "measured"
    out = subprocess.run([sys.executable, "-S", "-c", _SPAWN, str(result), *argv], env=dict(env),
                         capture_output=True, text=True, timeout=timeout)
    started, ended, rss, code = result.read_text().split()
    return Run(int(code), out.stdout, out.stderr, float(started), float(ended), int(rss) / 1024)


def run_measured(args: list[str], env: Mapping[str, str], work: Path, timeout: float = 120) -> Run:
    """``ftreport ARGS``."""
    return measure([sys.executable, "-m", "ftreport", *args], env, work, timeout)
