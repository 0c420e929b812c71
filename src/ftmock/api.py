"""The REST API: routing, authentication, authorisation and the Candlepin-compatible resources.

Each request runs in one database transaction, from authentication to the answer, so a request
either happens entirely or leaves nothing behind.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import (
    __version__,
    consumers,
    contentaccess,
    dto,
    dtoschema,
    environments,
    events,
    failover,
    fleet,
    hypervisors,
    inactive,
    leases,
    lifecycle,
    metrics,
    overrides,
    owners,
    profiles,
    protection,
    purpose,
    releases,
    shares,
    subscriptions,
    takeover,
)
from .auth import ANONYMOUS, Principal, authenticate_basic
from .ca import IDENTITY_RENEW_DAYS, CertificateAuthority
from .errors import BadRequest, Forbidden, NotFound, Unauthorized
from .store import Database, Tx, now_iso
from .validate import int_text, parse_json, req_dict

__all__ = ["PREFIX", "Api", "Request", "Response"]

log = logging.getLogger(__name__)

PREFIX = "/candlepin"
CAPABILITIES = [
    "hypervisors_async", "hypervisors_heartbeat", "cert_v3", "guest_limit", "derived_product",
    "vcpu", "instance_multiplier", "remove_by_pool_id", "batch_bind", "ft_failover", "ft_lease",
]
# Advertised only when the server issues identity certificates for the key of a `csr` sent with a
# registration or regeneration; stock Candlepin ignores the field and generates the key itself.
CSR_CAPABILITY = "ft_csr"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    peer: dict[str, Any] | None = None

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lname), None)

    def json(self) -> Any:
        return parse_json(self.body)


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    after_commit: Callable[[], None] | None = None


@dataclass
class Ctx:
    """What a handler gets: the request, the caller, the transaction and the CA."""

    req: Request
    who: Principal
    tx: Tx
    ca: CertificateAuthority
    consumer: sqlite3.Row | None = None  # the consumer the caller authenticated as


Handler = Callable[..., Response]

#: What a user with role "reporter" may call: report hypervisors and follow the resulting jobs.
REPORTER_HANDLERS = frozenset({"root", "status", "owner", "user_owners", "hypervisor_checkin",
                               "hypervisor_heartbeat", "job"})
#: What a user with role "user" may not call: the org's settings (products, pools, activation keys,
#: shares), its audit events and the fleet view. The takeovers it may not do either (forcing a
#: registration, regenerating an identity, releasing a lease) are checked where they happen.
ADMIN_HANDLERS = frozenset({"update_owner", "create_product", "create_pool", "create_activation_key", "create_share",
                            "delete_share", "owner_events", "fleet_orgs", "fleet_consumers", "fleet_ftgroups",
                            "fleet_leases"})


def _peer_subject(peer: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            out[key] = value
    return out


class Api:
    def __init__(self, db: Database, ca: CertificateAuthority,
                 enqueue_job: Callable[[str, list[hypervisors.HypervisorEntry]], None] | None = None,
                 honour_csr: bool = True, identity_renew_days: float = IDENTITY_RENEW_DAYS,
                 content_dir: Path | None = None,
                 identity_window: float = takeover.DEFAULT_IDENTITY_WINDOW) -> None:
        self.db = db
        self.ca = ca
        self.honour_csr = honour_csr
        self.identity_window = identity_window
        self.identity_renew_days = identity_renew_days
        self.content_dir = content_dir
        self.enqueue_job = enqueue_job or (lambda _job, _entries: None)
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.route_table: list[tuple[str, str, bool]] = []  # (method, pattern, is an FT addition)
        #: The routes that are Satellite's (Katello's) calls, not in Candlepin's API description.
        self.satellite_routes: set[tuple[str, str]] = set()
        #: The Candlepin DTO each route answers with (None: no body, or not a DTO).
        self.route_dtos: dict[tuple[str, str], str | None] = {}
        self._register_routes()

    # -- plumbing ---------------------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler, ft: bool = False, dto: str | None = None,
              satellite: bool = False) -> None:
        """Serve `method pattern`; `ft` marks the FT, lease and share additions (not Candlepin's),
        `satellite` the calls Satellite serves and Candlepin 5 does not; `dto` names the Candlepin DTO
        the answer is (or lists), whose every field it then carries (see ftmock.dtoschema)."""
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "/?$")
        self.routes.append((method, regex, handler if ft else _as_candlepin(handler, dto)))
        self.route_table.append((method, pattern, ft))
        self.route_dtos[(method, pattern)] = dto
        if satellite:
            self.satellite_routes.add((method, pattern))

    def handle(self, req: Request) -> Response:
        if not req.path.startswith(PREFIX):
            raise NotFound(f"No resource at {req.path}; the API lives under {PREFIX}")
        path = req.path[len(PREFIX):] or "/"
        method = "GET" if req.method == "HEAD" else req.method
        matched_path = False
        for m, regex, handler in self.routes:
            match = regex.match(path)
            if not match:
                continue
            matched_path = True
            if m != method:
                continue
            with self.db.transaction() as tx:
                ctx = self._context(tx, req)
                if ctx.who.is_user and ctx.who.role == "reporter" \
                        and getattr(handler, "__name__", "") not in REPORTER_HANDLERS:
                    raise Forbidden(f"User {ctx.who.name} is a reporter: it may check in hypervisors "
                                    "and nothing else")
                if ctx.who.is_user and ctx.who.role == "user" and getattr(handler, "__name__", "") in ADMIN_HANDLERS:
                    raise Forbidden(f"User {ctx.who.name} is not an administrator of its organization")
                if ctx.consumer is not None and ctx.consumer["failed_over_to"]:
                    response = self._failover_response(ctx)
                else:
                    response = handler(ctx, **match.groupdict())
            if response.after_commit is not None:
                response.after_commit()
            return response
        if matched_path:
            return Response(405, {"displayMessage": f"Method {req.method} not allowed on {req.path}"})
        raise NotFound(f"No resource at {req.path}")

    def _context(self, tx: Tx, req: Request) -> Ctx:
        auth = req.header("Authorization")
        if auth and auth.lower().startswith("basic "):
            return Ctx(req, authenticate_basic(tx, auth), tx, self.ca)
        if req.peer:
            subject = _peer_subject(req.peer)
            uuid = subject.get("commonName", "")
            try:
                row = consumers.get_row(tx, uuid) if uuid else None
            except NotFound:
                row = None
            if row is None:
                raise Unauthorized("Client certificate names no consumer")
            serial = int(req.peer.get("serialNumber", "0"), 16)
            if row["cert_serial"] != serial and row["renewed_from_serial"] != serial:
                raise Unauthorized(f"The identity certificate of {uuid} has been replaced; "
                                   "use the current one")
            if row["renewed_from_serial"] is not None and row["cert_serial"] == serial:
                # The renewed certificate is in use: the one it replaced opens nothing any more.
                tx.execute("UPDATE consumers SET renewed_from_serial = NULL WHERE uuid = ?", (uuid,))
                row = consumers.get_row(tx, uuid)
            return Ctx(req, Principal("consumer", uuid, owner=row["owner"]), tx, self.ca, row)
        return Ctx(req, ANONYMOUS, tx, self.ca)

    def _failover_response(self, ctx: Ctx) -> Response:
        assert ctx.consumer is not None
        body = failover.failover_answer(ctx.tx, ctx.ca, ctx.consumer)
        to = body["failover"]["to"]
        log.info("308 for failed-over consumer %s -> %s on %s %s", ctx.consumer["uuid"], to,
                 ctx.req.method, ctx.req.path)
        return Response(308, body, {"Location": f"{PREFIX}/consumers/{to}"})

    # -- authorisation helpers --------------------------------------------------------------------

    @staticmethod
    def _require_user(ctx: Ctx) -> Principal:
        if ctx.who.is_user:
            return ctx.who
        if ctx.who.is_consumer:
            raise Forbidden("This resource is not available to consumers")
        raise Unauthorized("Authentication required")

    def _require_owner_access(self, ctx: Ctx, owner: str) -> None:
        who = self._require_user(ctx)
        if not who.owns(owner):
            raise Forbidden(f"User {who.name} has no access to organization {owner}")
        consumers.require_owner(ctx.tx, owner)

    def _require_hypervisor_access(self, ctx: Ctx, owner: str) -> None:
        """A user of the org, or a consumer of it: as Candlepin's ConsumerOrgHypervisorPermission, a
        consumer may check in hypervisors for its own org (virt-who on a registered host
        authenticates with the host's consumer certificate) and nothing else of the org."""
        if not ctx.who.is_consumer:
            self._require_owner_access(ctx, owner)
            return
        if not ctx.who.owns(owner):
            raise Forbidden(f"Consumer {ctx.who.name} cannot check in hypervisors for organization {owner}")
        consumers.require_owner(ctx.tx, owner)

    def _consumer(self, ctx: Ctx, uuid: str) -> sqlite3.Row:
        """The consumer a path names, if the caller may see it: itself, or a user of its org."""
        if ctx.who.is_consumer:
            if ctx.who.name != uuid:
                raise Forbidden(f"Consumer {ctx.who.name} cannot access consumer {uuid}")
            assert ctx.consumer is not None
            return ctx.consumer
        who = self._require_user(ctx)
        row = consumers.get_row(ctx.tx, uuid)
        if not who.owns(row["owner"]):
            raise Forbidden(f"User {who.name} cannot access consumer {uuid}")
        return row

    # -- routes -----------------------------------------------------------------------------------

    def _register_routes(self) -> None:
        r = self.route
        r("GET", "/", self.root, dto="Link")
        r("GET", "/status", self.status, dto="StatusDTO")
        r("POST", "/consumers", self.register, dto="ConsumerDTO")
        r("GET", "/consumers/{uuid}", self.get_consumer, dto="ConsumerDTO")
        r("PUT", "/consumers/{uuid}", self.put_consumer)
        r("DELETE", "/consumers/{uuid}", self.delete_consumer)
        r("POST", "/consumers/{uuid}", self.regenerate, dto="ConsumerDTO")
        r("PUT", "/consumers/{uuid}/checkin", self.checkin, dto="ConsumerDTO", satellite=True)
        r("GET", "/consumers/{uuid}/certificates", self.certificates, dto="CertificateDTO")
        r("GET", "/consumers/{uuid}/certificates/serials", self.serials, dto="CertificateSerialDTO")
        r("GET", "/consumers/{uuid}/entitlements", self.entitlements, dto="EntitlementDTO")
        r("POST", "/consumers/{uuid}/entitlements", self.attach, dto="EntitlementDTO")
        r("DELETE", "/consumers/{uuid}/entitlements", self.unattach_all, dto="DeleteResult")
        r("DELETE", "/consumers/{uuid}/entitlements/{ent}", self.unattach)
        r("GET", "/consumers/{uuid}/compliance", self.compliance, dto="ComplianceStatusDTO")
        r("GET", "/consumers/{uuid}/host", self.host, dto="ConsumerDTO")
        r("GET", "/consumers/{uuid}/guests", self.guests, dto="ConsumerDTO")
        r("GET", "/consumers/{uuid}/guestids", self.guest_ids, dto="GuestIdDTOArrayElement")
        r("PUT", "/consumers/{uuid}/guestids", self.put_guest_ids)
        r("GET", "/consumers/{uuid}/guestids/{guest_id}", self.guest_id, dto="GuestIdDTO")
        r("PUT", "/consumers/{uuid}/guestids/{guest_id}", self.put_guest_id)
        r("DELETE", "/consumers/{uuid}/guestids/{guest_id}", self.delete_guest_id)
        r("GET", "/consumers/{uuid}/release", self.release, dto="ReleaseVerDTO")
        r("GET", "/consumers/{uuid}/available_releases", self.available_releases, satellite=True)
        r("GET", "/consumers/{uuid}/packages", self.packages, satellite=True)
        r("PUT", "/consumers/{uuid}/packages", self.put_packages, satellite=True)
        r("GET", "/consumers/{uuid}/profiles", self.profiles, satellite=True)
        r("PUT", "/consumers/{uuid}/profiles", self.put_profiles, satellite=True)
        r("PUT", "/consumers/{uuid}/certificates", self.regenerate_certificates)
        r("DELETE", "/consumers/{uuid}/certificates/{serial}", self.unattach_by_serial)
        r("DELETE", "/consumers/{uuid}/entitlements/pool/{pool}", self.unattach_by_pool)
        r("GET", "/consumers/{uuid}/entitlements/dry-run", self.dry_run, dto="PoolQuantityDTO")
        r("GET", "/consumers/{uuid}/owner", self.consumer_owner, dto="OwnerDTO")
        r("GET", "/consumers/{uuid}/content_access", self.consumer_content_access, dto="ContentAccessDTO")
        r("GET", "/consumers/{uuid}/accessible_content", self.accessible_content)
        r("GET", "/consumers/{uuid}/content_overrides", self.content_overrides, dto="ContentOverrideDTO")
        r("PUT", "/consumers/{uuid}/content_overrides", self.put_content_overrides, dto="ContentOverrideDTO")
        r("DELETE", "/consumers/{uuid}/content_overrides", self.delete_content_overrides, dto="ContentOverrideDTO")
        r("GET", "/consumers", self.search_consumers, dto="ConsumerDTO")
        r("GET", "/consumers/{uuid}/lease", self.get_lease, ft=True)
        r("POST", "/consumers/{uuid}/lease", self.claim_lease, ft=True)
        r("DELETE", "/consumers/{uuid}/lease", self.release_lease, ft=True)
        r("GET", "/consumers/{uuid}/lease/log", self.lease_log, ft=True)
        r("GET", "/entitlements/{ent}", self.entitlement, dto="EntitlementDTO")
        r("GET", "/products/{product}", self.product, dto="ProductDTO")
        r("GET", "/pools", self.pools, dto="PoolDTO")
        r("GET", "/pools/{pool}", self.pool, dto="PoolDTO")
        r("GET", "/owners", self.owners, dto="OwnerDTO")
        r("POST", "/owners", self.create_owner, dto="OwnerDTO")
        r("GET", "/owners/{owner}", self.owner, dto="OwnerDTO")
        r("PUT", "/owners/{owner}", self.update_owner, dto="OwnerDTO")
        r("GET", "/owners/{owner}/info", self.owner_info, dto="OwnerInfo")
        r("GET", "/owners/{owner}/hypervisors", self.owner_hypervisors, dto="ConsumerDTOArrayElement")
        r("GET", "/owners/{owner}/servicelevels", self.service_levels)
        r("GET", "/owners/{owner}/system_purpose", self.system_purpose, dto="SystemPurposeAttributesDTO")
        r("GET", "/owners/{owner}/environments", self.owner_environments, dto="EnvironmentDTO")
        r("POST", "/owners/{owner}/environments", self.create_environment, dto="EnvironmentDTO")
        r("GET", "/owners/{owner}/content_access", self.owner_content_access, dto="ContentAccessDTO")
        r("GET", "/owners/{owner}/consumers", self.owner_consumers, dto="ConsumerDTOArrayElement")
        r("GET", "/owners/{owner}/products", self.owner_products, dto="ProductDTO")
        r("POST", "/owners/{owner}/products", self.create_product, dto="ProductDTO")
        r("GET", "/owners/{owner}/pools", self.owner_pools, dto="PoolDTO")
        r("POST", "/owners/{owner}/pools", self.create_pool, dto="PoolDTO")
        r("GET", "/owners/{owner}/activation_keys", self.activation_keys, dto="ActivationKeyDTO")
        r("POST", "/owners/{owner}/activation_keys", self.create_activation_key, dto="ActivationKeyDTO")
        r("GET", "/owners/{owner}/shares", self.owner_shares, ft=True)
        r("POST", "/owners/{owner}/shares", self.create_share, ft=True)
        r("DELETE", "/owners/{owner}/shares/{recipient}", self.delete_share, ft=True)
        r("GET", "/owners/{owner}/events", self.owner_events, ft=True)
        r("GET", "/environments/{env}", self.environment, dto="EnvironmentDTO")
        r("DELETE", "/environments/{env}", self.delete_environment)
        r("POST", "/environments/{env}/consumers", self.register_in_environment, dto="ConsumerDTO")
        r("POST", "/hypervisors/{owner}", self.hypervisor_checkin, dto="AsyncJobStatusDTO")
        r("PUT", "/hypervisors/{owner}/heartbeat", self.hypervisor_heartbeat, dto="AsyncJobStatusDTO")
        r("GET", "/jobs/{job}", self.job, dto="AsyncJobStatusDTO")
        r("GET", "/users/{user}/owners", self.user_owners, dto="OwnerDTO")
        r("GET", "/fleet/orgs", self.fleet_orgs, ft=True)
        r("GET", "/fleet/orgs/{owner}/consumers", self.fleet_consumers, ft=True)
        r("GET", "/fleet/orgs/{owner}/ftgroups", self.fleet_ftgroups, ft=True)
        r("GET", "/fleet/orgs/{owner}/leases", self.fleet_leases, ft=True)
        r("GET", "/fleet/orgs/{owner}/protection", self.fleet_protection, ft=True)
        r("GET", "/fleet/metrics", self.fleet_metrics, ft=True)
        r("GET", "/fleet/jobs", self.fleet_jobs, ft=True)
        r("GET", "/consumers/{uuid}/protection", self.consumer_protection, ft=True)

    def root(self, ctx: Ctx) -> Response:
        names = ["consumers", "owners", "pools", "products", "entitlements", "environments", "guestids",
                 "hypervisors", "jobs", "status", "users"]
        return Response(200, [{"rel": n, "href": f"/{n}"} for n in names])

    def status(self, ctx: Ctx) -> Response:
        return Response(200, {
            "result": True, "version": __version__, "release": "1", "standalone": True,
            "mode": "NORMAL", "rulesSource": "DEFAULT", "rulesVersion": "5.44",
            "managerCapabilities": CAPABILITIES + ([CSR_CAPABILITY] if self.honour_csr else []),
            "timeUTC": now_iso(),
        })

    def register(self, ctx: Ctx) -> Response:
        keys = [k for k in ctx.req.query.get("activation_keys", "").split(",") if k.strip()]
        body = ctx.req.json()
        # A registration of an unregistered FT group's VM rebuilds the group first, so that it is
        # merged into the group's primary as any first registration is (undone if it fails).
        lifecycle.registering(ctx.tx, ctx.ca, ctx.req.query.get("owner"), body)
        force = _flag(ctx.req.query.get("force"), "force")
        dto = consumers.register(ctx.tx, ctx.ca, ctx.who, ctx.req.query.get("owner"), keys, body,
                                 honour_csr=self.honour_csr, force=force, identity_window=self.identity_window)
        log.info("registered consumer %s (%s) in %s", dto["uuid"], dto["name"], dto["owner"]["key"])
        return Response(200, dto)

    def _consumer_answer(self, ctx: Ctx, row: sqlite3.Row) -> Response:
        """The consumer, its identity certificate renewed first when due (Candlepin does it on this GET).

        A renewal for a new server key (stock Candlepin's way) hands the key to the consumer itself until
        it first uses the new certificate; otherwise a private key is never sent twice."""
        row = consumers.renew_if_due(ctx.tx, ctx.ca, row, self.identity_renew_days, self.honour_csr)
        key = row["key_pem"] if ctx.who.is_consumer and row["renewed_from_serial"] is not None else None
        return Response(200, consumers.consumer_dto(ctx.tx, row, key))

    def get_consumer(self, ctx: Ctx, uuid: str) -> Response:
        return self._consumer_answer(ctx, self._consumer(ctx, uuid))

    def checkin(self, ctx: Ctx, uuid: str) -> Response:
        """PUT /consumers/{uuid}/checkin (Satellite's): records the check-in; answers the consumer."""
        row = self._consumer(ctx, uuid)
        _checked_in(ctx, row)
        return self._consumer_answer(ctx, consumers.get_row(ctx.tx, row["uuid"]))

    def put_consumer(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        leases.check_generation(ctx.tx, row, ctx.req.header("X-Lease-Generation"))
        if consumers.update(ctx.tx, row, ctx.req.json(), checkin=ctx.who.is_consumer):
            # Other environments grant other content: the entitlement certificates say so at once
            # (the content access certificate follows when next listed).
            subscriptions.regenerate_certificates(ctx.tx, ctx.ca, consumers.get_row(ctx.tx, row["uuid"]))
        return Response(204)

    def guest_ids(self, ctx: Ctx, uuid: str) -> Response:
        return Response(200, consumers.guest_id_dtos(ctx.tx, self._consumer(ctx, uuid)["uuid"]))

    def put_guest_ids(self, ctx: Ctx, uuid: str) -> Response:
        consumers.set_guest_ids(ctx.tx, self._consumer(ctx, uuid), ctx.req.json())
        return Response(204)

    def guest_id(self, ctx: Ctx, uuid: str, guest_id: str) -> Response:
        return Response(200, consumers.guest_id(ctx.tx, self._consumer(ctx, uuid), guest_id))

    def put_guest_id(self, ctx: Ctx, uuid: str, guest_id: str) -> Response:
        body = ctx.req.json() if ctx.req.body.strip() else None
        consumers.put_guest_id(ctx.tx, self._consumer(ctx, uuid), guest_id, body)
        return Response(204)

    def delete_guest_id(self, ctx: Ctx, uuid: str, guest_id: str) -> Response:
        consumers.delete_guest_id(ctx.tx, self._consumer(ctx, uuid), guest_id)
        return Response(204)

    def release(self, ctx: Ctx, uuid: str) -> Response:
        return Response(200, releases.release_dto(self._consumer(ctx, uuid)))

    def available_releases(self, ctx: Ctx, uuid: str) -> Response:
        """The releases the CDN lists for the consumer's content (Satellite's call; [] without --content-dir)."""
        return Response(200, releases.available(ctx.tx, ctx.ca, self._consumer(ctx, uuid), self.content_dir))

    def packages(self, ctx: Ctx, uuid: str) -> Response:
        return Response(200, profiles.get(ctx.tx, self._consumer(ctx, uuid)["uuid"]))

    def put_packages(self, ctx: Ctx, uuid: str) -> Response:
        profiles.put(ctx.tx, self._consumer(ctx, uuid)["uuid"], ctx.req.json())
        return Response(204)

    def profiles(self, ctx: Ctx, uuid: str) -> Response:
        return Response(200, profiles.get_all(ctx.tx, self._consumer(ctx, uuid)["uuid"]))

    def put_profiles(self, ctx: Ctx, uuid: str) -> Response:
        profiles.put_combined(ctx.tx, self._consumer(ctx, uuid)["uuid"], ctx.req.json())
        return Response(204)

    def delete_consumer(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        takeover.check_deletion(ctx.tx, row, ctx.who, self.identity_window)
        lifecycle.delete_consumer(ctx.tx, row)
        log.info("deleted consumer %s", uuid)
        return Response(204)

    def regenerate(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        takeover.check_regeneration(ctx.tx, row, ctx.who)
        return Response(200, consumers.regenerate(ctx.tx, ctx.ca, row, ctx.req.json(), honour_csr=self.honour_csr))

    def certificates(self, ctx: Ctx, uuid: str) -> Response:
        """Entitlement certificates, and in an SCA org the content access certificate."""
        row = self._consumer(ctx, uuid)
        _checked_in(ctx, row)
        serials = subscriptions.parse_serials(ctx.req.query.get("serials"))
        return Response(200, subscriptions.certificate_dtos(ctx.tx, row["uuid"], serials)
                        + contentaccess.certificate_dtos(ctx.tx, ctx.ca, row, serials))

    def serials(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        _checked_in(ctx, row)
        return Response(200, subscriptions.certificate_dtos(ctx.tx, row["uuid"], with_body=False)
                        + contentaccess.certificate_dtos(ctx.tx, ctx.ca, row, with_body=False))

    def entitlements(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        return Response(200, subscriptions.entitlement_dtos(ctx.tx, row["uuid"]))

    def attach(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        leases.check_generation(ctx.tx, row, ctx.req.header("X-Lease-Generation"))
        pool = ctx.req.query.get("pool")
        if pool:
            quantity = int_text(ctx.req.query.get("quantity", "1"), "quantity", 1, 1_000_000)
            result = [subscriptions.attach(ctx.tx, ctx.ca, row, pool, quantity)]
        else:
            result = subscriptions.auto_attach(ctx.tx, ctx.ca, row)
        if row["instance_uuid"] and row["guest_key"] and row["reported_owner"]:
            failover.sync_group_entitlements(ctx.tx, ctx.ca, row["reported_owner"], row["guest_key"])
        return Response(200, result)

    def unattach_all(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        leases.check_generation(ctx.tx, row, ctx.req.header("X-Lease-Generation"))
        ents = ctx.tx.all("SELECT id FROM entitlements WHERE consumer = ?", (row["uuid"],))
        for ent in ents:
            subscriptions.remove_entitlement(ctx.tx, ent["id"])
        return Response(200, {"deletedRecords": len(ents)})

    def unattach(self, ctx: Ctx, uuid: str, ent: str) -> Response:
        row = self._consumer(ctx, uuid)
        leases.check_generation(ctx.tx, row, ctx.req.header("X-Lease-Generation"))
        if not ctx.tx.one("SELECT 1 FROM entitlements WHERE id = ? AND consumer = ?", (ent, row["uuid"])):
            raise NotFound(f"Entitlement with ID '{ent}' could not be found.")
        subscriptions.remove_entitlement(ctx.tx, ent)
        return Response(204)

    def regenerate_certificates(self, ctx: Ctx, uuid: str) -> Response:
        """PUT /consumers/{uuid}/certificates[?entitlement=ID]: new entitlement certificates (a check-in)."""
        row = self._consumer(ctx, uuid)
        _checked_in(ctx, row)
        entitlement = ctx.req.query.get("entitlement")
        subscriptions.regenerate_certificates(ctx.tx, ctx.ca, row, entitlement)
        if not entitlement:
            contentaccess.revoke(ctx.tx, row["uuid"])  # reissued, with a new serial, when next listed
        return Response(204)

    def unattach_by_serial(self, ctx: Ctx, uuid: str, serial: str) -> Response:
        row = self._consumer(ctx, uuid)
        leases.check_generation(ctx.tx, row, ctx.req.header("X-Lease-Generation"))
        subscriptions.remove_by_serial(ctx.tx, row, int_text(serial, "serial", 0))
        return Response(204)

    def unattach_by_pool(self, ctx: Ctx, uuid: str, pool: str) -> Response:
        row = self._consumer(ctx, uuid)
        leases.check_generation(ctx.tx, row, ctx.req.header("X-Lease-Generation"))
        subscriptions.remove_by_pool(ctx.tx, row, pool)
        return Response(204)

    def dry_run(self, ctx: Ctx, uuid: str) -> Response:
        """What auto-attach would attach now (PoolQuantityDTOs); service levels are not modelled."""
        row = self._consumer(ctx, uuid)
        return Response(200, subscriptions.auto_attach(ctx.tx, ctx.ca, row, dry_run=True))

    def consumer_owner(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        if row["owner"] is None:
            raise NotFound(f"Consumer {uuid} belongs to no organization yet")
        return Response(200, dto.owner_dto(consumers.require_owner(ctx.tx, row["owner"])))

    def consumer_content_access(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        return Response(200, contentaccess.content_access_dto(ctx.tx, row["owner"]))

    def accessible_content(self, ctx: Ctx, uuid: str) -> Response:
        """The content access certificate's body, unless not modified since If-Modified-Since (304)."""
        row = self._consumer(ctx, uuid)
        status, body, headers = contentaccess.accessible_content(ctx.tx, ctx.ca, row,
                                                                 ctx.req.header("If-Modified-Since"))
        return Response(status, body, headers)

    def content_overrides(self, ctx: Ctx, uuid: str) -> Response:
        return Response(200, overrides.list_for(ctx.tx, self._consumer(ctx, uuid)["uuid"]))

    def put_content_overrides(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        return Response(200, overrides.put(ctx.tx, row["uuid"], ctx.req.json()))

    def delete_content_overrides(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        body = ctx.req.json() if ctx.req.body.strip() else None
        return Response(200, overrides.delete(ctx.tx, row["uuid"], body))

    def search_consumers(self, ctx: Ctx) -> Response:
        """GET /consumers?owner=O[&type=T]: users only; without owner, superadmins see every org."""
        who = self._require_user(ctx)
        owner = ctx.req.query.get("owner")
        if owner:
            self._require_owner_access(ctx, owner)
            return Response(200, consumers.list_for_owner(ctx.tx, owner, ctx.req.query.get("type")))
        if not who.superadmin:
            raise BadRequest("Give owner=KEY")
        out: list[Any] = []
        for org in ctx.tx.all("SELECT key FROM owners ORDER BY key"):
            out.extend(consumers.list_for_owner(ctx.tx, org["key"], ctx.req.query.get("type")))
        return Response(200, out)

    def compliance(self, ctx: Ctx, uuid: str) -> Response:
        return Response(200, subscriptions.compliance(ctx.tx, self._consumer(ctx, uuid)))

    def host(self, ctx: Ctx, uuid: str) -> Response:
        """The hypervisor that last reported this guest (matched case- and byte-order-insensitively)."""
        host = subscriptions.host_of(ctx.tx, self._consumer(ctx, uuid))
        if host is None:
            raise NotFound(f"No hypervisor reports consumer {uuid}")
        view = consumers.consumer_dto(ctx.tx, host)
        if ctx.who.is_consumer:
            # A guest may learn which host it is on, not read the host's facts or certificate: the
            # reduced view Candlepin's description calls ConsumerDTOArrayElement.
            for private in ("facts", "idCert"):
                view.pop(private, None)
        return Response(200, view)

    def guests(self, ctx: Ctx, uuid: str) -> Response:
        """Registered consumers among the guests this hypervisor reports."""
        self._require_user(ctx)
        row = self._consumer(ctx, uuid)
        rows = ctx.tx.all(
            "SELECT DISTINCT c.* FROM guests g JOIN consumers c ON c.guest_key = g.guest_key "
            "AND (c.instance_uuid IS NULL OR c.instance_uuid = g.instance_key) "
            "WHERE g.hypervisor = ? AND c.type = 'system' AND c.owner = ? ORDER BY c.created",
            (row["uuid"], row["owner"]))
        return Response(200, [consumers.consumer_dto(ctx.tx, r) for r in rows])

    def get_lease(self, ctx: Ctx, uuid: str) -> Response:
        lease = leases.current(ctx.tx, self._consumer(ctx, uuid))
        if lease is None:
            raise NotFound("This group has no lease")
        return Response(200, lease)

    def claim_lease(self, ctx: Ctx, uuid: str) -> Response:
        """Grant, renew or hand over: only a consumer, for itself (see ftmock.leases)."""
        row = self._consumer(ctx, uuid)
        if not ctx.who.is_consumer:
            raise Forbidden("A lease is claimed by the consumer itself, with its identity certificate")
        return Response(200, leases.claim(ctx.tx, row, ctx.req.json()))

    def release_lease(self, ctx: Ctx, uuid: str) -> Response:
        row = self._consumer(ctx, uuid)
        if ctx.who.is_user and not ctx.who.administers(row["owner"]):
            raise Forbidden(f"User {ctx.who.name} cannot release leases in {row['owner']}: only an administrator "
                            "of the organization can")
        leases.release(ctx.tx, row, ctx.req.query.get("holder"), ctx.req.query.get("generation"),
                       by_consumer=ctx.who.is_consumer)
        return Response(204)

    def lease_log(self, ctx: Ctx, uuid: str) -> Response:
        self._require_user(ctx)
        row = self._consumer(ctx, uuid)
        return Response(200, leases.lease_log(ctx.tx, leases.group_key_of(row)))

    def pools(self, ctx: Ctx) -> Response:
        """GET /pools?consumer=UUID or ?owner=KEY; without either, every pool, for an administrator."""
        uuid = ctx.req.query.get("consumer")
        if uuid:
            return Response(200, subscriptions.attachable_pools(ctx.tx, self._consumer(ctx, uuid)))
        owner = ctx.req.query.get("owner")
        if not owner:
            who = self._require_user(ctx)
            if not who.superadmin:
                raise Forbidden("Only administrators list the pools of every organization; give consumer=UUID "
                                "or owner=KEY")
            return Response(200, [p for org in ctx.tx.all("SELECT key FROM owners ORDER BY key")
                                  for p in subscriptions.pools_for_owner(ctx.tx, org["key"])])
        self._require_owner_access(ctx, owner)
        return Response(200, subscriptions.pools_for_owner(ctx.tx, owner))

    def entitlement(self, ctx: Ctx, ent: str) -> Response:
        """GET /entitlements/{id}: one entitlement, to its consumer or a user of its org."""
        row = ctx.tx.one("SELECT consumer FROM entitlements WHERE id = ?", (ent,))
        if row is None:
            raise NotFound(f"Entitlement with ID '{ent}' could not be found.")
        self._consumer(ctx, row["consumer"])
        return Response(200, subscriptions.entitlement_dto(ctx.tx, ent))

    def product(self, ctx: Ctx, product: str) -> Response:
        """GET /products/{uuid}: a product by its uuid (or, for a consumer, by its id in the consumer's org)."""
        row = ctx.tx.one("SELECT * FROM products WHERE owner || '-' || id = ?", (product,))
        if row is None and ctx.who.is_consumer and ctx.who.owner:
            row = ctx.tx.one("SELECT * FROM products WHERE owner = ? AND id = ?", (ctx.who.owner, product))
        if row is None:
            raise NotFound(f"Product with UUID '{product}' could not be found.")
        self._require_org_member(ctx, row["owner"])
        return Response(200, subscriptions.product_dto(ctx.tx, row))

    def _require_org_member(self, ctx: Ctx, owner: str) -> None:
        """A consumer of ``owner``, or a user who may act on it (what an org's own systems may read)."""
        if ctx.who.is_consumer:
            if ctx.who.owner != owner:
                raise Forbidden(f"Consumer {ctx.who.name} does not belong to organization {owner}")
            return
        self._require_owner_access(ctx, owner)

    def pool(self, ctx: Ctx, pool: str) -> Response:
        row = ctx.tx.one("SELECT * FROM pools WHERE id = ?", (pool,))
        if row is None:
            raise NotFound(f"Subscription pool with ID '{pool}' could not be found.")
        if ctx.who.is_consumer:
            assert ctx.consumer is not None
            if not subscriptions.visible_to_consumer(ctx.tx, ctx.consumer, row):
                raise Forbidden("This pool belongs to another organization")
        else:
            self._require_owner_access(ctx, row["owner"])
        return Response(200, subscriptions.pool_dto(ctx.tx, row))

    def owners(self, ctx: Ctx) -> Response:
        return Response(200, [dto.owner_dto(r) for r in self._visible_owners(ctx)])

    def _visible_owners(self, ctx: Ctx) -> list[sqlite3.Row]:
        who = self._require_user(ctx)
        if who.superadmin:
            return ctx.tx.all("SELECT * FROM owners ORDER BY key")
        return ctx.tx.all("SELECT * FROM owners WHERE key = ?", (who.owner,))

    # -- the operator's fleet view (see ftmock.fleet) ---------------------------------------------

    def fleet_orgs(self, ctx: Ctx) -> Response:
        keys = {r["key"] for r in self._visible_owners(ctx)}
        return Response(200, [o for o in fleet.org_list(ctx.tx) if o["key"] in keys])

    def fleet_consumers(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, fleet.consumer_list(ctx.tx, owner))

    def fleet_ftgroups(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, fleet.ft_groups(ctx.tx, owner))

    def fleet_leases(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, fleet.lease_list(ctx.tx, owner))

    def fleet_protection(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, fleet.protection_report(ctx.tx, owner))

    def fleet_metrics(self, ctx: Ctx) -> Response:
        """Prometheus' text format: the protection of the FT groups of the orgs the user may see."""
        orgs = [r["key"] for r in self._visible_owners(ctx)]
        return Response(200, metrics.render(ctx.tx, orgs), content_type=metrics.CONTENT_TYPE)

    def fleet_jobs(self, ctx: Ctx) -> Response:
        who = self._require_user(ctx)
        if not who.superadmin:
            raise Forbidden("Only administrators see the server's jobs")
        return Response(200, inactive.job_list(ctx.tx))

    def consumer_protection(self, ctx: Ctx, uuid: str) -> Response:
        """The protection of the consumer's own FT group (a consumer sees no other group)."""
        row = self._consumer(ctx, uuid)
        org = row["reported_owner"]
        if not row["instance_uuid"] or not org:
            raise NotFound(f"Consumer {uuid} is not an instance of a fault-tolerant group")
        group = ctx.tx.all("SELECT * FROM consumers WHERE reported_owner = ? AND guest_key = ? "
                           "AND instance_uuid IS NOT NULL ORDER BY created, rowid", (org, row["guest_key"]))
        found = protection.for_groups(ctx.tx, org, {row["guest_key"]: group},
                                      lifecycle.load_settings(ctx.tx).guest_silent_after)[row["guest_key"]]
        return Response(200, {"consumer": row["uuid"], "role": row["ft_role"],
                              "primary": found.primary, **found.to_json()})

    def create_owner(self, ctx: Ctx) -> Response:
        who = self._require_user(ctx)
        if not who.superadmin:
            raise Forbidden("Only administrators create organizations")
        body = req_dict(ctx.req.json(), "owner")
        return Response(200, owners.create_owner(ctx.tx, body.get("key"), body.get("displayName"),
                                                 body.get("contentAccessMode"), body.get("contentAccessModeList")))

    def owner(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, dto.owner_dto(consumers.require_owner(ctx.tx, owner)))

    def update_owner(self, ctx: Ctx, owner: str) -> Response:
        """PUT /owners/{owner}: display name and content access mode (list); administrators only."""
        self._require_owner_access(ctx, owner)
        if not ctx.who.superadmin:
            raise Forbidden("Only administrators update organizations")
        return Response(200, owners.update_owner(ctx.tx, owner, ctx.req.json()))

    def owner_info(self, ctx: Ctx, owner: str) -> Response:
        """GET /owners/{owner}/info: the org's counts (users only, as in Candlepin)."""
        self._require_owner_access(ctx, owner)
        return Response(200, owners.owner_info(ctx.tx, owner))

    def owner_hypervisors(self, ctx: Ctx, owner: str) -> Response:
        """GET /owners/{owner}/hypervisors[?hypervisor_id=ID]: the org's hypervisor consumers (users only)."""
        self._require_owner_access(ctx, owner)
        wanted = ctx.req.query.get("hypervisor_id")
        rows = consumers.list_for_owner(ctx.tx, owner, "hypervisor")
        if wanted:
            rows = [c for c in rows if (c.get("hypervisorId") or {}).get("hypervisorId") == wanted.strip().lower()]
        return Response(200, rows)

    def service_levels(self, ctx: Ctx, owner: str) -> Response:
        """GET /owners/{owner}/servicelevels[?exempt=true]: from the support_level of its active pools."""
        self._require_org_member(ctx, owner)
        consumers.require_owner(ctx.tx, owner)
        exempt = ctx.req.query.get("exempt", "false").lower() == "true"
        return Response(200, purpose.service_levels(ctx.tx, owner, exempt))

    def system_purpose(self, ctx: Ctx, owner: str) -> Response:
        self._require_org_member(ctx, owner)
        consumers.require_owner(ctx.tx, owner)
        return Response(200, purpose.system_purpose_attributes(ctx.tx, owner))

    def owner_environments(self, ctx: Ctx, owner: str) -> Response:
        """GET /owners/{owner}/environments[?name=NAME]: to the org's users and its own consumers."""
        self._require_org_member(ctx, owner)
        consumers.require_owner(ctx.tx, owner)
        return Response(200, environments.list_for_owner(ctx.tx, owner, ctx.req.query.get("name")))

    def create_environment(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, environments.create(ctx.tx, owner, ctx.req.json()))

    def environment(self, ctx: Ctx, env: str) -> Response:
        row = environments.get_row(ctx.tx, env)
        self._require_org_member(ctx, row["owner"])
        return Response(200, environments.environment_dto(ctx.tx, row))

    def delete_environment(self, ctx: Ctx, env: str) -> Response:
        """DELETE /environments/{id}: its consumers leave it (and get the certificates that follow)."""
        self._require_owner_access(ctx, environments.get_row(ctx.tx, env)["owner"])
        for uuid in environments.delete(ctx.tx, env):
            subscriptions.regenerate_certificates(ctx.tx, ctx.ca, consumers.get_row(ctx.tx, uuid))
        return Response(204)

    def register_in_environment(self, ctx: Ctx, env: str) -> Response:
        """POST /environments/{id}/consumers: registration into an environment (python-rhsm's form)."""
        row = environments.get_row(ctx.tx, env)
        keys = [k for k in ctx.req.query.get("activation_keys", "").split(",") if k.strip()]
        dto = consumers.register(ctx.tx, ctx.ca, ctx.who, row["owner"], keys, ctx.req.json(),
                                 honour_csr=self.honour_csr, environment_ids=[env],
                                 force=_flag(ctx.req.query.get("force"), "force"), identity_window=self.identity_window)
        log.info("registered consumer %s (%s) in %s, environment %s", dto["uuid"], dto["name"], row["owner"], env)
        return Response(200, dto)

    def owner_content_access(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, contentaccess.content_access_dto(ctx.tx, owner))

    def owner_consumers(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, consumers.list_for_owner(ctx.tx, owner, ctx.req.query.get("type")))

    def owner_products(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        rows = ctx.tx.all("SELECT * FROM products WHERE owner = ? ORDER BY id", (owner,))
        return Response(200, [subscriptions.product_dto(ctx.tx, r) for r in rows])

    def create_product(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, subscriptions.create_product(ctx.tx, owner, ctx.req.json()))

    def owner_pools(self, ctx: Ctx, owner: str) -> Response:
        """An org's pools; with consumer=UUID (and that consumer's certificate) the ones it may attach."""
        uuid = ctx.req.query.get("consumer")
        if ctx.who.is_consumer:
            if not uuid:
                raise Forbidden("A consumer lists pools with consumer=its own UUID")
            row = self._consumer(ctx, uuid)
            if row["owner"] != owner:
                raise Forbidden(f"Consumer {uuid} does not belong to organization {owner}")
        else:
            self._require_owner_access(ctx, owner)
            row = self._consumer(ctx, uuid) if uuid else None  # type: ignore[assignment]
        if row is None or ctx.req.query.get("listall", "").lower() == "true":
            return Response(200, subscriptions.pools_for_owner(ctx.tx, owner))
        return Response(200, subscriptions.attachable_pools(ctx.tx, row))

    def create_pool(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, subscriptions.create_pool(ctx.tx, owner, ctx.req.json()))

    def activation_keys(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        rows = ctx.tx.all("SELECT * FROM activation_keys WHERE owner = ? ORDER BY name", (owner,))
        return Response(200, [subscriptions.activation_key_dto(ctx.tx, r) for r in rows])

    def create_activation_key(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, subscriptions.create_activation_key(ctx.tx, owner, ctx.req.json()))

    def owner_shares(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, shares.list_for_owner(ctx.tx, owner))

    def create_share(self, ctx: Ctx, owner: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, shares.create(ctx.tx, owner, ctx.req.json()))

    def delete_share(self, ctx: Ctx, owner: str, recipient: str) -> Response:
        self._require_owner_access(ctx, owner)
        return Response(200, subscriptions.revoke_share(ctx.tx, owner, recipient))

    def owner_events(self, ctx: Ctx, owner: str) -> Response:
        """The org's audit events (identity replacements): its administrators only."""
        self._require_owner_access(ctx, owner)
        if not ctx.who.administers(owner):
            raise Forbidden(f"User {ctx.who.name} is not an administrator of {owner}")
        return Response(200, events.list_for_owner(ctx.tx, owner))

    def hypervisor_checkin(self, ctx: Ctx, owner: str) -> Response:
        self._require_hypervisor_access(ctx, owner)
        job, entries = hypervisors.submit(ctx.tx, owner, ctx.req.query.get("reporter_id"), ctx.req.body)
        dto.record_principal(ctx.tx, job["id"], ctx.who.name)
        # The parsed report goes to the job runner with the job: it is not parsed a second time.
        return Response(200, dto.job(ctx.tx, job), after_commit=lambda: self.enqueue_job(job["id"], entries))

    def hypervisor_heartbeat(self, ctx: Ctx, owner: str) -> Response:
        self._require_hypervisor_access(ctx, owner)
        job = hypervisors.heartbeat(ctx.tx, owner, ctx.req.query.get("reporter_id"))
        dto.record_principal(ctx.tx, job["id"], ctx.who.name)
        return Response(200, dto.job(ctx.tx, job))

    def job(self, ctx: Ctx, job: str) -> Response:
        if ctx.who.is_consumer:
            # A consumer follows the jobs it started (its hypervisor check-ins), no other.
            started = ctx.tx.one("SELECT principal FROM job_principals WHERE job_id = ?", (job,))
            if started is None or started["principal"] != ctx.who.name:
                raise NotFound(f"Job with ID '{job}' could not be found.")
            return Response(200, dto.job(ctx.tx, hypervisors.get_job(ctx.tx, job)))
        who = self._require_user(ctx)
        row = ctx.tx.one("SELECT owner FROM jobs WHERE id = ?", (job,))
        if row is not None and not who.superadmin and row["owner"] != who.owner:
            raise NotFound(f"Job with ID '{job}' could not be found.")
        return Response(200, dto.job(ctx.tx, hypervisors.get_job(ctx.tx, job)))

    def user_owners(self, ctx: Ctx, user: str) -> Response:
        who = self._require_user(ctx)
        if who.name != user and not who.superadmin:
            raise Forbidden("Cannot list another user's organizations")
        return self.owners(ctx)


def _as_candlepin(handler: Handler, name: str | None) -> Handler:
    """A Candlepin route's handler: its answer carries every field of its DTO, null where it has no
    value, as Candlepin's does (errors are ExceptionMessages)."""
    def run(ctx: Ctx, **kw: str) -> Response:
        response = handler(ctx, **kw)
        if name is not None and response.status < 300 and isinstance(response.body, (dict, list)):
            response.body = dtoschema.complete(response.body, name)
        return response

    run.__name__ = getattr(handler, "__name__", "handler")
    return run


def _flag(value: str | None, name: str) -> bool:
    """A boolean query parameter: absent, ``true`` or ``false`` (any case)."""
    if value is None or value.lower() == "false":
        return False
    if value.lower() == "true":
        return True
    raise BadRequest(f"{name} must be true or false")


def _checked_in(ctx: Ctx, row: sqlite3.Row) -> None:
    """The consumer's own check-in calls (not a user's) update lastCheckin, as Candlepin's check-in filter does."""
    if ctx.who.is_consumer:
        ctx.tx.execute("UPDATE consumers SET last_checkin=? WHERE uuid=?", (now_iso(), row["uuid"]))
