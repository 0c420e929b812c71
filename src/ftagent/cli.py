"""The ``ftagent`` command line (click).

Exit codes are mapped in one place, :func:`exit_code_for`:

====  ==========================================================================
0     success
3     ``heartbeat``, ``status``: this instance does not hold the FT lease (another does, it fenced,
      or its status is STALE: older than its deadline)
1     not registered (no identity, or the local identity is corrupt/mismatched/expired)
64    usage error (bad options, already registered without --force, credentials or
      request refused as invalid by the server, or naming something it does not have:
      an unknown organization, consumer or pool, 403/404)
69    server unavailable, consumer gone (410), failover refused, lock busy
70    internal error (a bug)
77    permission denied: a file ftagent needs is closed to this user (run as root)
78    configuration error
130   interrupted
====  ==========================================================================

Each command imports the ftagent modules it needs inside its function, not at the top: ``ftagent
--help`` loads click and this module only, and a command loads no other command's modules. Measured
with ``python -X importtime`` on top of this module: the configuration 10 ms, the agent 27 ms, the
lease package 29 ms, the heartbeat 53 ms, prometheus_client 25 ms, cryptography 32 ms, requests
25 ms, against about 50 ms for ``ftagent --help`` in all (``bench/ftagent_startup.py``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ftagent import __version__
from ftagent.cliexit import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ProgramGroup
from ftagent.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    ConnectionFailed,
    FailoverError,
    Forbidden,
    FtagentError,
    IdentityError,
    InvalidUsage,
    LockTimeout,
    NotFound,
    NotRegistered,
    PermissionDenied,
    RemoteError,
    Unauthorized,
)
from ftagent.journal import JournalFormatter, stderr_is_journal

if TYPE_CHECKING:
    from ftagent.agent import Agent
    from ftagent.failover import LeaseClaim

__all__ = [
    "EXIT_CONFIG",
    "EXIT_INTERNAL",
    "EXIT_NOPERM",
    "EXIT_NOT_REGISTERED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "cli",
    "exit_code_for",
    "main",
]

logger = logging.getLogger(__name__)

EXIT_NOT_REGISTERED = 1
EXIT_LEASE_NOT_HELD = 3
EXIT_UNAVAILABLE = 69
EXIT_NOPERM = 77
EXIT_CONFIG = 78

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: BaseException) -> int:
    """The one mapping from errors to exit codes."""
    if isinstance(exc, (KeyboardInterrupt, click.exceptions.Abort)):
        return EXIT_INTERRUPTED
    if isinstance(exc, click.ClickException):
        return EXIT_USAGE
    if isinstance(exc, PermissionDenied):
        return EXIT_NOPERM
    if isinstance(exc, (NotRegistered, IdentityError)):
        return EXIT_NOT_REGISTERED
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, (InvalidUsage, BadRequest, Unauthorized, Conflict, Forbidden, NotFound)):
        return EXIT_USAGE
    if isinstance(exc, (ConnectionFailed, RemoteError, FailoverError, LockTimeout)):
        return EXIT_UNAVAILABLE
    return EXIT_INTERNAL


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (works under click's test runner)."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        if journal:
            self.setFormatter(JournalFormatter("%(message)s"))
        else:
            self.setFormatter(logging.Formatter("ftagent: %(levelname)s: %(message)s"))

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _setup_logging(verbose: int, debug: bool) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    journal = stderr_is_journal()
    handler = _StderrHandler(journal)
    # Under systemd the journal is the service's log: informational lines belong there too.
    level = logging.DEBUG if debug else logging.INFO if verbose or journal else logging.WARNING
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(min(level, root.level) if root.level != logging.NOTSET else level)
    logging.getLogger("ftagent").setLevel(level)
    logging.getLogger("urllib3").setLevel(logging.DEBUG if debug else logging.ERROR)


#: Log file used when ``[agent] log_file`` is not set and its directory exists and is writable.
DEFAULT_LOG_FILE = "/var/log/ftagent/ftagent.log"


def _open_log(configured: os.PathLike[str] | str | None) -> None:
    """Log to the configured file, else to :data:`DEFAULT_LOG_FILE` when the package created its directory."""
    if configured is not None:
        _add_log_file(configured)
    elif os.access(os.path.dirname(DEFAULT_LOG_FILE), os.W_OK):
        _add_log_file(DEFAULT_LOG_FILE)


def _add_log_file(path: os.PathLike[str] | str) -> None:
    import logging.handlers  # only with a log file: socket, queue and friends, about 5 ms

    root = logging.getLogger()
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == os.path.abspath(path) for h in root.handlers):
        return
    try:
        # Reopens the file when logrotate (or anyone) has moved it away: no signal needed.
        handler = logging.handlers.WatchedFileHandler(path)
    except OSError as exc:
        logger.warning("cannot open log file %s: %s", path, exc)
        return
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"))
    root.addHandler(handler)
    logging.getLogger("ftagent").setLevel(min(logging.getLogger("ftagent").level or logging.INFO, logging.INFO))


class State:
    """Per-invocation state carried in the click context."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._agent: Agent | None = None

    def agent(self, *, read_only: bool = False) -> Agent:
        if self._agent is None:
            from ftagent.agent import Agent
            from ftagent.config import load_config

            config = load_config(self.config_path)
            _open_log(config.agent.log_file)
            claim: LeaseClaim | None = None
            if config.lease:
                # A guest using the FT lease applies a failover only after winning the successor's lease.
                from ftagent.lease.claim import command_lease_claim

                try:
                    claim = command_lease_claim(config)
                except ConfigError as exc:
                    if not read_only:
                        raise
                    logger.warning("%s (a read-only command goes on; it would refuse a failover)", exc)
                    claim = _refuse_failover(str(exc))
            self._agent = Agent(config, lease_claim=claim)
        return self._agent

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()


def _refuse_failover(reason: str) -> Callable[..., None]:
    """A lease claim that refuses: without valid lease settings no failover may be applied."""

    def refuse(from_uuid: str, to_uuid: str, consumer: Any) -> None:
        raise FailoverError(f"failover {from_uuid} -> {to_uuid} not applied: {reason}",
                            from_uuid=from_uuid, to_uuid=to_uuid)

    return refuse


def _emit(as_json: bool, data: Any, human: str | Sequence[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    lines = [human] if isinstance(human, str) else list(human)
    for line in lines:
        click.echo(line)


def json_option(fn: F) -> F:
    """``--json`` on a command."""
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(fn)


class FtagentGroup(ProgramGroup):
    """ftagent's top-level group: every error ends in its exit code (:func:`exit_code_for`), and a
    command run with ``--json`` also gets the error as a JSON object on stdout."""

    program = "ftagent"
    errors = (FtagentError,)
    exit_code_for = staticmethod(exit_code_for)

    def report_error(self, exc: BaseException, argv: Sequence[str], internal: bool) -> None:
        if "--json" in argv:
            message = f"internal error: {type(exc).__name__}: {exc}" if internal else str(exc)
            payload: dict[str, Any] = {"type": type(exc).__name__, "message": message,
                                       "exit_code": EXIT_INTERNAL if internal else exit_code_for(exc)}
            if isinstance(exc, RemoteError):
                payload["status"] = exc.status
                payload["display_message"] = exc.display_message
            click.echo(json.dumps({"error": payload}, indent=2, sort_keys=True))
        super().report_error(exc, argv, internal)


def _state(ctx: click.Context) -> State:
    obj = ctx.find_object(State)
    if obj is None:  # pragma: no cover - the group always sets it
        raise InvalidUsage("internal: no state")
    return obj


@click.group(cls=FtagentGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="FTAGENT_CONFIG",
    metavar="PATH",
    help="Configuration file (default /etc/ftagent/ftagent.conf, or $FTAGENT_CONFIG).",
)
@click.option("-v", "--verbose", count=True, help="Log what is done.")
@click.option("--debug", is_flag=True, help="Log everything, including HTTP requests.")
@click.version_option(__version__, prog_name="ftagent")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, debug: bool) -> None:
    """Guest agent: registration, identity and entitlement certificates, failover handling."""
    _setup_logging(verbose, debug)
    state = State(config_path)
    ctx.obj = state
    ctx.call_on_close(state.close)


def _locked(ctx: click.Context) -> Agent:
    from ftagent.leftovers import clean_leftovers

    agent = _state(ctx).agent()
    lock = agent.lock()
    lock.acquire()
    ctx.call_on_close(lock.release)
    clean_leftovers(agent.identity.directory, agent.entitlements.directory)
    return agent


@cli.command()
@click.option("--org", help="Organization (owner) key; required unless --consumerid.")
@click.option("--username", "-u", help="User name (HTTP Basic).")
@click.option("--password", "-p", envvar="FTAGENT_PASSWORD", help="Password (or $FTAGENT_PASSWORD, or a prompt).")
@click.option(
    "--activationkey", "activation_keys", multiple=True, metavar="KEY[,KEY]", help="Activation key(s)."
)
@click.option("--name", help="Consumer name (default: the host name).")
@click.option("--auto-attach", is_flag=True, help="Attach matching subscriptions after registering.")
@click.option("--force", is_flag=True, help="Register again even if already registered.")
@click.option("--server-key", is_flag=True, help="Let the server generate the key instead of sending a CSR.")
@click.option("--consumerid", "consumer_id", metavar="UUID",
              help="Become this existing consumer again (with --username) instead of creating one.")
@click.option("--serverurl", "server_url", metavar="URL",
              help="Server URL to use; saved as [server] url in the configuration file.")
@click.option("--insecure", is_flag=True, default=None,
              help="Do not verify the server's certificate; saved as [server] insecure = yes.")
@click.option("--adopt", is_flag=True,
              help="Take over subscription-manager's registration (its identity in /etc/pki/consumer): "
                   "no new consumer.")
@click.option("--environments", "environments", metavar="NAME[,NAME]",
              help="Put the system in these environments of the organization (names or ids, in priority "
                   "order; needs --username).")
@json_option
@click.pass_context
def register(
    ctx: click.Context,
    org: str | None,
    username: str | None,
    password: str | None,
    activation_keys: tuple[str, ...],
    name: str | None,
    auto_attach: bool,
    force: bool,
    server_key: bool,
    consumer_id: str | None,
    server_url: str | None,
    insecure: bool | None,
    adopt: bool,
    environments: str | None,
    as_json: bool,
) -> None:
    """Register this system with the entitlement server."""
    keys = [k.strip() for item in activation_keys for k in item.split(",") if k.strip()]
    envs = [e.strip() for e in (environments or "").split(",") if e.strip()]
    if environments is not None and not envs:
        raise InvalidUsage("--environments names no environment")
    if envs and consumer_id:
        raise InvalidUsage("--environments goes with a new registration, not --consumerid")
    if adopt:
        if org or username or keys or consumer_id or name or auto_attach or server_key or envs:
            raise InvalidUsage("--adopt takes over an existing registration: give none of --org, --username, "
                               "--activationkey, --consumerid, --name, --auto-attach, --server-key, --environments")
        agent = _locked(ctx)
        _apply_server_overrides(agent, server_url, insecure)
        identity = agent.adopt(force=force)
        _save_server_overrides(agent, server_url, insecure)
        data = {**identity.as_dict(), "entitlement_serials": sorted(agent.entitlements.serials())}
        _emit(as_json, data, [f"Adopted the registration of {identity.uuid} (name {identity.name}, org "
                              f"{identity.org}); ftagent manages it from now on",
                              f"Entitlement certificates: {len(data['entitlement_serials'])}"])
        return
    if username and keys:
        raise InvalidUsage("use either --username or --activationkey, not both")
    if not username and not keys:
        raise InvalidUsage("give --username (with a password) or --activationkey")
    if consumer_id and not username:
        raise InvalidUsage("--consumerid needs --username (activation keys cannot re-attach a consumer)")
    if not org and not consumer_id:
        raise InvalidUsage("give --org (or --consumerid to re-attach an existing consumer)")
    agent = _locked(ctx)
    _apply_server_overrides(agent, server_url, insecure)
    agent.check_can_register(force)  # before prompting for a password
    if username and password is None:
        password = click.prompt("Password", hide_input=True, err=True)
    if consumer_id:
        assert username is not None
        identity = agent.reattach(consumer_id, username=username, password=password, server_key=server_key,
                                  force=force)
    else:
        assert org is not None
        identity = agent.register(
        org,
        username=username,
        password=password,
        activation_keys=keys,
        name=name,
        force=force,
        server_key=server_key,
        auto_attach=auto_attach,
        environments=envs,
    )
    _save_server_overrides(agent, server_url, insecure)
    data = identity.as_dict()
    data["entitlement_serials"] = sorted(agent.entitlements.serials())
    data["content_access_mode"] = agent.registered_mode
    lines = [
        f"Registered as {identity.uuid} (name {identity.name}, org {identity.org})",
        f"Entitlement certificates: {len(data['entitlement_serials'])}",
    ]
    if auto_attach and agent.registered_mode == _sca_mode():
        lines.append(_SCA_NO_ATTACH.format(org=identity.org))
    _emit(as_json, data, lines)


def _apply_server_overrides(agent: Agent, server_url: str | None, insecure: bool | None) -> None:
    """``register --serverurl/--insecure``: this run uses them (saved once registration succeeded)."""
    if server_url is not None:
        if not server_url.startswith("https://"):
            raise InvalidUsage(f"--serverurl {server_url!r}: expected https://HOST[:PORT]/PATH")
        agent.config.server.url = server_url
    if insecure:
        agent.config.server.insecure = True


def _save_server_overrides(agent: Agent, server_url: str | None, insecure: bool | None) -> None:
    from ftagent.config import DEFAULT_CONFIG_PATH, save_server_options

    values = {}
    if server_url is not None:
        values["url"] = server_url
    if insecure:
        values["insecure"] = "yes"
    if values:
        save_server_options(agent.config.path or agent.config.looked_for or DEFAULT_CONFIG_PATH, values)


@cli.command()
@json_option
@click.pass_context
def clean(ctx: click.Context, as_json: bool) -> None:
    """Remove the local identity and entitlement certificates (the server is not contacted)."""
    result = _locked(ctx).clean()
    lines = ["All local data removed" if result["identity_removed"] or result["entitlements_removed"]
             else "Nothing to remove: no local identity or entitlement certificates"]
    if result["uuid"]:
        lines.append(f"The consumer {result['uuid']} still exists on the server; delete it there if unused")
    _emit(as_json, result, lines)


@cli.command()
@click.option("--serial", "serials", type=int, multiple=True, metavar="SERIAL",
              help="Entitlement certificate serial to remove; repeatable.")
@click.option("--pool", "pools", multiple=True, metavar="ID", help="Remove the entitlements of this pool; repeatable.")
@click.option("--all", "all_", is_flag=True, help="Remove every entitlement.")
@json_option
@click.pass_context
def remove(ctx: click.Context, serials: tuple[int, ...], pools: tuple[str, ...], all_: bool, as_json: bool) -> None:
    """Remove entitlements (by certificate serial, by pool, or all)."""
    if all_ == bool(serials or pools):
        raise InvalidUsage("give --all, or --serial/--pool (repeatable)")
    agent = _locked(ctx)
    removed = agent.remove(serials=serials, pools=pools, all_=all_)
    left = sorted(agent.entitlements.serials())
    _emit(as_json, {"removed": removed, "serials": left},
          [f"Removed {len(removed)} entitlement(s); {len(left)} entitlement certificate(s) left"])


@cli.command()
@json_option
@click.pass_context
def unregister(ctx: click.Context, as_json: bool) -> None:
    """Delete this system's consumer on the server and the local identity."""
    agent = _locked(ctx)
    uuid = agent.unregister()
    _emit(as_json, {"uuid": uuid, "unregistered": True}, f"Unregistered {uuid}")


@cli.command()
@click.option("--regenerate", is_flag=True, help="Get a new identity certificate (with a new key).")
@click.option("--server-key", is_flag=True, help="With --regenerate: no CSR; keep or get the key from the server.")
@json_option
@click.pass_context
def identity(ctx: click.Context, regenerate: bool, server_key: bool, as_json: bool) -> None:
    """Show this system's identity (uuid, org, name, serial, failover)."""
    ident = _locked(ctx).regenerate(server_key=server_key) if regenerate else _identity_fast(_state(ctx))
    data = ident.as_dict()
    lines = [
        f"uuid:              {ident.uuid}",
        f"org:               {ident.org or ''}",
        f"name:              {ident.name or ''}",
        f"serial:            {ident.serial}",
        f"valid until:       {ident.not_after}",
        f"key origin:        {ident.key_origin}",
    ]
    if ident.failed_over_from:
        lines.append(f"failed over from:  {ident.failed_over_from} ({ident.failover_time})")
    _emit(as_json, data, lines)


def _identity_fast(state: State) -> Any:
    """Load the identity without importing the network stack."""
    from ftagent.config import load_config
    from ftagent.rhsmidentity import identity_store

    config = load_config(state.config_path)
    return identity_store(config).load()


@cli.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the compliance status of this system (exit 3 when an FT guest does not hold its lease)."""
    # Read-only: no lock, so it works beside a running check-in and for users who cannot open it.
    agent = _state(ctx).agent(read_only=True)
    compliance = agent.compliance()
    entitlement_status = compliance.get("status", "unknown")
    lease = _lease_status(agent.config) if agent.config.lease else None
    holds = lease is None or lease.get("state") in _LEASE_OK
    overall = entitlement_status if holds else str((lease or {}).get("state") or "no heartbeat").lower()
    lines = [f"Overall status: {overall}" if holds else
             f"Overall status: {overall}: this instance does not hold the FT lease and must not run the "
             f"workload (entitlements: {entitlement_status})"]
    # The server reports "disabled" compliance for an org in Simple Content Access.
    sca = entitlement_status == "disabled"
    if sca:
        lines.append("Content access mode: Simple Content Access: this system has access to its "
                     "organization's content, whatever subscriptions it has")
    for item in compliance.get("nonCompliantProducts") or []:
        lines.append(f"  not covered: {item}")
    data = dict(compliance, overall=overall, content_access_mode=_sca_mode() if sca else "entitlement")
    protection = agent.protection()
    if protection is not None:
        # The server's view of this VM's FT group: a secondary in lock step, this guest registered,
        # checking in and holding the lease.
        data["protection"] = protection
        reasons = protection.get("reasons") or []
        lines.append(f"FT protection: {protection.get('protection')}"
                     + (f" ({', '.join(str(r) for r in reasons)})" if reasons else "")
                     + (f", vSphere state {protection['faultToleranceState']}"
                        if protection.get("faultToleranceState") else ""))
    if lease is not None:
        data["lease"] = lease
        state = lease.get("state") or "no heartbeat yet"
        if lease.get("stale_reason"):
            state += f" (was {lease.get('recorded_state')}: {lease['stale_reason']})"
        lines.append(f"Lease: {state} {_lease_details(lease)}")
        if lease.get("error"):
            lines.append(f"  lease settings: {lease['error']}")
    _emit(as_json, data, lines)
    if not holds:
        ctx.exit(EXIT_LEASE_NOT_HELD)


def _sca_mode() -> str:
    """Simple Content Access's content access mode (:data:`ftagent.repos.SCA_MODE`)."""
    # Imported here, not at the top: ftagent.repos and what it loads (atomic, entitlements, release,
    # rhsmlock, hashlib, secrets) cost every command about 12 ms, `ftagent --help` included (python -X
    # importtime: this module 62 -> 50 ms; bench ftagent_startup: --help 85 -> 70 ms); the commands that
    # ask have loaded it already with the agent.
    from ftagent.repos import SCA_MODE

    return SCA_MODE


_SCA_NO_ATTACH = ("Nothing attached: organization {org} uses Simple Content Access, so this system has access "
                  "to its content without subscriptions (see 'ftagent repos --list')")


#: Lease states in which ``status`` exits 0: held, handed back on purpose, or switched off.
_LEASE_OK = ("HELD", "RELEASED", "DISABLED")


def _lease_details(lease: dict[str, Any]) -> str:
    """Generation, this instance's holder (by fingerprint: the id is a secret), who holds the lease
    when someone else does, and why this instance does not hold it."""
    parts = [] if lease.get("generation") is None else [f"generation {lease['generation']}"]
    parts.append(f"holder {lease.get('holder_fingerprint')}")
    if lease.get("held_by") is not None and lease.get("held_by") != lease.get("holder_fingerprint"):
        parts.append(f"held by {lease['held_by']}")
    text = f"({', '.join(parts)})"
    if lease.get("state") in ("ACQUIRING", "DEGRADED", "FENCING", "FENCED") and lease.get("reason"):
        text += f": {lease['reason']}"
    return text


def _lease_status(config: Any) -> dict[str, Any]:
    """The heartbeat's status file, summarised (see ftagent.lease.status_summary).

    Bad ``[lease]`` timing does not stop a read-only command: the status file is still read (its
    path is all that is needed) and the error is shown beside it.
    """
    from ftagent.lease import parse_lease_settings, status_summary

    try:
        return status_summary(parse_lease_settings(config))
    except ConfigError as exc:
        logger.warning("%s", exc)
        only_path = {"status_file": config.lease.get("status_file", "")}
        return dict(status_summary(parse_lease_settings(config, raw=only_path)), error=str(exc))


@cli.command()
@click.option("--once", is_flag=True, help="One claim or renewal; exit 0 if this instance holds the lease, 3 if not.")
@json_option
@click.pass_context
def heartbeat(ctx: click.Context, once: bool, as_json: bool) -> None:
    """Hold the FT group's lease (split-brain guard) and fence when it is lost."""
    from ftagent.config import load_config
    from ftagent.lease import parse_lease_settings
    from ftagent.lease.guard import SingleInstance
    from ftagent.lease.heartbeat import Heartbeat

    config = load_config(_state(ctx).config_path)
    _open_log(config.agent.log_file)
    settings = parse_lease_settings(config)
    guard = SingleInstance(settings.status_file)
    guard.acquire()
    ctx.call_on_close(guard.release)
    beat = Heartbeat(config, mode="once" if once else "daemon")
    if not once:
        fencing = ", ".join(filter(None, [
            f"command {settings.fence_command}" if settings.fence_command else None,
            f"units {' '.join(settings.fence_units)}" if settings.fence_units else None,
            f"signal {settings.fence_signal}" if settings.fence_signal else None])) or "none configured"
        logger.info("ftagent %s heartbeat started (pid %d): holder %s, backend %s, ttl %g s, renew every %g s, "
                    "margin %g s, lease %s, fencing: %s", __version__, os.getpid(), beat.keeper.fingerprint,
                    settings.backend, settings.ttl, settings.renew_interval, settings.margin,
                    "enabled" if settings.enabled else "DISABLED (never fences)", fencing)
    code = beat.once() if once else beat.run()
    snap = beat.keeper.snapshot()
    if once or as_json:
        _emit(as_json, snap, f"lease {snap['state']} {_lease_details(snap)}")
    ctx.exit(code)


@cli.command("sanlock-init")
@click.option("--force", is_flag=True, help="Overwrite another lockspace or resource found there (never a held one).")
@json_option
@click.pass_context
def sanlock_init(ctx: click.Context, force: bool, as_json: bool) -> None:
    """Initialise the FT group's sanlock lease file: lockspace at 0, resource virt.uuid at 1 MiB."""
    from ftagent.config import load_config
    from ftagent.lease import parse_lease_settings
    from ftagent.lease.backends.sanlock import initialise, sanlock_options, virt_uuid_of

    config = load_config(_state(ctx).config_path)
    settings = parse_lease_settings(config)
    sanlock_options(settings, needed_by="sanlock-init")  # before looking for the resource's name
    done = initialise(settings, virt_uuid_of(config), force=force)
    what = " and ".join(done["written"]) or "nothing (already initialised)"
    _emit(as_json, done, f"{done['path']}: wrote {what}: lockspace {done['lockspace']} at offset 0, resource "
                         f"{done['resource']} at offset {done['resource_offset']} (io timeout {done['io_timeout']} s)")


@cli.command()
@json_option
@click.pass_context
def refresh(ctx: click.Context, as_json: bool) -> None:
    """Synchronise entitlement certificates with the server."""
    agent = _locked(ctx)
    result = agent.refresh()
    data = dict(result.as_dict(), serials=sorted(agent.entitlements.serials()))
    _emit(
        as_json,
        data,
        f"Entitlement certificates: {len(result.added)} added, {len(result.removed)} removed, "
        f"{len(data['serials'])} present",
    )


@cli.command()
@click.option("--auto", "auto", is_flag=True, help="Attach what covers the installed products.")
@click.option("--pool", help="Pool ID to attach.")
@click.option("--quantity", type=click.IntRange(min=1), help="How many of the pool to attach (with --pool).")
@json_option
@click.pass_context
def attach(ctx: click.Context, auto: bool, pool: str | None, quantity: int | None, as_json: bool) -> None:
    """Attach a subscription pool (or --auto)."""
    if auto == bool(pool):
        raise InvalidUsage("give exactly one of --auto or --pool ID")
    if quantity is not None and not pool:
        raise InvalidUsage("--quantity goes with --pool")
    agent = _locked(ctx)
    if agent.content_access_mode() == _sca_mode():
        # As subscription-manager: nothing to attach, the content access certificate grants the content.
        org = agent.current_identity().org
        agent.refresh()
        _emit(as_json, [], _SCA_NO_ATTACH.format(org=org))
        return
    entitlements = agent.attach(None if auto else pool, quantity)
    lines = [f"Attached {len(entitlements)} entitlement(s)"]
    for ent in entitlements:
        p = ent.get("pool", {}) if isinstance(ent, dict) else {}
        lines.append(f"  pool {p.get('id')}: {p.get('productName') or p.get('productId') or ''}")
    _emit(as_json, entitlements, lines)


@cli.command(name="list")
@click.option("--consumed", is_flag=True,
              help="Entitlements this system holds, read from its certificates (offline; the default).")
@click.option("--available", is_flag=True, help="Pools this system can attach.")
@click.option("--installed", is_flag=True, help="Installed products and whether they are subscribed.")
@json_option
@click.pass_context
def list_(ctx: click.Context, consumed: bool, available: bool, installed: bool, as_json: bool) -> None:
    """List consumed entitlements, available pools or installed products."""
    if consumed + available + installed > 1:
        raise InvalidUsage("give only one of --consumed, --available or --installed")
    if installed:
        agent = _state(ctx).agent(read_only=True)
        products = agent.installed_status()
        _emit(as_json, products, [f"{p['productId']}  {p['productName']}  {p['status']}" for p in products]
              or [f"No installed products (product files in {agent.config.agent.product_dir})"])
        return
    if available:
        pools = _locked(ctx).available()
        pool_lines = [
            f"{p.get('id')}  {p.get('productId', '')}  {p.get('productName', '')}  quantity {p.get('quantity', '')}"
            for p in pools
            if isinstance(p, dict)
        ] or ["No pools available"]
        _emit(as_json, pools, pool_lines)
        return
    # From the certificates themselves: works offline, shows what the server signed.
    agent = _state(ctx).agent()
    ca = agent.config.server.ca_cert
    ca_path = Path(ca) if ca and Path(ca).is_file() else None
    ents: list[dict[str, Any]] = []
    lines: list[str] = []
    for serial, cert in agent.entitlements.certificates(ca_path):
        if isinstance(cert, FtagentError):
            ents.append({"serial": serial, "error": str(cert)})
            lines.append(f"serial {serial}: cannot be read: {cert}")
            continue
        ents.append(cert.as_dict())
        if cert.content_access:
            lines.append(f"Content access (Simple Content Access, org {cert.org})")
            lines.append(f"  serial {serial}, signature {cert.signature}")
        else:
            lines.append(f"{cert.id}  pool {cert.pool.get('id')}  {cert.name or cert.sku}")
            lines.append(f"  SKU {cert.sku}, serial {serial}, quantity {cert.quantity}, signature {cert.signature}")
        lines.append(f"  valid:    {cert.start[:10]} to {cert.end[:10]}")
        lines.extend(f"  product:  {p['id']}  {p['name']}" for p in cert.products)
        lines.extend(
            f"  content:  {c['label']}  {c['path']}{'' if c['enabled'] else '  (disabled)'}" for c in cert.content
        )
    _emit(as_json, ents, lines or ["No entitlements consumed"])


@cli.command()
@click.option("--list", "list_all", is_flag=True, help="List the repositories this system may use (the default).")
@click.option("--list-enabled", is_flag=True, help="List the enabled repositories.")
@click.option("--list-disabled", is_flag=True, help="List the disabled repositories.")
@click.option("--enable", "enable", multiple=True, metavar="LABEL",
              help="Enable repositories by label; '*' wildcards allowed; repeatable.")
@click.option("--disable", "disable", multiple=True, metavar="LABEL",
              help="Disable repositories by label; '*' wildcards allowed; repeatable (applied before --enable).")
@json_option
@click.pass_context
def repos(ctx: click.Context, list_all: bool, list_enabled: bool, list_disabled: bool, enable: tuple[str, ...],
          disable: tuple[str, ...], as_json: bool) -> None:
    """List the repositories the certificates grant, and enable or disable them (overrides on the server)."""
    agent = _locked(ctx)
    changed: dict[str, list[str]] = {"enabled": [], "disabled": []}
    if enable or disable:
        changed = agent.set_repositories(enable=enable, disable=disable)
    listing = list_all or list_enabled or list_disabled or not (enable or disable)
    data: dict[str, Any] = dict(changed)
    lines = [f"Repository '{label}' is enabled for this system." for label in changed["enabled"]]
    lines += [f"Repository '{label}' is disabled for this system." for label in changed["disabled"]]
    if listing:
        shown = [r for r in agent.repositories(online=not (enable or disable))
                 if (list_all or not (list_enabled or list_disabled)) or (r.enabled and list_enabled)
                 or (not r.enabled and list_disabled)]
        data["repositories"] = [r.as_dict() for r in shown]
        repo_file = agent.config.content.repo_file
        if shown:
            lines.append(f"Available repositories in {repo_file}" if agent.config.content.manage_repos else
                         "Available repositories (the repository file is not managed: [content] manage_repos = no)")
        else:
            lines.append("No repositories match" if (list_enabled or list_disabled) else
                         "This system has no repositories available through its certificates")
        for r in shown:
            lines += ["", f"Repo ID:   {r.label}", f"Repo Name: {r.name}",
                      f"Repo URL:  {r.options.get('baseurl', r.baseurl)}", f"Enabled:   {1 if r.enabled else 0}"]
    _emit(as_json, data, lines)


def _one_action(**given: object) -> None:
    """At most one of a command's actions (``--show``, ``--list``, ``--set``, ...) at once."""
    chosen = [name for name, value in given.items() if value not in (None, False, ())]
    if len(chosen) > 1:
        raise InvalidUsage("give only one of " + ", ".join(f"--{name}" for name in given))


@cli.command()
@click.option("--show", is_flag=True, help="Show the release this system is pinned to (the default).")
@click.option("--list", "list_all", is_flag=True, help="List the releases the content offers this system.")
@click.option("--set", "set_to", metavar="RELEASE", help="Pin $releasever to RELEASE (one --list shows).")
@click.option("--unset", is_flag=True, help="Follow the installed system's release again.")
@json_option
@click.pass_context
def release(ctx: click.Context, show: bool, list_all: bool, set_to: str | None, unset: bool, as_json: bool) -> None:
    """Show, list or set the operating system release the repositories follow."""
    _one_action(show=show, list=list_all, set=set_to, unset=unset)
    agent = _locked(ctx)
    if list_all:
        releases = agent.available_releases()
        _emit(as_json, releases, ["Available releases:", *releases] if releases else
              ["No release versions available: the content this system may use lists none"])
        return
    if set_to is not None or unset:
        value = agent.set_release(set_to.strip() if set_to else None)
        _emit(as_json, {"release": value}, f"Release set to: {value}" if value else "Release preference has been unset")
        return
    current = agent.release()
    _emit(as_json, {"release": current}, f"Release: {current}" if current else "Release not set")


def _purpose_command(name: str, what: str, *, can_list: bool = False) -> Callable[..., None]:
    """``--show``/``--set``/``--unset`` (and ``--list`` where the org offers values) for one purpose field."""

    def run(ctx: click.Context, show: bool, set_to: tuple[str, ...], unset: bool, as_json: bool,
            list_all: bool = False) -> None:
        _one_action(show=show, list=list_all, set=set_to, unset=unset)
        agent = _locked(ctx)
        if list_all:
            levels = agent.service_levels()
            _emit(as_json, levels, ["Available service levels:", *levels] if levels else
                  ["This system's organization offers no service level"])
            return
        if set_to or unset:
            values = [v.strip() for item in set_to for v in (item.split(",") if name == "addons" else [item])
                      if v.strip()]
            if set_to and not values:
                raise InvalidUsage(f"--set gives no {what}")
            value: str | list[str] | None = values if name == "addons" else (values[0] if values else None)
            if name != "addons" and len(values) > 1:
                raise InvalidUsage(f"give one {what}")
            agent.set_purpose(name, value)
            shown = ", ".join(values)
            _emit(as_json, {name: value}, f"{what.capitalize()} set to: {shown}" if values else
                  f"{what.capitalize()} unset")
            return
        current = agent.purpose()[name]
        shown = ", ".join(current) if isinstance(current, list) else current
        _emit(as_json, {name: current or None}, f"Current {what}: {shown}" if shown else f"{what.capitalize()} not set")

    run.__name__ = name.replace("-", "_")
    run.__doc__ = f"Show{', list' if can_list else ''} or set this system's {what}."
    command: Any = run
    if can_list:
        command = click.option("--list", "list_all", is_flag=True,
                               help=f"List the {what}s this system's organization offers.")(command)
    command = json_option(command)
    command = click.option("--unset", is_flag=True, help=f"Unset the {what}.")(command)
    many = name == "addons"
    command = click.option("--set", "set_to", multiple=True, metavar="VALUE",
                           help=f"Set the {what}" + (" (comma-separated, or repeated)." if many else "."))(command)
    command = click.option("--show", is_flag=True, help=f"Show the {what} (the default).")(command)
    return click.pass_context(command)


cli.command(name="service-level")(_purpose_command("service-level", "service level", can_list=True))


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def syspurpose(ctx: click.Context, as_json: bool) -> None:
    """Show the system purpose (role, usage, add-ons, service type, service level), or set one."""
    if ctx.invoked_subcommand is not None:
        return
    data = _locked(ctx).purpose()
    lines = [f"{label}: {', '.join(v) if isinstance(v, list) else v or ''}"
             for label, v in (("Role", data["role"]), ("Usage", data["usage"]), ("Add-ons", data["addons"]),
                              ("Service type", data["service-type"]), ("Service level", data["service-level"]))]
    _emit(as_json, {k: data[k] for k in ("role", "usage", "addons", "service-type", "service-level")}, lines)


for _name, _what in (("role", "role"), ("usage", "usage"), ("addons", "add-ons"), ("service-type", "service type")):
    syspurpose.command(name=_name)(_purpose_command(_name, _what))


@cli.command()
@click.option("--enable", is_flag=True, help="Let the server attach subscriptions to this system as needed.")
@click.option("--disable", is_flag=True, help="Do not let it.")
@click.option("--show", is_flag=True, help="Show whether it may (the default).")
@json_option
@click.pass_context
def autoheal(ctx: click.Context, enable: bool, disable: bool, show: bool, as_json: bool) -> None:
    """Show, enable or disable auto-attach (autoheal) for this system."""
    _one_action(enable=enable, disable=disable, show=show)
    agent = _locked(ctx)
    if enable or disable:
        agent.update_consumer({"autoheal": enable})
        _emit(as_json, {"autoheal": enable}, f"Auto-attach {'enabled' if enable else 'disabled'}.")
        return
    value = bool(agent.purpose()["autoheal"])
    _emit(as_json, {"autoheal": value}, f"Auto-attach is {'enabled' if value else 'disabled'}.")


@cli.command()
@click.option("--list", "list_all", is_flag=True, help="List the environments (the default).")
@click.option("--org", help="Organization key (with --username; default: this system's).")
@click.option("--username", "-u", help="User name (HTTP Basic); without it, this system's identity.")
@click.option("--password", "-p", envvar="FTAGENT_PASSWORD", help="Password (or $FTAGENT_PASSWORD, or a prompt).")
@json_option
@click.pass_context
def environments(ctx: click.Context, list_all: bool, org: str | None, username: str | None, password: str | None,
                 as_json: bool) -> None:
    """List the environments of an organization (its systems' content follows the ones they are in)."""
    if username and not org:
        raise InvalidUsage("--username goes with --org")
    if org and not username:
        raise InvalidUsage("--org needs --username (a registered system lists its own organization's)")
    agent = _state(ctx).agent(read_only=True)
    if username and password is None:
        password = click.prompt("Password", hide_input=True, err=True)
    envs = agent.environments(org, username, password) if username else _locked(ctx).environments()
    lines: list[str] = []
    for env in envs:
        lines += [f"Name:        {env.get('name')}", f"Id:          {env.get('id')}",
                  f"Description: {env.get('description') or ''}", ""]
    _emit(as_json, envs, lines[:-1] if lines else "This organization has no environments")


@cli.command()
@click.option("--username", "-u", required=True, help="User name (HTTP Basic).")
@click.option("--password", "-p", envvar="FTAGENT_PASSWORD", help="Password (or $FTAGENT_PASSWORD, or a prompt).")
@json_option
@click.pass_context
def owners(ctx: click.Context, username: str, password: str | None, as_json: bool) -> None:
    """List the organizations this user may register systems to (also: orgs)."""
    agent = _state(ctx).agent(read_only=True)
    if password is None:
        password = click.prompt("Password", hide_input=True, err=True)
    orgs = agent.owners(username, password)
    lines = [f"Organizations {username} may register to:" if orgs else f"{username} may use no organization"]
    for owner in orgs:
        lines += [f"Name: {owner.get('displayName')}", f"Key:  {owner.get('key')}"]
    _emit(as_json, orgs, lines)


cli.add_command(owners, name="orgs")


@cli.command()
@click.option("--update", is_flag=True, help="Send the facts to the server.")
@json_option
@click.pass_context
def facts(ctx: click.Context, update: bool, as_json: bool) -> None:
    """Show this system's facts (and send them with --update)."""
    values = _locked(ctx).update_facts() if update else _state(ctx).agent().facts()
    _emit(as_json, values, [f"{k}: {v}" for k, v in sorted(values.items())])


@cli.command()
@json_option
@click.pass_context
def checkin(ctx: click.Context, as_json: bool) -> None:
    """Periodic job: send changed facts, check in, refresh certificates, follow failovers."""
    agent = _locked(ctx)
    try:
        result = agent.checkin()
    except FtagentError:
        _checkin_metrics(agent, ok=False)
        raise
    _checkin_metrics(agent, ok=True)
    lines = [f"Checked in as {result.uuid}"]
    if result.failed_over_from:
        lines.append(f"Failed over from {result.failed_over_from} to {result.uuid}")
    lines.append(
        f"Facts {'sent' if result.facts_sent else 'unchanged'}; entitlement certificates: "
        f"{len(result.refresh.added)} added, {len(result.refresh.removed)} removed"
    )
    _emit(as_json, result.as_dict(), lines)


@cli.command(name="config")
@click.option("--list", "list_all", is_flag=True, help="Print the effective configuration (the default).")
@json_option
@click.pass_context
def config_(ctx: click.Context, list_all: bool, as_json: bool) -> None:
    """Show the effective configuration and where each value comes from."""
    from ftagent.config import config_path, describe, load_config

    state = _state(ctx)
    config = load_config(state.config_path)
    items = describe(config) + _lease_items(config)
    file = config.path or config_path(state.config_path)
    lines = [f"configuration file: {file}" + ("" if config.path else " (absent: built-in defaults)")]
    section = None
    for item in items:
        if item["section"] != section:
            section = item["section"]
            lines.append(f"[{section}]")
        value = "" if item["value"] is None else item["value"]
        lines.append(f"   {item['key']} = {value}  ({item['source']})")
    _emit(as_json, {"file": str(file), "exists": config.path is not None, "values": items}, lines)


def _lease_items(config: Any) -> list[dict[str, Any]]:
    """``[lease]`` as the heartbeat applies it: values from the file, the rest defaulted or derived."""
    from ftagent.lease import parse_lease_settings

    raw = config.lease
    origin = str(config.path)
    try:
        settings = parse_lease_settings(config)
    except FtagentError as exc:
        logger.warning("%s", exc)
        return [{"section": "lease", "key": k, "value": v, "source": f"{origin} (invalid)"} for k, v in raw.items()]
    out = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, tuple):
            value = " ".join(value)
        sanlock = settings.backend == "sanlock"  # its timing follows sanlock's host_dead, not [lease] ttl
        timing = f.name in ("renew_interval", "ttl", "margin") and (sanlock or any(
            k in raw for k in ("renew_interval", "ttl", "margin")))
        source = origin if f.name in raw and not (sanlock and f.name == "ttl") else "derived" if timing else "default"
        out.append({"section": "lease", "key": f.name, "value": None if value in (None, "") else str(value),
                    "source": source})
    return out


@cli.command()
@json_option
@click.pass_context
def version(ctx: click.Context, as_json: bool) -> None:
    """Show ftagent's version and the server's."""
    from ftagent.config import load_config

    state = _state(ctx)
    config = load_config(state.config_path)
    data: dict[str, Any] = {"ftagent": __version__, "server_url": config.server.url, "server": None}
    server_line = "server: not configured ([server] url)"
    if config.server.url:
        try:
            status = state.agent().server_status()
        except FtagentError as exc:
            data["server_error"] = str(exc)
            server_line = f"server: unavailable: {exc}"
        else:
            data["server"] = {"version": status.get("version"), "release": status.get("release"),
                              "capabilities": status.get("managerCapabilities") or []}
            server_line = f"server: {status.get('version')}-{status.get('release')} at {config.server.url}"
    _emit(as_json, data, [f"ftagent: {__version__}", server_line])


def _checkin_metrics(agent: Agent, *, ok: bool) -> None:
    """``[agent] metrics_file``: the check-in's outcome and the identity's expiry for Prometheus."""
    path = agent.config.agent.metrics_file
    if path is None:
        return
    from prometheus_client import Counter, Gauge

    from ftagent.metrics import MetricsFile

    mf = MetricsFile(path, ("ftagent_checkin_", "ftagent_identity_"))
    now = time.time()
    with mf.update() as registry:
        last_ok = now if ok else mf.previous("ftagent_checkin_last_success_timestamp_seconds")
        Gauge("ftagent_checkin_last_success_timestamp_seconds", "Time of the last successful check-in.",
              registry=registry).set(last_ok)
        Gauge("ftagent_checkin_last_attempt_timestamp_seconds", "Time of the last check-in attempt.",
              registry=registry).set(now)
        Gauge("ftagent_checkin_success", "1 if the last check-in succeeded, else 0.",
              registry=registry).set(1 if ok else 0)
        failures = mf.previous("ftagent_checkin_failures_total") + (0 if ok else 1)
        Counter("ftagent_checkin_failures", "Failed check-ins since the metrics file was created.",
                registry=registry).inc(failures)
        expiry = Gauge("ftagent_identity_expiry_timestamp_seconds",
                       "When the identity certificate expires (absent when not registered).", registry=registry)
        try:
            expiry.set(_timestamp(agent.current_identity().not_after))
        except (FtagentError, ValueError):
            registry.unregister(expiry)


def _timestamp(iso: str) -> float:
    when = datetime.datetime.fromisoformat(iso)
    if when.tzinfo is None:  # certificates' times are UTC
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point."""
    cli.main(args=argv, prog_name="ftagent")
    raise SystemExit(EXIT_INTERNAL)  # pragma: no cover - main always exits
