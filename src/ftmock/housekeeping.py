"""The server's periodic work: the departure sweep and the inactive consumer cleaner.

Departures are evaluated when a report arrives, but an instance that simply stops appearing (its
last report removed it, and nothing else comes) must still depart once its grace has passed: the
sweep evaluates every org's groups every ``sweep_interval`` seconds. The inactive consumer cleaner
runs at start and then every hour. Each org is one transaction, so requests wait at most for one
org's evaluation.
"""

from __future__ import annotations

import logging
import threading
import time

from . import inactive, lifecycle
from .lifecycle import LifecycleSettings
from .store import Database

__all__ = ["INACTIVE_EVERY", "Housekeeping"]

log = logging.getLogger(__name__)

INACTIVE_EVERY = 3600.0


class Housekeeping:
    """A daemon thread that runs the sweep and the cleaner until :meth:`stop`."""

    def __init__(self, db: Database, settings: LifecycleSettings) -> None:
        self.db = db
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ftmock-housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        next_clean = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_clean:
                    next_clean = time.monotonic() + INACTIVE_EVERY
                    with self.db.transaction() as tx:
                        inactive.run(tx, self.settings.inactive_days)
                self.sweep()
            except Exception:  # the next round tries again; a stopping server's closed database ends here
                if self._stop.is_set():
                    return
                log.exception("housekeeping failed")
            self._stop.wait(self.settings.sweep_interval)

    def sweep(self) -> None:
        """Evaluate the departures of every org that has FT groups."""
        with self.db.transaction() as tx:
            orgs = [r["reported_owner"] for r in tx.all(
                "SELECT DISTINCT reported_owner FROM consumers WHERE reported_owner IS NOT NULL "
                "AND instance_uuid IS NOT NULL")]
        for org in orgs:
            if self._stop.is_set():
                return
            with self.db.transaction() as tx:
                lifecycle.evaluate_departures(tx, org, self.settings)
