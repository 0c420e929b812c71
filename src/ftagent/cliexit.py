"""How a program of this project ends: one mapping from its errors to an exit code, and one line
``prog: error: message`` on stderr for the errors it expects.

A program's top-level group is a :class:`ProgramGroup` given its name, its exception tree and its
mapping (``exit_code_for``); ``ftagent``, ``ftreport`` and ``ftmock`` use it (``ftagent`` also
writes the error as JSON when a command was asked for ``--json``, through ``report_error``).
Usage errors are click's (with its usage hint) and exit 64; an error outside the tree is a bug:
exit 70, its traceback in the debug log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from ftagent.clickcompat import Group
from ftagent.journal import stderr_is_journal

__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "ProgramGroup", "error_line", "report_error",
           "run_program"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 64
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def error_line(prog: str, message: str) -> None:
    """``prog: error: message`` on stderr (with the journal's error priority when it is the journal)."""
    prefix = "<3>" if stderr_is_journal() else ""
    click.echo(f"{prefix}{prog}: error: {message}", err=True)


def report_error(program: str, exc: BaseException, internal: bool) -> None:
    """The one line for an error; an internal one (a bug) adds where its traceback is."""
    error_line(program, f"internal error: {type(exc).__name__}: {exc}" if internal else str(exc))
    if internal:
        prefix = "<3>" if stderr_is_journal() else ""
        click.echo(f"{prefix}{program}: run with --debug for a traceback", err=True)


def run_program(invoke: Callable[[], Any], program: str, errors: tuple[type[BaseException], ...],
                exit_code_for: Callable[[BaseException], int],
                report: Callable[[BaseException, bool], None] | None = None) -> int:
    """Run a click command's ``main(standalone_mode=False)``; returns its exit code (nothing escapes
    but SystemExit). ``errors`` is the program's exception tree, ``exit_code_for`` its mapping,
    ``report(exc, internal)`` how an error is told (default: :func:`report_error`)."""
    try:
        rv = invoke()
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo(f"{program}: aborted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except KeyboardInterrupt:
        click.echo(f"{program}: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as exc:
        internal = not isinstance(exc, errors)
        if internal:
            log.debug("internal error", exc_info=True)
        if report is None:
            report_error(program, exc, internal)
        else:
            report(exc, internal)
        return EXIT_INTERNAL if internal else exit_code_for(exc)
    return rv if isinstance(rv, int) else EXIT_OK


class ProgramGroup(Group):
    """A top-level group whose ``main`` ends every run with the program's exit code (:func:`run_program`).

    Subclasses set ``program`` (the name in messages), ``errors`` (the exception tree the program
    raises on purpose) and ``exit_code_for`` (the one mapping from those errors to exit codes)."""

    program = ""
    errors: tuple[type[BaseException], ...] = ()

    @staticmethod
    def exit_code_for(exc: BaseException) -> int:
        raise NotImplementedError

    def report_error(self, exc: BaseException, argv: Sequence[str], internal: bool) -> None:
        """Tell the user about an error of this run (``argv``: its arguments)."""
        report_error(self.program, exc, internal)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)

        def invoke() -> Any:
            return super(ProgramGroup, self).main(args=argv, prog_name=prog_name or self.program,
                                                  complete_var=complete_var, standalone_mode=False, **extra)

        code = run_program(invoke, self.program, self.errors, self.exit_code_for,
                           lambda exc, internal: self.report_error(exc, argv, internal))
        if standalone_mode:
            sys.exit(code)
        return code
