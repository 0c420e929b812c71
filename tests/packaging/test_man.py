"""Man pages: mandoc finds nothing to complain about, and the pages cannot drift from the code.

The lists of commands, options, environment variables and configuration keys come from the code
(the click trees and the config parsers), so a new option or key fails here until it is documented.
"""

from __future__ import annotations

import re
import subprocess

import click
import pytest

from tests.packaging.conftest import MAN, man_blocks, programs, tagged_keys, walk

PAGES = ["ftagent.8", "ftreport.8", "ftmock.8", "ftagent.conf.5", "ftreport.conf.5"]
# mandoc -T lint looks referenced pages up in the installed manual database, which does not know
# pages that are not installed yet: the only message that depends on the machine.
_MACHINE_DEPENDENT = ("referenced manual not found", "outdated mandoc.db")


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_is_clean(page: str) -> None:
    proc = subprocess.run(["mandoc", "-T", "lint", "-W", "style", str(MAN / page)],
                          capture_output=True, text=True, timeout=30)
    messages = [line for line in (proc.stdout + proc.stderr).splitlines()
                if line.strip() and not any(m in line for m in _MACHINE_DEPENDENT)]
    assert messages == []


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_its_name_and_section(page: str) -> None:
    name, section = page.rsplit(".", 1)
    out = subprocess.run(["mandoc", "-T", "utf8", str(MAN / page)], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    out = re.sub(".\x08", "", out)  # bold and underline are overstruck
    assert out.splitlines()[0].startswith(f"{name.upper()}({section})")
    assert "NAME" in out and "DESCRIPTION" in out


def _option_marks(option: click.Option) -> list[str]:
    """How each spelling of an option is written in mdoc: ``--json`` is ``Fl -json``, ``-c`` is ``Fl c``."""
    marks = []
    for spelling in [*option.opts, *option.secondary_opts]:
        marks.append(f"Fl {spelling[1:]}")
    return marks


def _mentions(block: str, mark: str) -> bool:
    # "Fl -json" followed by a space, a delimiter or the end of the line, never "Fl -json-x".
    return re.search(re.escape(mark) + r"(?![\w-])", block) is not None


@pytest.mark.parametrize("prog", ["ftagent", "ftreport", "ftmock"])
def test_every_command_and_option_is_documented(prog: str) -> None:
    text = (MAN / f"{prog}.8").read_text()
    sections = man_blocks(text, "Sh")
    subsections = man_blocks(text, "Ss")
    missing = []
    for node in walk(programs()[prog]):
        if isinstance(node.command, click.Group) and node.path and not node.options:
            continue  # "ftmock org": documented through its commands ("org create")
        if node.path:
            title = " ".join(node.path)
            if title not in subsections:
                missing.append(f"subsection .Ss {title}")
                continue
            block = subsections[title]
        else:
            title = "OPTIONS"
            block = sections["OPTIONS"]
        for option in node.options:
            for mark in _option_marks(option):
                if not _mentions(block, mark):
                    missing.append(f"{title}: {mark}")
    assert missing == [], f"{prog}.8 does not document: {missing}"


@pytest.mark.parametrize("prog", ["ftagent", "ftreport", "ftmock"])
def test_no_documented_command_is_gone(prog: str) -> None:
    text = (MAN / f"{prog}.8").read_text()
    real = {" ".join(node.path) for node in walk(programs()[prog])}
    documented = set(man_blocks(text, "Ss"))
    assert documented - real == set()


@pytest.mark.parametrize("prog", ["ftagent", "ftreport", "ftmock"])
def test_environment_variables_of_options_are_documented(prog: str) -> None:
    env_block = man_blocks((MAN / f"{prog}.8").read_text(), "Sh")["ENVIRONMENT"]
    names = set()
    for node in walk(programs()[prog]):
        for option in node.options:
            envvar = option.envvar
            names.update([envvar] if isinstance(envvar, str) else list(envvar or ()))
    assert names or prog == "ftreport", "expected some options to read environment variables"
    assert {n for n in names if not re.search(rf"\bEv {n}\b", env_block)} == set()


def _ftagent_sections() -> dict[str, set[str]]:
    from ftagent import config
    from ftagent.lease.settings import lease_keys

    return {"server": set(config._SERVER_KEYS), "agent": set(config._AGENT_KEYS),
            "content": set(config._CONTENT_KEYS), "lease": set(lease_keys())}


def _ftreport_sections() -> dict[str, set[str]]:
    from ftreport import config

    return {"global": set(config._GLOBAL_KEYS), "Source sections": set(config.source_keys())}


def _documented(page: str) -> dict[str, set[str]]:
    blocks = man_blocks((MAN / page).read_text(), "Ss")
    out = {}
    for title, block in blocks.items():
        m = re.fullmatch(r"\[(\w+)\] section", title)
        out[m.group(1) if m else title] = tagged_keys(block)
    return out


@pytest.mark.parametrize(("page", "accepted"), [("ftagent.conf.5", _ftagent_sections),
                                                 ("ftreport.conf.5", _ftreport_sections)])
def test_config_keys_match_the_parser(page: str, accepted: object) -> None:
    assert callable(accepted)
    documented = _documented(page)
    for section, keys in accepted().items():
        assert section in documented, f"{page}: no subsection for [{section}]"
        assert keys - documented[section] == set(), f"{page}: [{section}] keys not documented"
        assert documented[section] - keys == set(), f"{page}: [{section}] documents keys the parser rejects"


def test_lease_keys_of_issue_6_are_documented() -> None:
    lease = _documented("ftagent.conf.5")["lease"]
    assert {"enabled", "renew_interval", "ttl", "margin", "fence_command", "fence_units", "fence_signal",
            "status_file"} <= lease


def test_documented_lease_defaults_are_the_code_defaults() -> None:
    from ftagent.lease import DEFAULT_STATUS_FILE, LeaseSettings

    block = man_blocks((MAN / "ftagent.conf.5").read_text(), "Ss")["[lease] section"]
    items = re.split(r"^\.It ", block, flags=re.M)
    defaults = LeaseSettings()
    for key in ("renew_interval", "ttl", "margin", "fence_timeout"):
        item = next(i for i in items if i.startswith(f"Cm {key} "))
        assert re.search(rf"^Default {getattr(defaults, key):g}\.$", item, re.M), key
    status = next(i for i in items if i.startswith("Cm status_file "))
    assert f".Pa {DEFAULT_STATUS_FILE} ." in status


def test_virtwho_environment_variables_are_documented() -> None:
    from ftreport import environment

    env_block = man_blocks((MAN / "ftreport.8").read_text(), "Sh")["ENVIRONMENT"]
    names = set(environment.FLAGS) | set(environment.VALUES) | set(environment.IGNORED)
    assert {n for n in names if not re.search(rf"\bEv {n}\b", env_block)} == set()
