"""The `ftmock` command: run the server, and create fixtures (orgs, products, pools, keys) offline.

Exit codes, mapped in one place (:func:`exit_code_for`):

====  ==========================================================================
0     success
64    usage error, or a request the data refuses (an unknown organization, a bad value)
69    unavailable: ``serve`` cannot listen on its address (in use, not permitted)
70    internal error (a bug)
78    configuration: no database in the data directory, or the directory cannot be used
130   interrupted
====  ==========================================================================

Errors are one line on stderr, ``ftmock: error: MESSAGE``.

Each command imports the server's modules when it runs: ``ftmock --help``, a usage error and shell
completion (which runs the program on every Tab) then start without them, ~75 ms sooner.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from ftagent.cliexit import EXIT_INTERNAL, EXIT_USAGE, ProgramGroup

from . import __version__
from .errors import ApiError, BadRequest, ConfigError, FtmockError, Unavailable
from .takeover import DEFAULT_IDENTITY_WINDOW, MAX_IDENTITY_WINDOW, MIN_IDENTITY_WINDOW, org_settings

__all__ = ["EXIT_CONFIG", "EXIT_UNAVAILABLE", "exit_code_for", "main"]

EXIT_UNAVAILABLE = 69
EXIT_CONFIG = 78


def exit_code_for(exc: BaseException) -> int:
    """The one mapping from ftmock's errors to exit codes."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, ApiError):
        return EXIT_USAGE
    return EXIT_INTERNAL


class FtmockGroup(ProgramGroup):
    program = "ftmock"
    errors = (FtmockError,)
    exit_code_for = staticmethod(exit_code_for)

DEFAULT_DATA_DIR = "ftmock-data"


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--listen")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


@click.group(cls=FtmockGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False), default=DEFAULT_DATA_DIR,
              show_default=True, envvar="FTMOCK_DATA_DIR", help="Directory with the database, CA and keys.")
@click.option("-d", "--debug", is_flag=True, help="Log debug messages.")
@click.version_option(__version__, prog_name="ftmock")
@click.pass_context
def cli(ctx: click.Context, data_dir: str, debug: bool) -> None:
    """ftmock: reference entitlement server (a Candlepin subset) with fault-tolerance support."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # click 7's Path has no path_type=Path: convert here.
    ctx.obj = Path(data_dir).resolve()


@cli.command()
@click.option("--listen", default="127.0.0.1:8443", show_default=True,
              help="Address to listen on, HOST:PORT; port 0 picks a free port.")
@click.option("--data-dir", "serve_data_dir", type=click.Path(file_okay=False), default=None,
              help="Directory with the database, CA and keys (same as the global option).")
@click.option("--admin-password", envvar="FTMOCK_ADMIN_PASSWORD", default=None,
              help="Password of user 'admin' (default 'admin' on first start; env FTMOCK_ADMIN_PASSWORD).")
@click.option("--no-csr", is_flag=True,
              help="Ignore the csr of registrations and regenerations, as stock Candlepin does: the server "
                   "generates every consumer key and returns it (idCert.key).")
@click.option("--request-timeout", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds for a request's line and headers to arrive once begun, and for its body "
                   "(plus one second per MiB); slower clients get 408 and are disconnected.")
@click.option("--content-access-mode", type=click.Choice(["org_environment", "entitlement"]), default=None,
              help="Content access mode of org 'admin': org_environment (simple content access; the default "
                   "when the org is created) or entitlement; given, it is applied at every start.")
@click.option("--content-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Serve this directory as the content delivery network at the server's root (URL written "
                   "to DIR/cdn-url), to clients whose entitlement or content access certificate grants the path.")
@click.option("--departed-grace", type=click.FloatRange(0, 365 * 86400), default=3600.0, show_default=True,
              metavar="SECONDS",
              help="Seconds an FT instance may be missing from every report before its consumer's entitlements "
                   "are returned (and a consumer the server made is deleted); swept every half of it "
                   "(1 to 60 s).")
@click.option("--inactive-days", type=click.IntRange(1, 100000), default=397, show_default=True, metavar="N",
              help="Delete consumers that have not checked in for N days (Candlepin's inactive consumer "
                   "cleaner; runs at start and hourly).")
@click.option("--guest-silent-after", type=click.FloatRange(1, 365 * 86400), default=10800.0, show_default=True,
              metavar="SECONDS",
              help="An FT group is unprotected (guestSilent) when its primary has neither checked in nor "
                   "renewed its lease for this long.")
@click.option("--identity-cert-days", type=click.IntRange(1, 36500), default=None,
              help="Days an identity certificate is valid (default 1825: Candlepin's 5 years).")
@click.option("--identity-renew-days", type=click.IntRange(0, 36500), default=None,
              help="A consumer's check-in (GET /consumers/UUID, PUT .../checkin) renews its identity certificate "
                   "when it expires within this many days, for the same key (default 90, as Candlepin).")
@click.option("--identity-window", type=click.FloatRange(MIN_IDENTITY_WINDOW, MAX_IDENTITY_WINDOW),
              default=DEFAULT_IDENTITY_WINDOW, show_default=True,
              help="Seconds after its last check-in or lease renewal during which a system's identity is live: "
                   "a registration naming its FT VM is refused (409) unless an org admin forces it. An org's "
                   "own setting (org update --identity-window) comes first.")
@click.pass_obj
def serve(data_dir: Path, listen: str, serve_data_dir: str | None, admin_password: str | None,
          no_csr: bool, request_timeout: float, content_access_mode: str | None, content_dir: str | None,
          departed_grace: float, inactive_days: int, guest_silent_after: float,
          identity_cert_days: int | None, identity_renew_days: int | None,
          identity_window: float) -> None:
    """Run the HTTPS server until SIGTERM or Ctrl-C."""
    from .app import FtmockApp
    from .ca import IDENTITY_DAYS, IDENTITY_RENEW_DAYS
    from .lifecycle import LifecycleSettings

    if serve_data_dir is not None:
        data_dir = Path(serve_data_dir).resolve()
    identity_cert_days = IDENTITY_DAYS if identity_cert_days is None else identity_cert_days
    identity_renew_days = IDENTITY_RENEW_DAYS if identity_renew_days is None else identity_renew_days
    if identity_renew_days >= identity_cert_days:
        raise click.BadParameter(f"must be less than --identity-cert-days ({identity_cert_days}): every "
                                 "certificate would be renewed at every check-in", param_hint="--identity-renew-days")
    host, port = _parse_listen(listen)
    settings = LifecycleSettings(departed_grace=departed_grace, inactive_days=inactive_days,
                                 guest_silent_after=guest_silent_after)
    app = FtmockApp(data_dir, host, port, admin_password, honour_csr=not no_csr, request_timeout=request_timeout,
                    content_access_mode=content_access_mode,
                    content_dir=Path(content_dir).resolve() if content_dir else None, lifecycle=settings,
                    identity_cert_days=identity_cert_days, identity_renew_days=identity_renew_days,
                    identity_window=identity_window)
    app.serve()


def _query(data_dir: Path, fn: Any, *args: Any) -> Any:
    from .app import open_database

    if not (data_dir / "ftmock.db").exists():
        raise ConfigError(f"no ftmock database in {data_dir} (--data-dir, FTMOCK_DATA_DIR); run "
                          "'ftmock serve' there first")
    db = open_database(data_dir)
    try:
        with db.transaction() as tx:
            return fn(tx, *args)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    finally:
        db.close()


def _admin(data_dir: Path, fn: Any, *args: Any) -> None:
    click.echo(json.dumps(_query(data_dir, fn, *args), indent=2))


def _table(rows: list[list[Any]], header: list[str]) -> None:
    """Print rows as left-aligned columns under a header."""
    cells = [header] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        click.echo("  ".join(row[i].ljust(widths[i]) for i in range(len(header))).rstrip())


def _yes(value: Any) -> str:
    return "yes" if value else "no"


_json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _attrs(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--attribute")
        out[key] = value
    return out


@cli.group()
def org() -> None:
    """Organizations."""


_MODES = click.Choice(["org_environment", "entitlement"])


def _window(value: str | None) -> float | None:
    """--identity-window: seconds, or `default` (the server's)."""
    if value is None or value == "default":
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not MIN_IDENTITY_WINDOW <= seconds <= MAX_IDENTITY_WINDOW:
        raise click.BadParameter(f"expected seconds from {MIN_IDENTITY_WINDOW:g} to {MAX_IDENTITY_WINDOW:g} or "
                                 f"'default', got {value!r}", param_hint="--identity-window")
    return seconds


_window_option = click.option(
    "--identity-window", metavar="SECONDS|default",
    help="This organization's identity window (see serve --identity-window); 'default' uses the server's.")


@org.command("create")
@click.argument("key")
@click.option("--name", help="Display name.")
@click.option("--content-access-mode", "mode", type=_MODES, default=None,
              help="org_environment (simple content access, the default) or entitlement (content from "
                   "attached subscriptions).")
@_window_option
@click.pass_obj
def org_create(data_dir: Path, key: str, name: str | None, mode: str | None, identity_window: str | None) -> None:
    """Create organization KEY."""
    from .owners import create_owner

    window = _window(identity_window)

    def run(tx: Any) -> Any:
        create_owner(tx, key, name, mode)
        return org_settings(tx, key, window)

    _admin(data_dir, run)


@org.command("update")
@click.argument("key")
@click.option("--name", help="New display name.")
@click.option("--content-access-mode", "mode", type=_MODES, default=None,
              help="Switch to org_environment (simple content access) or entitlement; leaving simple "
                   "content access revokes the org's content access certificates.")
@_window_option
@click.pass_obj
def org_update(data_dir: Path, key: str, name: str | None, mode: str | None, identity_window: str | None) -> None:
    """Change organization KEY's display name, content access mode or identity window; prints it."""
    from .owners import update_owner

    body: dict[str, Any] = {}
    if name is not None:
        body["displayName"] = name
    if mode is not None:
        body["contentAccessMode"] = mode
    window = _window(identity_window)

    def run(tx: Any) -> Any:
        if body:
            update_owner(tx, key, body)
        return org_settings(tx, key, window, change=identity_window is not None)

    _admin(data_dir, run)


@org.command("list")
@_json_flag
@click.pass_obj
def org_list(data_dir: Path, as_json: bool) -> None:
    """List organizations with their numbers of systems, hypervisors and FT groups, and content access mode."""
    from .fleet import org_list as orgs

    rows = _query(data_dir, orgs)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table([[o["key"], o["systems"], o["hypervisors"], o["ftGroups"], o["contentAccessMode"], o["displayName"]]
            for o in rows], ["ORG", "SYSTEMS", "HYPERVISORS", "FT GROUPS", "CONTENT ACCESS", "NAME"])


@cli.group()
def consumer() -> None:
    """Consumers (systems and hypervisors)."""


@consumer.command("list")
@click.option("--org", "owner", required=True, help="Organization key.")
@_json_flag
@click.pass_obj
def consumer_list(data_dir: Path, owner: str, as_json: bool) -> None:
    """List an organization's consumers."""
    from .fleet import consumer_list as consumers

    rows = _query(data_dir, consumers, owner)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table([[c["uuid"], c["type"], c["name"], _yes(c["registered"]), c["lastCheckin"],
             _yes(c["failedOver"]) if c["instanceUUID"] else "-"] for c in rows],
           ["UUID", "TYPE", "NAME", "REGISTERED", "LAST CHECK-IN", "FAILED OVER"])


@cli.group()
def ftgroup() -> None:
    """Fault-tolerant groups (the instances of one FT VM)."""


@ftgroup.command("list")
@click.option("--org", "owner", required=True, help="Organization key.")
@_json_flag
@click.pass_obj
def ftgroup_list(data_dir: Path, owner: str, as_json: bool) -> None:
    """List an organization's FT groups: protection, and each instance's role, host, registration and failover."""
    from .fleet import ft_groups

    groups = _query(data_dir, ft_groups, owner)
    if as_json:
        click.echo(json.dumps(groups, indent=2))
        return
    for group in groups:
        lease = group["lease"]
        held = (f"lease held by holder {lease['holderFingerprint']} (generation {lease['generation']}, "
                f"{'expires in ' + format(lease['expiresIn'], '.0f') + 's' if lease['valid'] else 'expired'})"
                if lease else "no lease")
        status = group["protection"] + (f" ({', '.join(group['reasons'])})" if group["reasons"] else "")
        click.echo(f"FT group {group['guestId']}: {status}; {held}")
        _table([["  " + i["consumer"], i["instanceUUID"], i["role"], i["host"], _yes(i["registered"]),
                 f"yes, to {i['failedOverTo']}" if i["failedOver"] else "no"] for i in group["instances"]],
               ["  CONSUMER", "INSTANCE", "ROLE", "HOST", "REGISTERED", "FAILED OVER"])
    if not groups:
        click.echo(f"No FT groups in {owner}")


@cli.group()
def job() -> None:
    """The server's own jobs (the inactive consumer cleaner)."""


@job.command("list")
@_json_flag
@click.pass_obj
def job_list(data_dir: Path, as_json: bool) -> None:
    """List the latest runs of the server's jobs: when, and what they removed."""
    from .inactive import job_list as jobs

    rows = _query(data_dir, jobs)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table([[r["key"], r["started"], len(r["removed"]), r["message"]] for r in rows],
           ["JOB", "STARTED", "REMOVED", "RESULT"])


@cli.group()
def lease() -> None:
    """FT group leases."""


@lease.command("list")
@click.option("--org", "owner", required=True, help="Organization key.")
@_json_flag
@click.pass_obj
def lease_list(data_dir: Path, owner: str, as_json: bool) -> None:
    """List an organization's leases: holder, generation, expiry."""
    from .fleet import lease_list as leases

    rows = _query(data_dir, leases, owner)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table([[r["group"], r["holderFingerprint"], r["generation"], r["expires"], _yes(r["valid"])] for r in rows],
           ["GROUP", "HOLDER", "GENERATION", "EXPIRES", "VALID"])


@cli.group()
def event() -> None:
    """The organizations' audit events (identity replacements)."""


@event.command("list")
@click.option("--org", "owner", required=True, help="Organization key.")
@_json_flag
@click.pass_obj
def event_list(data_dir: Path, owner: str, as_json: bool) -> None:
    """List an organization's events, oldest first: when, what, which system, by whom."""
    from .consumers import require_owner
    from .events import list_for_owner

    def run(tx: Any) -> Any:
        require_owner(tx, owner)
        return list_for_owner(tx, owner)

    rows = _query(data_dir, run)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table([[e["timestamp"], e["type"], e["consumerUuid"], f"{e['principal']['type']} {e['principal']['name']}",
             e["messageText"]] for e in rows], ["TIME", "TYPE", "CONSUMER", "BY", "MESSAGE"])


@cli.group()
def user() -> None:
    """Users of one organization (HTTP Basic)."""


@user.command("create")
@click.argument("username")
@click.option("--org", "owner", required=True, help="Organization key.")
@click.option("--role", type=click.Choice(["reporter", "user", "admin"]), required=True,
              help="reporter: only checks in hypervisors; user: registers and manages systems, never takes over "
                   "an identity or a lease; admin: everything within the organization.")
@click.option("--password", envvar="FTMOCK_USER_PASSWORD", prompt=True, hide_input=True,
              confirmation_prompt=True, help="Password (or $FTMOCK_USER_PASSWORD, or a prompt).")
@click.pass_obj
def user_create(data_dir: Path, username: str, owner: str, role: str, password: str) -> None:
    """Create user USERNAME in an organization with a role (again: new password and role)."""
    from .auth import create_user
    from .consumers import require_owner

    def run(tx: Any) -> Any:
        require_owner(tx, owner)
        return create_user(tx, username, password, owner, role)

    _admin(data_dir, run)


@cli.group()
def product() -> None:
    """Products."""


@product.command("create")
@click.option("--org", "owner", required=True, help="Organization key.")
@click.option("--id", "pid", required=True, help="Product id (SKU).")
@click.option("--name", required=True, help="Product name.")
@click.option("--attribute", "attributes", multiple=True, metavar="NAME=VALUE",
              help="Product attribute, e.g. virt_limit=4 or virt_limit=unlimited; repeatable.")
@click.option("--provides", multiple=True, metavar="PRODUCT_ID", help="Provided product id; repeatable.")
@click.option("--content", "contents", multiple=True, metavar="LABEL=PATH",
              help="Content set (yum repository) of the product, by label and path; repeatable.")
@click.pass_obj
def product_create(data_dir: Path, owner: str, pid: str, name: str, attributes: tuple[str, ...],
                   provides: tuple[str, ...], contents: tuple[str, ...]) -> None:
    """Create or update a product."""
    from .consumers import require_owner
    from .subscriptions import create_product

    content = [{"content": {"label": label, "name": label, "contentUrl": path}, "enabled": True}
               for label, path in _attrs(contents).items()]
    body = {"id": pid, "name": name, "attributes": _attrs(attributes), "providedProducts": list(provides),
            "productContent": content}

    def run(tx: Any) -> Any:
        require_owner(tx, owner)
        return create_product(tx, owner, body)

    _admin(data_dir, run)


@cli.group()
def pool() -> None:
    """Pools (subscriptions)."""


@pool.command("create")
@click.option("--org", "owner", required=True, help="Organization key.")
@click.option("--product", "pid", required=True, help="Product id.")
@click.option("--quantity", type=int, default=1, show_default=True, help="How many; -1 for unlimited.")
@click.option("--end-date", help="ISO 8601 end date (default: a year from now).")
@click.pass_obj
def pool_create(data_dir: Path, owner: str, pid: str, quantity: int, end_date: str | None) -> None:
    """Create a pool of a product; prints the pool with its id."""
    from .consumers import require_owner
    from .subscriptions import create_pool

    body: dict[str, Any] = {"productId": pid, "quantity": quantity}
    if end_date:
        body["endDate"] = end_date

    def run(tx: Any) -> Any:
        require_owner(tx, owner)
        return create_pool(tx, owner, body)

    _admin(data_dir, run)


@cli.group("activation-key")
def activation_key() -> None:
    """Activation keys."""


@activation_key.command("create")
@click.option("--org", "owner", required=True, help="Organization key.")
@click.option("--name", required=True, help="Key name.")
@click.option("--pool", "pools", multiple=True, help="Pool id to attach on registration; repeatable.")
@click.option("--auto-attach", is_flag=True, help="Auto-attach on registration.")
@click.pass_obj
def activation_key_create(data_dir: Path, owner: str, name: str, pools: tuple[str, ...],
                          auto_attach: bool) -> None:
    """Create an activation key."""
    from .consumers import require_owner
    from .subscriptions import create_activation_key

    body = {"name": name, "pools": list(pools), "autoAttach": auto_attach}

    def run(tx: Any) -> Any:
        require_owner(tx, owner)
        return create_activation_key(tx, owner, body)

    _admin(data_dir, run)


@cli.group()
def share() -> None:
    """Shares: let another organization's FT guests use this organization's hypervisors."""


def _share_run(owner: str, fn: Any, *args: Any) -> Any:
    from .consumers import require_owner

    def run(tx: Any) -> Any:
        require_owner(tx, owner)
        return fn(tx, owner, *args)

    return run


@share.command("create")
@click.option("--org", "owner", required=True, help="The sharing organization (its hypervisors provide).")
@click.option("--with", "recipient", required=True, help="The organization its FT guests register in.")
@click.pass_obj
def share_create(data_dir: Path, owner: str, recipient: str) -> None:
    """Share ORG's hypervisors' virt pools and FT groups with another organization."""
    from .shares import create

    _admin(data_dir, _share_run(owner, create, {"recipient": {"key": recipient}}))


@share.command("list")
@click.option("--org", "owner", required=True, help="Organization key.")
@click.pass_obj
def share_list(data_dir: Path, owner: str) -> None:
    """List the shares ORG made and the shares made with it."""
    from .shares import list_for_owner

    _admin(data_dir, _share_run(owner, list_for_owner))


@share.command("delete")
@click.option("--org", "owner", required=True, help="The sharing organization.")
@click.option("--with", "recipient", required=True, help="The organization the share was made with.")
@click.pass_obj
def share_delete(data_dir: Path, owner: str, recipient: str) -> None:
    """Revoke a share: the entitlements it allowed are removed, consumers are kept."""
    from .subscriptions import revoke_share

    _admin(data_dir, _share_run(owner, revoke_share, recipient))


def main() -> None:
    os.umask(0o077)
    cli.main(prog_name="ftmock")
