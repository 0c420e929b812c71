"""The `ftmock` command: run the server, and create fixtures (orgs, products, pools, keys) offline."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["main"]

DEFAULT_DATA_DIR = "ftmock-data"


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--listen")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA_DIR,
              show_default=True, envvar="FTMOCK_DATA_DIR", help="Directory with the database, CA and keys.")
@click.option("-d", "--debug", is_flag=True, help="Log debug messages.")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path, debug: bool) -> None:
    """ftmock: reference entitlement server (a Candlepin subset) with fault-tolerance support."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = data_dir.resolve()


@cli.command()
@click.option("--listen", default="127.0.0.1:8443", show_default=True,
              help="Address to listen on, HOST:PORT; port 0 picks a free port.")
@click.option("--data-dir", "serve_data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory with the database, CA and keys (same as the global option).")
@click.option("--admin-password", envvar="FTMOCK_ADMIN_PASSWORD", default=None,
              help="Password of user 'admin' (default 'admin' on first start; env FTMOCK_ADMIN_PASSWORD).")
@click.option("--no-csr", is_flag=True,
              help="Ignore the csr of registrations and regenerations, as stock Candlepin does: the server "
                   "generates every consumer key and returns it (idCert.key).")
@click.pass_obj
def serve(data_dir: Path, listen: str, serve_data_dir: Path | None, admin_password: str | None,
          no_csr: bool) -> None:
    """Run the HTTPS server until SIGTERM or Ctrl-C."""
    from .app import FtmockApp

    if serve_data_dir is not None:
        data_dir = serve_data_dir.resolve()
    host, port = _parse_listen(listen)
    try:
        app = FtmockApp(data_dir, host, port, admin_password, honour_csr=not no_csr)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    app.serve()


def _admin(data_dir: Path, fn: Any, *args: Any) -> None:
    from .app import open_database
    from .errors import ApiError

    if not (data_dir / "ftmock.db").exists():
        raise click.ClickException(f"no ftmock database in {data_dir}; run 'ftmock serve' there first")
    db = open_database(data_dir)
    try:
        with db.transaction() as tx:
            result = fn(tx, *args)
    except ApiError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        db.close()
    click.echo(json.dumps(result, indent=2))


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


@org.command("create")
@click.argument("key")
@click.option("--name", help="Display name.")
@click.pass_obj
def org_create(data_dir: Path, key: str, name: str | None) -> None:
    """Create organization KEY."""
    from .api import create_owner

    _admin(data_dir, create_owner, key, name)


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
    from .shares import delete

    _admin(data_dir, _share_run(owner, delete, recipient))


def main() -> None:
    os.umask(0o077)
    cli(prog_name="ftmock")
