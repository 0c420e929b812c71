"""Shares between organizations: one org lets another's FT guests use what its hypervisors provide.

The design keeps an FT group's consumers without an org until the VM registers, and gives them the
org the VM registers in. When the group's hypervisors belong to another org, the subscriptions they
provide must be shared with the registering org before they can be consumed. A share here is
explicit, one-way and revocable, created by an admin of the sharing org (the *owner*) for a
*recipient* org. It allows exactly two things:

* a registration in the recipient org adopts an FT group that the owner's hypervisors report, and
* the recipient's FT consumers of such groups consume the virt-only pools derived from the owner's
  hypervisors (the pools restricted to the guests of one host), as same-org consumers would.

It grants nothing else: the recipient's users still cannot read the owner's consumers, pools or jobs.
Revoking a share (:func:`ftmock.subscriptions.revoke_share`) removes the entitlements it allowed; it never
deletes a consumer.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import BadRequest, NotFound
from .store import Tx, now_iso
from .validate import req_dict

__all__ = ["create", "delete", "list_for_owner", "owners_sharing_with", "recipients_of", "share_dto",
           "shares_with"]

log = logging.getLogger(__name__)


def share_dto(owner: str, recipient: str, created: str) -> dict[str, Any]:
    return {"owner": {"key": owner}, "recipient": {"key": recipient}, "created": created}


def _recipient_key(body: Any) -> str:
    body = req_dict(body, "share")
    value = body.get("recipient")
    if isinstance(value, dict):
        value = value.get("key")
    if not isinstance(value, str) or not value.strip():
        raise BadRequest('A share needs a recipient organization: {"recipient": {"key": "ORG"}}')
    return value


def create(tx: Tx, owner: str, body: Any) -> dict[str, Any]:
    recipient = _recipient_key(body)
    if recipient == owner:
        raise BadRequest(f"Organization {owner} cannot share with itself")
    if tx.one("SELECT 1 FROM owners WHERE key = ?", (recipient,)) is None:
        raise NotFound(f"Organization with id {recipient} could not be found.")
    existing = tx.one("SELECT created FROM shares WHERE owner = ? AND recipient = ?", (owner, recipient))
    if existing is not None:
        return share_dto(owner, recipient, existing["created"])
    created = now_iso()
    tx.execute("INSERT INTO shares(owner, recipient, created) VALUES(?,?,?)", (owner, recipient, created))
    log.info("organization %s shares its hypervisors' virt pools with %s", owner, recipient)
    return share_dto(owner, recipient, created)


def list_for_owner(tx: Tx, owner: str) -> list[dict[str, Any]]:
    """The shares an org has made and the shares made with it."""
    rows = tx.all("SELECT * FROM shares WHERE owner = ? OR recipient = ? ORDER BY owner, recipient",
                  (owner, owner))
    return [share_dto(r["owner"], r["recipient"], r["created"]) for r in rows]


def delete(tx: Tx, owner: str, recipient: str) -> None:
    """Delete a share; the entitlements it allowed are :func:`ftmock.subscriptions.revoke_share`'s."""
    if tx.one("SELECT 1 FROM shares WHERE owner = ? AND recipient = ?", (owner, recipient)) is None:
        raise NotFound(f"Organization {owner} has no share with {recipient}.")
    tx.execute("DELETE FROM shares WHERE owner = ? AND recipient = ?", (owner, recipient))


def shares_with(tx: Tx, owner: str, recipient: str) -> bool:
    return owner == recipient or tx.one(
        "SELECT 1 FROM shares WHERE owner = ? AND recipient = ?", (owner, recipient)) is not None


def owners_sharing_with(tx: Tx, recipient: str) -> list[str]:
    return [r["owner"] for r in tx.all("SELECT owner FROM shares WHERE recipient = ? ORDER BY owner",
                                       (recipient,))]


def recipients_of(tx: Tx, owner: str) -> list[str]:
    return [r["recipient"] for r in tx.all("SELECT recipient FROM shares WHERE owner = ? ORDER BY recipient",
                                           (owner,))]
