"""The FT group lease: one holder at a time, a generation that only grows (the fencing token).

A new holder gets the lease only when the previous lease has expired on the server's clock, or when
the current holder hands it over by claiming the successor identity during a failover. A holder
whose lease expired must acquire again (generation null) and gets a new generation, so a holder
that slept past its TTL cannot renew its stale token. Releasing keeps the generation, so tokens
never repeat. Every grant, renewal, handover and release is logged for the no-overlap proof.

Who shares a lease is decided by the server alone: the group key comes from the `virt.uuid` fixed at
registration (or from the FT facts hypervisor reports set), never from facts a client sends later.
A release must name the current holder and its generation and come from the consumer that holds the
lease (or a user of its org), so a member of the group cannot free someone else's lease; and a
claim's ttl is bounded by :data:`MAX_TTL`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from .errors import BadRequest, Conflict
from .store import Tx
from .validate import int_text, req_dict

__all__ = ["MAX_TTL", "check_generation", "claim", "current", "group_key_of", "lease_dto", "lease_log", "release"]

log = logging.getLogger(__name__)

MAX_TTL = 300.0
Clock = Callable[[], float]


def group_key_of(consumer: sqlite3.Row) -> str:
    """FT instances share one lease per organization and `virt.uuid`; any other consumer has its own."""
    if consumer["guest_key"]:
        return f"{consumer['reported_owner'] or consumer['owner']}/{consumer['guest_key']}"
    return str(consumer["uuid"])


def lease_dto(row: sqlite3.Row | None, now: float) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "holder": row["holder"],
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
    lease = tx.one("SELECT * FROM leases WHERE group_key = ?", (group,))
    live = lease is not None and lease["expires"] > now

    if lease is not None and live and lease["holder"] != holder:
        raise Conflict(
            f"The lease of this fault-tolerant group is held by {lease['holder']}.",
            holder=lease["holder"], generation=lease["generation"], expiresIn=lease["expires"] - now,
        )
    if lease is not None and live and lease["holder"] == holder:
        if generation is not None and generation != lease["generation"]:
            raise Conflict(f"Stale lease generation {generation}; current is {lease['generation']}.",
                           holder=lease["holder"], generation=lease["generation"])
        if lease["consumer"] == consumer["uuid"]:
            new_gen, event = lease["generation"], "renew"
        else:
            new_gen, event = lease["generation"] + 1, "handover"
    else:
        if lease is not None and generation is not None:
            # The holder's lease ran out on the server's clock: its token is stale whoever holds next.
            raise Conflict(
                f"Lease generation {generation} has expired; acquire again.",
                holder=lease["holder"], generation=lease["generation"], expired=True,
            )
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
        log.info("lease %s: %s to %s (consumer %s), generation %d", group, event, holder,
                 consumer["uuid"], new_gen)
    row = tx.one("SELECT * FROM leases WHERE group_key = ?", (group,))
    dto = lease_dto(row, now)
    assert dto is not None
    return dto


def release(tx: Tx, consumer: sqlite3.Row, holder: str | None, generation: str | None,
            by_consumer: bool, clock: Clock = time.time) -> None:
    """Release the group's lease: the caller names the holder and generation it believes current.

    A consumer may release only a lease it holds itself (the lease's consumer); a user of the org
    may release any, but still names holder and generation, so a stale release changes nothing.
    """
    if not holder:
        raise BadRequest("holder is required to release a lease")
    if generation is None:
        raise BadRequest("generation is required to release a lease")
    gen = int_text(generation, "generation")
    group = group_key_of(consumer)
    now = clock()
    lease = tx.one("SELECT * FROM leases WHERE group_key = ?", (group,))
    if lease is None or lease["expires"] <= now:
        return
    if holder != lease["holder"] or gen != lease["generation"]:
        raise Conflict(f"The lease is held by {lease['holder']} with generation {lease['generation']}, "
                       f"not {holder} with {gen}.", holder=lease["holder"], generation=lease["generation"])
    if by_consumer and lease["consumer"] != consumer["uuid"]:
        raise Conflict("Only the consumer holding the lease can release it.",
                       holder=lease["holder"], generation=lease["generation"])
    tx.execute("UPDATE leases SET expires = ? WHERE group_key = ?", (now, group))
    _log(tx, group, lease["holder"], lease["consumer"], lease["generation"], "release", now, now)
    log.info("lease %s released by %s", group, lease["holder"])


def current(tx: Tx, consumer: sqlite3.Row, clock: Clock = time.time) -> dict[str, Any] | None:
    return lease_dto(tx.one("SELECT * FROM leases WHERE group_key = ?", (group_key_of(consumer),)), clock())


def check_generation(tx: Tx, consumer: sqlite3.Row, header: str | None, clock: Clock = time.time) -> None:
    """Refuse a state change carrying a fencing token that is no longer current."""
    if header is None:
        return
    generation = int_text(header, "X-Lease-Generation")
    lease = tx.one("SELECT * FROM leases WHERE group_key = ?", (group_key_of(consumer),))
    if lease is None or lease["generation"] != generation or lease["expires"] <= clock():
        raise Conflict(f"Lease generation {generation} is not current.",
                       holder=lease["holder"] if lease else None,
                       generation=lease["generation"] if lease else None)


def lease_log(tx: Tx, group: str) -> list[dict[str, Any]]:
    return [dict(r) for r in tx.all("SELECT * FROM lease_log WHERE group_key = ? ORDER BY id", (group,))]
