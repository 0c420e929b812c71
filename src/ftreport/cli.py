"""The ``ftreport`` command line.

``ftreport [-c FILE]... [-o|--oneshot|--one-shot] [-p|--print] [-i|--interval N] [-d|--debug]
[-s|--status] [-j|--json] [-l DIR] [-f FILE] [-m] [-r ID]`` runs the reporter (daemon by default),
with virt-who's flags; ``ftreport password`` (also ``ftreport-password``) encrypts a password for
the configuration. ``--print`` writes the JSON body to stdout and sends nothing; logs go to stderr,
and to files when the configuration asks for them (:mod:`ftreport.logfiles`).

Exit codes, mapped in one place (:func:`exit_code_for`); 1 is virt-who's, for the same failures, so
that scripts and monitoring written for ``virt-who --one-shot`` keep working:

====  ==========================================================================
0     success
1     a source or the server failed (the other sources were still collected and sent), or
      ``--status`` found one that does not work; ``password``: the key file could not be used
64    usage error (an unknown option, a bad value, an empty password)
70    internal error (a bug)
78    configuration error: the message names the file, section and key, or where no file was found
130   interrupted
====  ==========================================================================

Errors that are the user's to fix are one line on stderr, ``ftreport: error: MESSAGE``.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ftagent.cliexit import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ProgramGroup, run_program
from ftagent.journal import JournalFormatter, stderr_is_journal

from . import __version__
from .config import load_config, no_sources_error
from .errors import ConfigError, FtreportError, PasswordError, SendError, SourceError
from .logfiles import file_handlers
from .password import encrypt_password
from .progress import Progress
from .service import Reporter, dump_json, run_oneshot, run_status
from .settings import Config

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "exit_code_for",
    "main",
    "password_main",
]

log = logging.getLogger("ftreport")

EXIT_FAILED = 1
EXIT_CONFIG = 78


def exit_code_for(exc: BaseException) -> int:
    """The one mapping from ftreport's errors to exit codes."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, (SourceError, SendError, PasswordError)):
        return EXIT_FAILED
    return EXIT_INTERNAL


class FtreportGroup(ProgramGroup):
    program = "ftreport"
    errors = (FtreportError,)
    exit_code_for = staticmethod(exit_code_for)


def _setup_logging(debug: bool, config: Config | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if config is not None:
        g = config.global_
        root.handlers.extend(file_handlers(g.log_dir, g.log_file, g.log_per_config,
                                           [s.name for s in config.sources]))
    for noisy in ("pyVmomi", "pyVim"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)
    # urllib3 logs each transparent retry as a warning; the failure that counts is reported by us.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if debug else logging.ERROR)


@dataclasses.dataclass(frozen=True)
class _Overrides:
    """Command-line values that win over the environment and ``[global]``."""

    interval: int | None = None
    log_dir: str | None = None
    log_file: str | None = None
    log_per_config: bool = False
    reporter_id: str | None = None


def _load(configs: tuple[str, ...], cli: _Overrides) -> Config:
    config = load_config(configs)
    changes: dict[str, Any] = {}
    if cli.interval is not None:
        changes["interval"] = float(cli.interval)
    if cli.log_dir:
        changes["log_dir"] = Path(cli.log_dir)
    if cli.log_file:
        changes["log_file"] = cli.log_file
    if cli.log_per_config:
        changes["log_per_config"] = True
    if cli.reporter_id:
        changes["reporter_id"] = cli.reporter_id
    if changes:
        config = dataclasses.replace(config, global_=dataclasses.replace(config.global_, **changes))
    return config


def _config_error_json(exc: FtreportError) -> str:
    """--status --json on a configuration that cannot be loaded: still JSON, saying why."""
    error: dict[str, object] = {"message": str(exc)}
    if isinstance(exc, ConfigError):
        error.update(file=exc.file, section=exc.section, key=exc.key, reason=exc.reason)
    return dump_json({"ok": False, "config_error": error, "sources": {}, "servers": {}})


@click.group(cls=FtreportGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "configs", multiple=True, metavar="FILE",
              help="Configuration file (repeatable); replaces /etc/ftreport.d/*.conf.")
@click.option("-o", "--oneshot", "--one-shot", "oneshot", is_flag=True, help="Collect and send once, then exit.")
@click.option("-p", "--print", "print_", is_flag=True, help="Print the JSON report to stdout; send nothing.")
@click.option("-i", "--interval", type=click.IntRange(min=1), metavar="N",
              help="Seconds between full reports when nothing changes (default 3600).")
@click.option("-d", "--debug", is_flag=True, help="Debug logging.")
@click.option("-s", "--status", is_flag=True, help="Check every source and server, say what works, exit.")
@click.option("-j", "--json", "as_json", is_flag=True, help="With --status: machine-readable output.")
@click.option("-l", "--log-dir", metavar="DIR", help="Also log to files in DIR (virt-who's log_dir).")
@click.option("-f", "--log-file", metavar="FILE", help="Name of the log file in the log directory.")
@click.option("-m", "--log-per-config", is_flag=True, help="One log file per source section.")
@click.option("-r", "--reporter-id", metavar="ID", help="Reporter id sent with reports (overrides [global]).")
@click.version_option(__version__, prog_name="ftreport")
@click.pass_context
def main(ctx: click.Context, configs: tuple[str, ...], oneshot: bool, print_: bool, interval: int | None,
         debug: bool, status: bool, as_json: bool, log_dir: str | None, log_file: str | None,
         log_per_config: bool, reporter_id: str | None) -> None:
    """Report hypervisors and their guests (with VMware FT data) to the entitlement server."""
    if ctx.invoked_subcommand is not None:
        return
    _setup_logging(debug)
    cli = _Overrides(interval, log_dir, log_file, log_per_config, reporter_id)
    try:
        config = _load(configs, cli)
        if not config.sources:
            raise no_sources_error(config.files)
    except FtreportError as exc:
        if status and as_json:
            click.echo(_config_error_json(exc))
        raise
    _setup_logging(debug or config.global_.debug, config)
    log.debug("configuration read from %s: sources %s", ", ".join(config.files),
              ", ".join(f"{s.name} ({s.type})" for s in config.sources))
    if status:
        ctx.exit(_status(config, as_json))
    print_ = print_ or config.global_.print_
    oneshot = oneshot or print_ or config.global_.oneshot
    if oneshot:
        ctx.exit(_oneshot(config, print_))
    ctx.exit(_daemon(config, configs, cli))


def _oneshot(config: Config, print_: bool) -> int:
    progress = Progress(sys.stderr) if sys.stderr.isatty() else None
    return run_oneshot(config, print_to=sys.stdout if print_ else None, progress=progress)


def _status(config: Config, as_json: bool) -> int:
    code, result = run_status(config)
    if as_json:
        click.echo(dump_json(result))
        return code
    for name, info in result["sources"].items():
        if info["ok"]:
            click.echo(f"source {name} ({info['type']}): OK, {info['hypervisors']} hypervisors, "
                       f"{info['guests']} guests")
        else:
            click.echo(f"source {name} ({info['type']}): FAILED: {info['error']}")
    for label, info in result["servers"].items():
        age = info.get("last_accepted_age")
        last = "no report accepted yet" if age is None else f"last report accepted {age:.0f} s ago"
        if info["ok"]:
            version = f" (version {info['version']})" if info.get("version") else ""
            click.echo(f"server {label}: OK{version}; {last}")
        else:
            click.echo(f"server {label}: FAILED: {info['error']}; {last}")
    return code


def _daemon(config: Config, configs: tuple[str, ...], cli: _Overrides) -> int:
    progress = Progress(sys.stderr) if sys.stderr.isatty() else None
    reporter = Reporter(config, progress=progress)

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        reporter.stop()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        reporter.request_reload()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    log.info("ftreport %s started: %d sources, interval %g s", __version__, len(config.sources),
             config.global_.interval)
    return reporter.run(load=lambda: _load(configs, cli))


@main.command("password", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "configs", multiple=True, metavar="FILE",
              help="Configuration file naming [global] key_file / state_dir.")
@click.option("--key-file", type=click.Path(dir_okay=False),
              help="Key file (default: [global] key_file, else STATE_DIR/key).")
@click.option("-p", "--password", "password", metavar="TEXT",
              help="The password (default: prompt, or stdin). Visible to other users in ps: prefer the prompt.")
def password_cmd(configs: tuple[str, ...], key_file: str | None, password: str | None) -> None:
    """Encrypt a password for encrypted_password, rhsm_encrypted_password or
    rhsm_encrypted_proxy_password (virt-who-password's -p works too)."""
    _setup_logging(False)
    key_path = Path(key_file) if key_file is not None else load_config(configs).global_.password_key_file
    if password is None:
        if sys.stdin.isatty():
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        else:
            password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise click.UsageError("empty password")
    encrypted = encrypt_password(password, key_path)
    click.echo("Use the following as the value of encrypted_password (or rhsm_encrypted_password, "
               "rhsm_encrypted_proxy_password):", err=True)
    click.echo(encrypted)


def password_main() -> None:
    """Entry point of ``ftreport-password``, with ftreport's exit codes."""
    argv = sys.argv[1:]
    sys.exit(run_program(lambda: password_cmd.main(argv, prog_name="ftreport-password", standalone_mode=False),
                         "ftreport-password", FtreportGroup.errors, exit_code_for))
