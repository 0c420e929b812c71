"""Who may replace a consumer's identity certificate while the system holding it is alive.

An FT VM's ``virt.uuid`` is no secret: every hypervisor report carries it, so anyone with the org's
activation key can name it in a registration, and registration with it returns the FT group's
role-0 consumer. Were that to issue a new certificate whatever the state of the old one, the
running guest's certificate would be retired (its next call a 401) and the newcomer would *be* the
VM. The rules:

* An identity is *live* while its system has shown itself within the org's identity window (the
  org's own setting, else the server's, :data:`DEFAULT_IDENTITY_WINDOW` unless configured): its last
  check-in, or a lease it holds, counted until the lease expires (the heartbeat renews it every few
  seconds, so a guest running the heartbeat is always live).
* A registration never replaces a live identity: 409, naming the system that holds it.
* Unless an administrator of the org asks for it explicitly (``force=true``, with a user's
  password); an activation key or a consumer certificate can never force (403).
* Replacing an existing identity (forced, or of a system gone quiet for longer than the window) is
  an event in the org's list, with who and when (:mod:`ftmock.events`). A user regenerating another
  system's identity does the same thing, and so does a user unregistering an FT VM's live identity
  (the next registration would rebuild the group around itself): both need an administrator too
  and are recorded alike.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import time
from typing import Any

from . import dto, events
from .auth import Principal
from .errors import Conflict, Forbidden, NotFound
from .store import Tx

__all__ = [
    "DEFAULT_IDENTITY_WINDOW",
    "MAX_IDENTITY_WINDOW",
    "MIN_IDENTITY_WINDOW",
    "check_deletion",
    "check_force",
    "check_regeneration",
    "check_registration",
    "identity_window",
    "last_seen",
    "org_settings",
]

log = logging.getLogger(__name__)

#: A day: six of rhsmcertd's 4-hour check-ins. A guest running the lease heartbeat is live anyway.
DEFAULT_IDENTITY_WINDOW = 86400.0
MIN_IDENTITY_WINDOW = 1.0
MAX_IDENTITY_WINDOW = 10 * 366 * 86400.0


def identity_window(tx: Tx, owner: str | None, default: float) -> float:
    """The org's identity window in seconds: its own setting, else the server's ``default``."""
    row = tx.one("SELECT identity_window FROM owners WHERE key = ?", (owner,)) if owner else None
    if row is not None and row["identity_window"] is not None:
        return float(row["identity_window"])
    return default


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def last_seen(tx: Tx, consumer: sqlite3.Row) -> float | None:
    """When the system holding ``consumer``'s identity last showed itself (epoch seconds), if ever.

    Its last check-in, or the expiry of a lease it holds: a lease is renewed long before it expires,
    so counting to the expiry errs, by at most a ttl, on the side of protecting the identity.
    """
    seen = [_epoch(consumer["last_checkin"])] if consumer["last_checkin"] else []
    lease = tx.one("SELECT MAX(expires) AS expires FROM leases WHERE consumer = ?", (consumer["uuid"],))
    if lease is not None and lease["expires"] is not None:
        seen.append(float(lease["expires"]))
    return max(seen) if seen else None


def _ago(seconds: float) -> str:
    if seconds < 1:
        return "just now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _system(consumer: sqlite3.Row) -> str:
    return f"system '{consumer['name']}' ({consumer['uuid']})"


def _liveness(tx: Tx, consumer: sqlite3.Row, owner: str | None, default_window: float) -> tuple[bool, str, float]:
    """Whether ``consumer``'s identity is live, how long ago its system was seen (text), and the window."""
    now = time.time()
    window = identity_window(tx, consumer["owner"] or owner, default_window)
    seen = last_seen(tx, consumer)
    live = seen is not None and seen >= now - window
    return live, "never checked in" if seen is None else f"last seen {_ago(max(0.0, now - seen))}", window


def check_force(principal: Principal, owner: str, activation_keys: list[str]) -> None:
    """Refuse ``force=true`` from anyone but an administrator of ``owner`` using a password."""
    if activation_keys:
        raise Forbidden("An activation key cannot force a registration; an administrator of "
                        f"{owner} can, with a username and password")
    if not principal.administers(owner):
        who = f"User {principal.name}" if principal.is_user else "This caller"
        raise Forbidden(f"{who} cannot force a registration in {owner}: only an administrator of the "
                        "organization can")


def check_registration(tx: Tx, consumer: sqlite3.Row, owner: str, registrant: tuple[str, str], *,
                       force: bool, default_window: float, virt_uuid: str) -> None:
    """May this registration replace ``consumer``'s identity? Raises 409 if not; records it if so.

    ``registrant`` is (principal type, name) of who registers; ``force`` was checked by
    :func:`check_force` already.
    """
    if consumer["cert_pem"] is None:
        return  # its first identity: nothing to replace
    live, seen_text, window = _liveness(tx, consumer, owner, default_window)
    holder = _system(consumer)
    if live and not force:
        log.warning("registration in %s by %s %s naming virt.uuid %s refused: the identity of %s is live (%s)",
                    owner, registrant[0], registrant[1], virt_uuid, holder, seen_text)
        raise Conflict(
            f"The fault-tolerant VM with virt.uuid {virt_uuid} is registered as {holder}, {seen_text}: "
            "its identity is live and a registration cannot take it over. An administrator of "
            f"{owner} can replace it by registering with force.",
            consumerUuid=consumer["uuid"], consumerName=consumer["name"],
        )
    how = "forced registration" if live else f"registration (identity window {window:g} s passed)"
    events.record(tx, owner, events.IDENTITY_REPLACED, consumer, registrant,
                  f"{how} by {registrant[0]} {registrant[1]} replaced the identity of {holder}, {seen_text}; "
                  f"certificate serial {consumer['cert_serial']} is retired")


def check_deletion(tx: Tx, consumer: sqlite3.Row, principal: Principal, default_window: float) -> None:
    """A user unregistering an FT VM's live identity frees its place for the next registration (which
    would then rebuild the group and become its primary): that is a takeover too, an administrator's,
    recorded. Plain systems, and the consumer unregistering itself, are not concerned."""
    if not principal.is_user or consumer["instance_uuid"] is None or consumer["cert_pem"] is None:
        return
    owner = consumer["owner"]
    live, seen_text, _ = _liveness(tx, consumer, owner, default_window)
    if not live:
        return
    if not principal.administers(owner):
        raise Forbidden(f"User {principal.name} cannot unregister {_system(consumer)}, the live identity of a "
                        f"fault-tolerant VM ({seen_text}): only an administrator of {owner} can")
    events.record(tx, owner, events.IDENTITY_DELETED, consumer, ("user", principal.name),
                  f"unregistration by user {principal.name} deleted the live identity of {_system(consumer)}, "
                  f"{seen_text}")


def check_regeneration(tx: Tx, consumer: sqlite3.Row, principal: Principal) -> None:
    """A user regenerating a consumer's identity takes it over: an administrator only, recorded."""
    if not principal.is_user:
        return  # the consumer itself, with its current certificate
    owner = consumer["owner"]
    if not principal.administers(owner):
        raise Forbidden(f"User {principal.name} cannot replace the identity of consumer {consumer['uuid']}: only "
                        f"an administrator of {owner} can")
    if consumer["cert_pem"] is not None and owner:
        events.record(tx, owner, events.IDENTITY_REPLACED, consumer, ("user", principal.name),
                      f"regeneration by user {principal.name} replaced the identity of system "
                      f"'{consumer['name']}' ({consumer['uuid']}); certificate serial {consumer['cert_serial']} "
                      "is retired")


def org_settings(tx: Tx, owner: str, window: float | None, *, change: bool = True) -> dict[str, Any]:
    """Set (``change``) and show an org's identity window: the OwnerDTO plus ``identityWindow``.

    ``identityWindow`` is the org's own value in seconds, or null when the server's applies.
    """
    row = tx.one("SELECT * FROM owners WHERE key = ?", (owner,))
    if row is None:
        raise NotFound(f"Organization with id {owner} could not be found.")
    if change:
        tx.execute("UPDATE owners SET identity_window = ? WHERE key = ?", (window, owner))
        row = tx.one("SELECT * FROM owners WHERE key = ?", (owner,))
        assert row is not None
    return {**dto.owner_dto(row), "identityWindow": row["identity_window"]}
