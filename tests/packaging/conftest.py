"""Shared helpers of the packaging tests: paths, the three click command trees, man page blocks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"
PACKAGING = ROOT / "packaging"
UNITS = PACKAGING / "systemd"


def programs() -> dict[str, click.Command]:
    """Program name -> its top-level click command, as the entry points run them."""
    from ftagent.cli import cli as ftagent_cli
    from ftmock.cli import cli as ftmock_cli
    from ftreport.cli import main as ftreport_cli

    return {"ftagent": ftagent_cli, "ftreport": ftreport_cli, "ftmock": ftmock_cli}


@dataclass(frozen=True)
class Node:
    """One command of a tree: its path below the program (empty for the program itself)."""

    path: tuple[str, ...]
    command: click.Command

    @property
    def options(self) -> list[click.Option]:
        return [p for p in self.command.params if isinstance(p, click.Option)]


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[Node]:
    """Every command of a click tree, depth first, hidden ones excluded."""
    yield Node(path, command)
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                yield from walk(sub, (*path, name))


def man_blocks(text: str, macro: str) -> dict[str, str]:
    """Split mdoc source into blocks headed by ``.Sh``/``.Ss`` lines: title -> source up to the next
    heading of the same or a higher level."""
    levels = {"Sh": 0, "Ss": 1}
    want = levels[macro]
    blocks: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^\.(Sh|Ss)\s+(.*)$", line)
        if m and levels[m.group(1)] <= want:
            if current is not None:
                blocks[current] = "\n".join(lines)
            current = m.group(2).strip().strip('"') if m.group(1) == macro else None
            lines = []
            continue
        if current is not None:
            lines.append(line)
    if current is not None:
        blocks[current] = "\n".join(lines)
    return blocks


def tagged_keys(block: str) -> set[str]:
    """The config keys a block lists: on each ``.It`` line, the first ``Cm`` word of every
    comma-separated item (``.It Cm rhsm_cert No = Ar PATH , Cm rhsm_key No = Ar PATH``); values such
    as ``No = Cm esx | libvirt`` are not keys."""
    keys: set[str] = set()
    for line in block.splitlines():
        if line.startswith(".It "):
            for item in line[4:].split(" , "):
                m = re.match(r"\s*Cm\s+([A-Za-z_][A-Za-z0-9_]*)", item)
                if m:
                    keys.add(m.group(1))
    return keys
