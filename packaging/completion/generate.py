"""Write the shell completion scripts of ftagent, ftreport and ftmock from their click command trees.

Run ``python packaging/completion/generate.py`` from the source tree after changing a CLI;
``tests/packaging/test_completion.py`` fails while the committed scripts differ from what click
generates.  The scripts only call the program back (``_FTAGENT_COMPLETE=bash_complete ftagent``),
so they change only when click's templates do, not when options are added.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.shell_completion import get_completion_class

HERE = Path(__file__).resolve().parent
SHELLS = {"bash": "{prog}.bash", "zsh": "_{prog}", "fish": "{prog}.fish"}


def commands() -> dict[str, click.Command]:
    """The three programs' top-level click commands, by program name."""
    from ftagent.cli import cli as ftagent_cli
    from ftmock.cli import cli as ftmock_cli
    from ftreport.cli import main as ftreport_cli

    return {"ftagent": ftagent_cli, "ftreport": ftreport_cli, "ftmock": ftmock_cli}


def scripts() -> dict[str, str]:
    """File name -> script text, for every program and shell."""
    out = {}
    for prog, command in commands().items():
        var = f"_{prog.upper()}_COMPLETE"
        for shell, pattern in SHELLS.items():
            cls = get_completion_class(shell)
            assert cls is not None
            out[pattern.format(prog=prog)] = cls(command, {}, prog, var).source()
    return out


def main() -> int:
    for name, text in scripts().items():
        (HERE / name).write_text(text)
        print(HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
