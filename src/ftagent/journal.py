"""Log lines for the systemd journal: an ``<N>`` priority prefix on each line (sd-daemon(3)).

Under systemd, stderr goes to the journal as one stream; without a prefix every line gets the
unit's default priority, so ``journalctl -p warning`` would miss a fence logged as an error.
Both ``ftagent`` and ``ftreport`` use this when (and only when) their stderr *is* the journal.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["JournalFormatter", "stderr_is_journal"]


class JournalFormatter(logging.Formatter):
    """Prefix every line with its priority (``<3>`` error ... ``<7>`` debug); the journal adds the
    time and the program name itself."""

    _PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

    def format(self, record: logging.LogRecord) -> str:
        prio = self._PRIORITY.get(record.levelno, 6 if record.levelno >= logging.INFO else 7)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines() or [""])


def stderr_is_journal() -> bool:
    """True when systemd connected stderr to the journal (``JOURNAL_STREAM`` names its device:inode)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"
