"""The FT group lease: one holder at a time, a generation that only grows (the fencing token).

A new holder gets the lease only when the previous lease has expired on the server's clock, or when
the current holder hands it over by claiming the successor identity during a failover. A holder
whose lease expired must acquire again (generation null) and gets a new generation, so a holder
that slept past its TTL cannot renew its stale token. Releasing keeps the generation, so tokens
never repeat. Every grant, renewal, handover and release is logged for the no-overlap proof.

Who shares a lease is decided by the server alone: only the instances of one FT group (the org that
reports it and its `virt.uuid`, both set by hypervisor reports) share one; any other consumer has
its own, whatever `virt.uuid` it registered with.

The holder id is a secret of the instance that chose it: no answer shows it, only a short
fingerprint (:func:`fingerprint`). While a lease is live, a claim is taken only from the consumer
that holds it or from the successor of a failover the server itself performed (a *handover*), and
a consumer that names the holder id of a live lease another consumer holds (in any group) is
refused: even a leaked id steals nothing. A release must name the generation and, from a consumer,
its own holder id; a user releasing needs the org's admin role (checked by the API). A claim's ttl
is bounded by :data:`MAX_TTL`.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from .errors import BadRequest, Conflict
from .store import Tx
from .validate import int_text, req_dict

__all__ = ["MAX_TTL", "check_generation", "claim", "current", "fingerprint", "group_key_of", "lease_dto", "lease_log",
           "regroup", "release"]

log = logging.getLogger(__name__)

MAX_TTL = 300.0
Clock = Callable[[], float]


def fingerprint(holder: str) -> str:
    """What answers show of a holder id: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(holder.encode()).hexdigest()[:8]


def group_key_of(consumer: sqlite3.Row) -> str:
    """FT instances share one lease per reporting org and `virt.uuid`; any other consumer has its own."""
    if consumer["guest_key"] and consumer["instance_uuid"]:
        return f"{consumer['reported_owner'] or consumer['owner']}/{consumer['guest_key']}"
    return str(consumer["uuid"])


def lease_dto(row: sqlite3.Row | None, now: float) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "holderFingerprint": fingerprint(row["holder"]),
        "consumer": row["consumer"],
        "generation": row["generation"],
        "ttl": row["ttl"],
        "expiresIn": max(0.0, row["expires"] - now),
        "valid": row["expires"] > now,
    }


def _log(tx: Tx, group: str, holder: str, consumer: str, generation: int, event: str,
         start: float, expires: float) -> None:
    tx.execute("INSERT INTO lease_log(group_key, holder, consumer, generation, event, start, expires) "
               "VALUES(?,?,?,?,?,?,?)", (group, holder, consumer, generation, event, start, expires))


def _follows(tx: Tx, consumer_uuid: str, predecessor: str) -> bool:
    """Whether ``consumer_uuid`` is ``predecessor`` or a successor of it by failovers the server made."""
    seen: set[str] = set()
    current: str | None = predecessor
    while current is not None and current not in seen:
        if current == consumer_uuid:
            return True
        seen.add(current)
        row = tx.one("SELECT failed_over_to FROM consumers WHERE uuid = ?", (current,))
        current = row["failed_over_to"] if row is not None else None
    return False


def _check_holder(tx: Tx, consumer: sqlite3.Row, holder: str, now: float) -> None:
    """Refuse a holder id under which another consumer (not this one's failover predecessor) holds a lease."""
    for other in tx.all("SELECT consumer FROM leases WHERE holder = ? AND expires > ?", (holder, now)):
        if not _follows(tx, consumer["uuid"], other["consumer"]):
            log.warning("lease claim by consumer %s names the holder id (fingerprint %s) of consumer %s's lease: "
                        "refused", consumer["uuid"], fingerprint(holder), other["consumer"])
            raise Conflict("This holder id holds another consumer's lease; a claim must use the caller's own "
                           "holder id.", holderInUse=True)


def _held(lease: sqlite3.Row, now: float) -> dict[str, Any]:
    """What a refusal tells about the lease: fingerprint, generation and time left, never the holder id."""
    return {"holderFingerprint": fingerprint(lease["holder"]), "generation": lease["generation"],
            "expiresIn": max(0.0, lease["expires"] - now)}


def claim(tx: Tx, consumer: sqlite3.Row, body: Any, clock: Clock = time.time) -> dict[str, Any]:
    body = req_dict(body, "lease request")
    holder = body.get("holder")
    if not isinstance(holder, str) or not holder.strip() or len(holder) > 255:
        raise BadRequest("holder must be a non-empty string")
    generation = body.get("generation")
    if generation is not None and (not isinstance(generation, int) or isinstance(generation, bool)):
        raise BadRequest("generation must be an integer or null")
    ttl = body.get("ttl", 20)
    if (not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl != ttl
            or not 1 <= ttl <= MAX_TTL):
        raise BadRequest(f"ttl must be a number of seconds between 1 and {MAX_TTL:g}")
    group = group_key_of(consumer)
    now = clock()
    _check_holder(tx, consumer, holder, now)
    lease = tx.one("SELECT * FROM leases WHERE group_key = ?", (group,))
    live = lease is not None and lease["expires"] > now

    if lease is not None and live:
        if not _follows(tx, consumer["uuid"], lease["consumer"]):
            raise Conflict(f"The lease of this fault-tolerant group is held by consumer {lease['consumer']}.",
                           **_held(lease, now))
        if lease["holder"] != holder:
            raise Conflict(f"The lease of this fault-tolerant group is held by holder "
                           f"{fingerprint(lease['holder'])} (fingerprint).", **_held(lease, now))
        if generation is not None and generation != lease["generation"]:
            raise Conflict(f"Stale lease generation {generation}; current is {lease['generation']}.",
                           **_held(lease, now))
        if lease["consumer"] == consumer["uuid"]:
            new_gen, event = lease["generation"], "renew"
        else:
            # The holder claims with the successor identity of a failover the server performed.
            new_gen, event = lease["generation"] + 1, "handover"
    else:
        if lease is not None and generation is not None:
            # The holder's lease ran out on the server's clock: its token is stale whoever holds next.
            raise Conflict(f"Lease generation {generation} has expired; acquire again.",
                           expired=True, **_held(lease, now))
        new_gen, event = (lease["generation"] if lease is not None else 0) + 1, "grant"
    expires = now + float(ttl)
    tx.execute(
        "INSERT INTO leases(group_key, holder, consumer, generation, ttl, granted, expires) "
        "VALUES(?,?,?,?,?,?,?) ON CONFLICT(group_key) DO UPDATE SET holder=excluded.holder, "
        "consumer=excluded.consumer, generation=excluded.generation, ttl=excluded.ttl, "
        "granted=CASE WHEN excluded.generation = leases.generation THEN leases.granted ELSE excluded.granted END, "
        "expires=excluded.expires",
        (group, holder, consumer["uuid"], new_gen, float(ttl), now, expires),
    )
    _log(tx, group, holder, consumer["uuid"], new_gen, event, now, expires)
    if event != "renew":
        log.info("lease %s: %s to holder %s (consumer %s), generation %d", group, event, fingerprint(holder),
                 consumer["uuid"], new_gen)
    row = tx.one("SELECT * FROM leases WHERE group_key = ?", (group,))
    dto = lease_dto(row, now)
    assert dto is not None
    return dto


def release(tx: Tx, consumer: sqlite3.Row, holder: str | None, generation: str | None,
            by_consumer: bool, clock: Clock = time.time) -> None:
    """Release the group's lease at the generation the caller believes current.

    A consumer names its own holder id too, and may release only a lease it holds itself; a user
    (an org administrator: the API checks) names the generation only, so a stale release changes
    nothing either way.
    """
    if by_consumer and not holder:
        raise BadRequest("holder is required to release a lease")
    if generation is None:
        raise BadRequest("generation is required to release a lease")
    gen = int_text(generation, "generation")
    group = group_key_of(consumer)
    now = clock()
    lease = tx.one("SELECT * FROM leases WHERE group_key = ?", (group,))
    if lease is None or lease["expires"] <= now:
        return
    if gen != lease["generation"] or (by_consumer and holder != lease["holder"]):
        raise Conflict(f"The lease is held by holder {fingerprint(lease['holder'])} (fingerprint) with generation "
                       f"{lease['generation']}, not by the one named with {gen}.", **_held(lease, now))
    if by_consumer and lease["consumer"] != consumer["uuid"]:
        raise Conflict("Only the consumer holding the lease can release it.", **_held(lease, now))
    tx.execute("UPDATE leases SET expires = ? WHERE group_key = ?", (now, group))
    _log(tx, group, lease["holder"], lease["consumer"], lease["generation"], "release", now, now)
    log.info("lease %s released by holder %s", group, fingerprint(lease["holder"]))


def current(tx: Tx, consumer: sqlite3.Row, clock: Clock = time.time) -> dict[str, Any] | None:
    return lease_dto(tx.one("SELECT * FROM leases WHERE group_key = ?", (group_key_of(consumer),)), clock())


def check_generation(tx: Tx, consumer: sqlite3.Row, header: str | None, clock: Clock = time.time) -> None:
    """Refuse a state change carrying a fencing token that is no longer current."""
    if header is None:
        return
    generation = int_text(header, "X-Lease-Generation")
    now = clock()
    lease = tx.one("SELECT * FROM leases WHERE group_key = ?", (group_key_of(consumer),))
    if lease is None or lease["generation"] != generation or lease["expires"] <= now:
        raise Conflict(f"Lease generation {generation} is not current.",
                       **(_held(lease, now) if lease is not None else {"generation": None}))


def lease_log(tx: Tx, group: str) -> list[dict[str, Any]]:
    """The group's log, each entry with the holder's fingerprint in place of its id."""
    out = []
    for row in tx.all("SELECT * FROM lease_log WHERE group_key = ? ORDER BY id", (group,)):
        entry = dict(row)
        entry["holderFingerprint"] = fingerprint(entry.pop("holder"))
        out.append(entry)
    return out


def regroup(tx: Tx, old: str, new: str) -> None:
    """Move a consumer's own lease to the FT group it has just become the primary of.

    A VM registered before any report holds a lease of its own; when a report adopts it as the
    primary of its FT group, that lease (generation, holder, log) becomes the group's, so the
    running heartbeat renews on as before. A row left under the group's key by consumers that no
    longer exist is replaced.
    """
    if old == new or tx.one("SELECT 1 FROM leases WHERE group_key = ?", (old,)) is None:
        return
    if tx.one("SELECT 1 FROM leases WHERE group_key = ?", (new,)) is not None:
        log.warning("lease %s replaces the lease left under %s by consumers that are gone", old, new)
        tx.execute("DELETE FROM leases WHERE group_key = ?", (new,))
    tx.execute("UPDATE leases SET group_key = ? WHERE group_key = ?", (new, old))
    tx.execute("UPDATE lease_log SET group_key = ? WHERE group_key = ?", (new, old))
