"""The fencing ladder: what the heartbeat does when this instance must stop acting as the holder.

Rungs, in order, each bounded in time and each tried even if an earlier one failed:

1. ``fence_command``: a hook command (split like a shell would, not run by a shell) with the reason
   as its last argument and in ``FTAGENT_FENCE_REASON`` (plus ``FTAGENT_LEASE_HOLDER_FINGERPRINT``,
   never the secret holder id itself, and ``FTAGENT_LEASE_GENERATION``); it is killed (its whole
   process group) when its time is up;
2. ``fence_units``: ``systemctl stop UNIT...`` for the named systemd units;
3. ``fence_signal``: a signal sent to named processes (matched on ``/proc/PID/comm`` or the base
   name of ``argv[0]``), to PIDs, or to the PID read from a pid file (a path);
4. the heartbeat then stops sending ``WATCHDOG=1`` (done by the caller, which knows the state), so
   a service manager with ``WatchdogSec=`` finishes the job.

The command runner, the ``systemctl`` name, the process table and ``kill`` are injectable for tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FenceLadder",
    "FenceReport",
    "Runner",
    "SignalSpec",
    "parse_signal_spec",
    "process_table",
    "run_bounded",
]

logger = logging.getLogger(__name__)

#: ``runner(argv, timeout, env) -> exit status`` (negative: killed by a signal; 124: timed out).
Runner = Callable[[Sequence[str], float, Mapping[str, str]], int]

TIMED_OUT = 124


def run_bounded(argv: Sequence[str], timeout: float, env: Mapping[str, str]) -> int:
    """Run ``argv`` in its own session; kill the session when ``timeout`` expires (returns 124)."""
    try:
        proc = subprocess.Popen(
            list(argv), env=dict(env), stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True
        )
    except OSError as exc:
        logger.error("fencing: cannot run %s: %s", argv[0] if argv else "?", exc)
        return 127
    try:
        return proc.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return TIMED_OUT


@dataclass(frozen=True)
class SignalSpec:
    """``fence_signal``: a signal and its targets (process names, PIDs, pid-file paths)."""

    signum: int
    targets: tuple[str, ...]

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return str(self.signum)


def parse_signal_spec(text: str) -> SignalSpec:
    """Parse ``"SIGKILL myapp 1234 /run/app.pid"`` (commas work as separators too).

    Raises ``ValueError`` with a readable message.
    """
    tokens = [t for t in text.replace(",", " ").split() if t]
    if len(tokens) < 2:
        raise ValueError("expected a signal and at least one process name, PID or pid file, e.g. 'SIGKILL myapp'")
    sig, targets = tokens[0], tuple(tokens[1:])
    if sig.isdigit():
        signum = int(sig)
        if not 1 <= signum < signal.NSIG:
            raise ValueError(f"signal number {signum} out of range")
    else:
        name = sig.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            signum = int(signal.Signals[name])
        except KeyError:
            raise ValueError(f"unknown signal {sig!r}") from None
    return SignalSpec(signum, targets)


def process_table(proc: str = "/proc") -> Iterable[tuple[int, set[str]]]:
    """``(pid, names)`` for each process: its ``comm`` and the base name of its ``argv[0]``."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        names: set[str] = set()
        with contextlib.suppress(OSError):
            names.add(Path(proc, entry, "comm").read_text().strip())
        with contextlib.suppress(OSError):
            argv0 = Path(proc, entry, "cmdline").read_bytes().split(b"\0", 1)[0]
            if argv0:
                names.add(os.path.basename(argv0.decode(errors="replace")))
        yield int(entry), names


@dataclass
class FenceReport:
    """What one run of the ladder did."""

    reason: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "steps": list(self.steps), "seconds": round(self.seconds, 3)}


class FenceLadder:
    """Runs the configured rungs; ``budget`` (seconds) bounds the whole ladder."""

    def __init__(
        self,
        *,
        command: str | None = None,
        units: Sequence[str] = (),
        signal_spec: SignalSpec | None = None,
        step_timeout: float = 5.0,
        runner: Runner = run_bounded,
        systemctl: str = "systemctl",
        processes: Callable[[], Iterable[tuple[int, set[str]]]] = process_table,
        kill: Callable[[int, int], None] = os.kill,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = shlex.split(command) if command else []
        self.units = list(units)
        self.signal_spec = signal_spec
        self.step_timeout = step_timeout
        self.runner = runner
        self.systemctl = systemctl
        self.processes = processes
        self.kill = kill
        self.env = dict(os.environ if env is None else env)

    @property
    def empty(self) -> bool:
        """True when no rung is configured (only the watchdog is left)."""
        return not self.command and not self.units and self.signal_spec is None

    def fence(
        self,
        reason: str,
        *,
        budget: float | None = None,
        holder_fingerprint: str | None = None,
        generation: int | None = None,
    ) -> FenceReport:
        """Run every rung; never raises (failures are logged and reported)."""
        started = time.monotonic()
        report = FenceReport(reason)
        limit = budget if budget is not None and budget > 0 else None

        def timeout() -> float:
            if limit is None:
                return self.step_timeout
            return max(0.05, min(self.step_timeout, limit - (time.monotonic() - started)))

        env = dict(self.env)
        env["FTAGENT_FENCE_REASON"] = reason
        env["FTAGENT_LEASE_HOLDER_FINGERPRINT"] = holder_fingerprint or ""
        env["FTAGENT_LEASE_GENERATION"] = "" if generation is None else str(generation)
        if self.command:
            argv = [*self.command, reason]
            rc = self._run("command", argv, timeout(), env)
            report.steps.append({"step": "command", "argv": argv, "status": rc})
        if self.units:
            argv = [self.systemctl, "stop", "--", *self.units]
            rc = self._run("units", argv, timeout(), env)
            report.steps.append({"step": "units", "units": list(self.units), "status": rc})
        if self.signal_spec is not None:
            pids = self._signal(self.signal_spec)
            report.steps.append({"step": "signal", "signal": self.signal_spec.name, "pids": pids})
        report.seconds = time.monotonic() - started
        return report

    def _run(self, step: str, argv: Sequence[str], timeout: float, env: Mapping[str, str]) -> int:
        try:
            rc = self.runner(argv, timeout, env)
        except Exception as exc:  # the ladder must go on whatever a rung does
            logger.error("fencing: %s %s failed: %s", step, argv[0], exc)
            return -1
        if rc == 0:
            logger.warning("fencing: %s %s done", step, " ".join(argv[:-1] if step == "command" else argv))
        else:
            logger.error("fencing: %s %s exited with %s", step, argv[0], rc)
        return rc

    def _targets(self, spec: SignalSpec) -> list[int]:
        me = os.getpid()
        pids: set[int] = set()
        names: set[str] = set()
        for target in spec.targets:
            if target.isdigit():
                pids.add(int(target))
            elif "/" in target:
                try:
                    pids.add(int(Path(target).read_text().split()[0]))
                except (OSError, ValueError, IndexError) as exc:
                    logger.error("fencing: cannot read pid file %s: %s", target, exc)
            else:
                names.add(target)
        if names:
            for pid, proc_names in self.processes():
                if proc_names & names:
                    pids.add(pid)
        pids.discard(me)
        return sorted(pids)

    def _signal(self, spec: SignalSpec) -> list[int]:
        sent: list[int] = []
        for pid in self._targets(spec):
            try:
                self.kill(pid, spec.signum)
            except ProcessLookupError:
                continue
            except OSError as exc:
                logger.error("fencing: cannot send %s to %d: %s", spec.name, pid, exc)
                continue
            sent.append(pid)
        if sent:
            logger.warning("fencing: sent %s to %s", spec.name, ", ".join(map(str, sent)))
        else:
            logger.warning("fencing: no process matched %s", " ".join(spec.targets))
        return sent
