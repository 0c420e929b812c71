"""click's test runner with stderr kept apart from stdout on every supported click version.

click 7 and 8.0-8.1 mix stderr into ``result.output`` unless ``mix_stderr=False`` (and then
``result.stderr`` raises); click 8.2 dropped the argument and always captures both, with ``output``
holding the two interleaved. Tests read ``result.stdout`` and ``result.stderr``; ``all_output``
gives both wherever a message may go to either.
"""

from __future__ import annotations

import inspect
from typing import Any

from click.testing import CliRunner, Result

__all__ = ["Runner", "all_output"]

_MIX_STDERR = "mix_stderr" in inspect.signature(CliRunner.__init__).parameters


class Runner(CliRunner):
    """A ``CliRunner`` whose results have a separate ``stderr`` on click 7 and 8."""

    def __init__(self, **kw: Any) -> None:
        if _MIX_STDERR:
            kw.setdefault("mix_stderr", False)
        super().__init__(**kw)


def all_output(result: Result) -> str:
    """What the command wrote to stdout and stderr."""
    return result.stdout + result.stderr
