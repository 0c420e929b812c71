"""click 7 support: the one place where the programs bridge click 7 (RHEL 9) and click 8.

The shell completion scripts in ``packaging/completion`` are click 8's: they call the program back
with ``_PROG_COMPLETE=bash_complete`` (``zsh_complete``, ``fish_complete``) and read answers in
click 8's format. click 7 does not know these instructions and would run the command instead
(``ftreport`` would start its daemon on a Tab). ``Group`` answers them on click 7 with click 7's
own completion engine, in click 8's format, so the same scripts work on both.

The programs' top-level groups use ``Group`` (``@click.group(cls=Group)``); on click 8 it is a
plain ``click.Group``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import click

__all__ = ["CLICK7", "Group"]

#: click 8 replaced click 7's ``_bashcomplete`` engine with ``shell_completion``.
CLICK7 = importlib.util.find_spec("click.shell_completion") is None


class Group(click.Group):
    """A ``click.Group`` that answers click 8's completion requests on click 7 as well."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if CLICK7:
            prog_name = kwargs.get("prog_name") or os.path.basename(sys.argv[0] if sys.argv else "")
            var = "_{}_COMPLETE".format(prog_name.replace("-", "_").replace(".", "_").upper())
            instruction = os.environ.get(var, "")
            if instruction in ("bash_complete", "zsh_complete", "fish_complete"):
                click.echo(_complete7(self, prog_name, instruction.split("_", 1)[0]), nl=False)
                sys.exit(0)
        return super().main(*args, **kwargs)


def _complete7(command: click.Command, prog_name: str, shell: str) -> str:
    """Completions for ``COMP_WORDS``/``COMP_CWORD``, formatted like click 8's for ``shell``."""
    # click 7's completion engine (gone in click 8, hence untyped here).
    engine: Any = importlib.import_module("click._bashcomplete")

    words = engine.split_arg_string(os.environ.get("COMP_WORDS", ""))
    if shell == "fish":
        # fish passes the command line up to the cursor and the word being completed.
        incomplete = os.environ.get("COMP_CWORD", "")
        args = words[1:]
        if incomplete and args and args[-1] == incomplete:
            args.pop()
    else:
        cword = int(os.environ.get("COMP_CWORD", "0") or 0)
        args = words[1:cword]
        incomplete = words[cword] if cword < len(words) else ""

    # (click 7's parser consumes the argument list it is given: hand it copies.)
    choices = engine.get_choices(command, prog_name, list(args), incomplete)
    items: list[tuple[str, str, str]] = [("plain", str(value), help_ or "") for value, help_ in choices]
    if not items:
        path_type = _pending_path(engine, command, prog_name, args)
        if path_type is not None:
            items.append((path_type, incomplete, ""))

    lines = []
    for kind, value, help_ in items:
        if shell == "zsh":
            lines.append(f"{kind}\n{value}\n{help_ or '_'}")
        elif shell == "fish" and help_:
            lines.append(f"{kind},{value}\t{help_}")
        else:
            lines.append(f"{kind},{value}")
    return "\n".join(lines) + ("\n" if lines else "")


def _pending_path(engine: Any, command: click.Command, prog_name: str, args: list[str]) -> str | None:
    """``"file"`` or ``"dir"`` when the word being completed is the value of a ``click.Path``."""
    ctx = engine.resolve_ctx(command, prog_name, list(args))
    if ctx is None:
        return None
    # The same order as click 7's get_choices: an option's pending value, then an argument.
    pending = [p for p in ctx.command.params if engine.is_incomplete_option(args, p)]
    pending += [p for p in ctx.command.params if engine.is_incomplete_argument(ctx.params, p)]
    if not pending or not isinstance(pending[0].type, click.Path):
        return None
    path = pending[0].type
    return "dir" if path.dir_okay and not path.file_okay else "file"
