"""Log files, as virt-who's ``log_dir``, ``log_file`` and ``log_per_config`` ask for them.

ftreport always logs to stderr (the journal under systemd). When ``[global] log_dir`` or
``log_file`` is set (or ``log_per_config``, or ``VIRTWHO_LOG_*``, or ``-l``/``-f``/``-m``), it also
writes ``LOG_DIR/LOG_FILE`` (defaults ``/var/log/ftreport`` and ``ftreport.log``); with
``log_per_config`` each source section's messages go to ``LOG_DIR/ftreport.SECTION.log`` instead,
and the main file keeps the rest. Files are reopened when logrotate moves them
(``WatchedFileHandler``). A file that cannot be opened is reported and skipped: logging never
stops the reporter.

Messages are attributed to a source by the thread that logs them: each source runs inside
:func:`source_context`.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DEFAULT_LOG_DIR", "DEFAULT_LOG_FILE", "file_handlers", "per_config_path", "source_context"]

DEFAULT_LOG_DIR = Path("/var/log/ftreport")
DEFAULT_LOG_FILE = "ftreport.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_current = threading.local()
log = logging.getLogger(__name__)


@contextmanager
def source_context(name: str) -> Iterator[None]:
    """Attribute what this thread logs to source ``name`` while inside."""
    previous = getattr(_current, "name", None)
    _current.name = name
    try:
        yield
    finally:
        _current.name = previous


class _SourceFilter(logging.Filter):
    """Passes the records of one source (``name``), or of none (``name`` is None)."""

    def __init__(self, name: str | None) -> None:
        super().__init__()
        self.source = name

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(_current, "name", None) == self.source


def per_config_path(log_dir: Path, section: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", section)
    return log_dir / f"ftreport.{safe}.log"


def _open(path: Path, level: int) -> logging.Handler | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    except OSError as exc:
        log.warning("cannot log to %s: %s", path, exc.strerror or exc)
        return None
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(_FORMAT))
    return handler


def file_handlers(log_dir: Path | None, log_file: str | None, per_config: bool,
                  sections: Sequence[str], level: int = logging.NOTSET) -> list[logging.Handler]:
    """The file handlers the configuration asks for (none when it asks for no file)."""
    if log_dir is None and not log_file and not per_config:
        return []
    directory = log_dir or DEFAULT_LOG_DIR
    handlers: list[logging.Handler] = []
    main = _open(directory / (log_file or DEFAULT_LOG_FILE), level)
    if main is not None:
        if per_config:
            main.addFilter(_SourceFilter(None))
        handlers.append(main)
    if per_config:
        for section in sections:
            handler = _open(per_config_path(directory, section), level)
            if handler is not None:
                handler.addFilter(_SourceFilter(section))
                handlers.append(handler)
    return handlers
