"""The high-level agent: what the CLI does, usable as a library.

>>> from ftagent import Agent, load_config
>>> agent = Agent(load_config("/etc/ftagent/ftagent.conf"))
>>> agent.register("ACME", username="admin", password="...")      # doctest: +SKIP
>>> agent.checkin()                                                 # doctest: +SKIP

Every consumer-authenticated call goes through one :class:`~ftagent.connection.Connection` and
:meth:`Agent._consumer_call`, which follows a failover answer wherever it arrives (validate, claim
the successor's lease with ``lease_claim``, install: :mod:`ftagent.failover`) and then runs the call
once more as the successor.  A 410 (consumer deleted on the server) for our
consumer removes the local identity and entitlement certificates before the error is re-raised.

The connection stack and cryptography are imported where they are used, not at the top: commands
that never connect or make a key (``ftagent identity``, ``status``) would pay about 25 ms and 32 ms
more of a 70 ms start (``python -X importtime``, ``bench/ftagent_startup.py``).
"""

from __future__ import annotations

import datetime
import json
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ftagent.atomic import write_atomic
from ftagent.config import ROOT_VAR, Config, load_config
from ftagent.entitlements import EntitlementStore, RefreshResult, serial_of
from ftagent.errors import (
    FailoverError,
    FailoverRequired,
    FtagentError,
    Gone,
    IdentityError,
    InvalidUsage,
    NotFound,
    NotRegistered,
    PermissionDenied,
    RemoteError,
    ServerError,
)
from ftagent.facts import SystemPaths, collect_facts, facts_digest
from ftagent.identity import CERT_NAME, KEY_NAME, Identity, validate_pair
from ftagent.lock import FileLock
from ftagent.packages import rpm_profile
from ftagent.release import available_releases
from ftagent.repos import SCA_MODE, RepoManager
from ftagent.rhsmconf import read_rhsm_conf
from ftagent.rhsmidentity import identity_store
from ftagent.rhsmlock import RhsmLock, rhsm_lock
from ftagent.sysroot import system_root

if TYPE_CHECKING:
    from ftagent.connection import Connection
    from ftagent.failover import FollowedFailover, IdentitySwapper, LeaseClaim

__all__ = ["CSR_CAPABILITY", "Agent", "CheckinResult"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def server_connection(config: Config, **kwargs: Any) -> Connection:
    """:func:`ftagent.connection.server_connection`, imported on first use (see the module's docstring)."""
    from ftagent.connection import server_connection as connect

    return connect(config, **kwargs)

# The /status capability of a server that signs the client's CSR (ftmock; not stock Candlepin).
CSR_CAPABILITY = "ft_csr"
#: A check-in asks for the consumer (where Candlepin renews an identity certificate close to its
#: expiry) when the local certificate expires within this: Candlepin's threshold, 90 days.
IDENTITY_RENEW_WINDOW = datetime.timedelta(days=90)
#: The system purpose a consumer sets on itself: the command's name -> the ConsumerDTO field.
PURPOSE_FIELDS = {"role": "role", "usage": "usage", "addons": "addOns", "service-type": "serviceType",
                  "service-level": "serviceLevel"}


@dataclass
class CheckinResult:
    """What a check-in did."""

    uuid: str
    facts_sent: bool
    refresh: RefreshResult
    failed_over_from: str | None = None
    requests: int = 0
    connections: int = 0
    #: Whether the package profile was sent (None: there is none, without the rpm bindings).
    profile_sent: bool | None = False
    #: The serial of the identity certificate a renewal installed, if one did.
    identity_renewed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "uuid": self.uuid,
            "facts_sent": self.facts_sent,
            "entitlements": self.refresh.as_dict(),
            "failed_over_from": self.failed_over_from,
            "requests": self.requests,
            "connections": self.connections,
            "profile_sent": self.profile_sent,
            "identity_renewed": self.identity_renewed,
        }


class Agent:
    """One guest's agent state (configuration, identity, entitlements) and its server calls."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        system_paths: SystemPaths | None = None,
        lease_claim: LeaseClaim | None = None,
        package_profile: Callable[[], list[dict[str, Any]] | None] | None = None,
    ) -> None:
        self.config = config if config is not None else load_config()
        self.system_paths = system_paths
        self.lease_claim = lease_claim
        #: Reads the package profile (the RPM database, :func:`ftagent.packages.rpm_profile`).
        self.package_profile = package_profile if package_profile is not None else rpm_profile
        self.identity = identity_store(self.config)
        self.repos = RepoManager(self.config)
        # The repository file follows the certificates: written after new ones, before old ones go.
        self.entitlements = EntitlementStore(self.config.agent.entitlement_dir, listener=self.repos,
                                             lock=self.repos.lock)
        #: The content access mode of the org the last registration went to (None before one).
        self.registered_mode: str | None = None
        self._connection: Connection | None = None
        #: The last failover this agent followed (``None`` before any).
        self.followed: FollowedFailover | None = None

    # -- resources --------------------------------------------------------------------------

    def lock(self, timeout: float | None = None) -> FileLock:
        """The inter-process lock around state-changing work: ftagent's own, and in the ``rhsm`` layout
        subscription-manager's too, for the whole of it, as subscription-manager holds it."""
        wait = self.config.agent.lock_timeout if timeout is None else timeout
        if self.config.agent.rhsm:
            return _BothLocks(self.config.agent.lock_file, wait, rhsm_lock(self.config.agent.rhsm_lock, wait))
        return FileLock(self.config.agent.lock_file, wait)

    def close(self) -> None:
        """Close the server connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def anonymous_connection(self, username: str | None = None, password: str | None = None) -> Connection:
        """A connection without client certificate (HTTP Basic if ``username`` is given)."""
        return server_connection(self.config, username=username, password=password)

    def connection(self) -> Connection:
        """The consumer-authenticated connection (mutual TLS with the identity), created once."""
        if self._connection is None:
            self.current_identity()
            self._connection = server_connection(self.config, cert_file=self.identity.cert_path,
                                                 key_file=self.identity.key_path)
        return self._connection

    # -- local state ------------------------------------------------------------------------

    def current_identity(self, *, full: bool = False) -> Identity:
        """The validated local identity (raises :class:`NotRegistered` or :class:`IdentityError`)."""
        return self.identity.load(full=full)

    def facts(self) -> dict[str, str]:
        """Collected facts with overrides."""
        return collect_facts(self.config.agent.facts_dir, paths=self.system_paths)

    def installed_products(self) -> list[dict[str, str]]:
        """Installed products from ``*.json`` files in the product directory."""
        directory = Path(self.config.agent.product_dir)
        out: list[dict[str, str]] = []
        if not directory.is_dir():
            return out
        for path in sorted(directory.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                logger.warning("ignoring product file %s: %s", path, exc)
                continue
            for item in data if isinstance(data, list) else [data]:
                if isinstance(item, dict) and item.get("productId"):
                    out.append(
                        {"productId": str(item["productId"]), "productName": str(item.get("productName", ""))}
                    )
        return out

    def _uuid(self) -> str:
        return self.current_identity().uuid

    def _consumer_call(self, fn: Callable[[Connection, str], T]) -> T:
        """Run ``fn(connection, uuid)``, following a failover answer and running ``fn`` once more as the
        successor; on 410 for our consumer, clean up locally and re-raise."""
        uuid = self._uuid()
        conn = self.connection()
        try:
            try:
                return fn(conn, conn.resolve_uuid(uuid))
            except FailoverRequired as answer:
                successor = self._follow_failover(conn, answer)
            try:
                return fn(conn, successor)
            except FailoverRequired as again:
                raise FailoverError("the server answered with another failover after the identity was swapped",
                                    from_uuid=again.from_uuid, to_uuid=again.to_uuid) from again
        except Gone as exc:
            if exc.deleted_id in (None, uuid, conn.resolve_uuid(uuid)):
                self._forget()
                exc.message = (
                    f"consumer {exc.deleted_id or uuid} has been deleted on the server; "
                    "the local identity and entitlement certificates were removed"
                )
            raise

    def _follow_failover(self, conn: Connection, answer: FailoverRequired) -> str:
        """Follow a failover answer (validate, claim the successor's lease, swap); the successor's UUID."""
        swapper = self._swapper(conn)
        checked = swapper.validate(answer)
        if self.lease_claim is not None:
            self.lease_claim(checked.from_uuid, checked.to_uuid, checked.consumer)  # raises to refuse
        self.followed = swapper.install(checked)
        logger.info("consumer %s failed over to %s; running %s %s again as the successor", self.followed.from_uuid,
                    self.followed.to_uuid, answer.method, answer.path)
        return self.followed.to_uuid

    def _swapper(self, conn: Connection) -> IdentitySwapper:
        """The one installer of identities this agent's calls receive (a successor's, a renewed one)."""
        from ftagent.failover import IdentitySwapper  # only when an identity arrives: see the module's docstring

        return IdentitySwapper(self.identity, self.entitlements, ca_cert=self.config.server.ca_cert,
                               local_virt_uuid=lambda: self.facts().get("virt.uuid"), connection=lambda: conn)

    def _forget(self) -> None:
        self.close()
        self.identity.delete()
        self.entitlements.clear()

    # -- operations -------------------------------------------------------------------------

    def check_can_register(self, force: bool) -> None:
        """Raise :class:`InvalidUsage` if registered already and ``force`` is false."""
        if self.identity.exists() and not force:
            try:
                uuid = self.current_identity().uuid
            except FtagentError:
                uuid = "an unusable identity"
            raise InvalidUsage(f"this system is already registered as {uuid}; use --force to register again")

    def register(
        self,
        org: str,
        *,
        username: str | None = None,
        password: str | None = None,
        activation_keys: Sequence[str] = (),
        name: str | None = None,
        force: bool = False,
        server_key: bool = False,
        auto_attach: bool = False,
        environments: Sequence[str] = (),
    ) -> Identity:
        """Register this system; returns the new identity.

        When the server advertises CSR support (``/status``) and ``server_key`` is false, the key is
        generated locally and sent as a CSR; otherwise, or when the server ignores the CSR, the
        key it returns with the certificate is the identity's key (``key_origin`` "server").  If the
        registration cannot be completed locally, the consumer it created is deleted again; an FT
        group's primary, which the server returns for an FT VM's ``virt.uuid``, existed before and is
        left in place (see :func:`_ft_instance_joined`).
        ``environments`` names the org's environments the system goes in (by name or id, in priority
        order; a user's credentials are needed to look them up).
        """
        from ftagent import crypto  # see the module's docstring

        self.check_can_register(force)
        previous: Identity | None = None
        if self.identity.exists():
            try:
                previous = self.current_identity()
            except FtagentError:
                previous = None
        if not username and not activation_keys:
            raise InvalidUsage("give --username (and a password) or --activationkey")
        if activation_keys and not org:
            raise InvalidUsage("--org is required with activation keys")
        if environments and not username:
            raise InvalidUsage("--environments needs --username: activation keys name their own content")
        facts = self.facts()
        products = self.installed_products()
        consumer_name = name or facts.get("network.hostname") or "ftagent"
        body: dict[str, Any] = {
            "name": consumer_name,
            "type": {"label": "system"},
            "facts": facts,
            "installedProducts": products,
        }
        key_pem: bytes | None = None
        params: dict[str, str] = {"owner": org}
        if activation_keys:
            params["activation_keys"] = ",".join(activation_keys)
        elif force:
            # An org administrator's explicit ask: the server may then replace the live identity of the
            # FT VM this guest names (ftmock answers 409 without it; activation keys never force).
            params["force"] = "true"
        with self.anonymous_connection(None if activation_keys and not username else username, password) as conn:
            if environments:
                body["environments"] = [{"id": env} for env in _environment_ids(conn, org, environments)]
            if not server_key and _honours_csr(conn):
                key = crypto.generate_key()
                key_pem = crypto.key_pem(key)
                body["csr"] = crypto.make_csr(key, consumer_name).decode()
            consumer = conn.post("consumers", params=params, json=body)
        # From here on the consumer exists on the server: whatever stops the registration from
        # completing locally (a bad answer, a full disk, Ctrl-C) must not leave it behind.
        try:
            identity = self._install_registration(consumer, key_pem, consumer_name, previous, facts, products)
        except BaseException as exc:
            instance = _ft_instance_joined(consumer, facts)
            if instance is None:
                self._abandon_consumer(consumer, key_pem, username, password, exc)
            else:
                _leave_ft_primary(consumer, instance, org, exc)
            raise
        owner = consumer.get("owner") if isinstance(consumer, dict) else None
        self.registered_mode = owner.get("contentAccessMode") if isinstance(owner, dict) else None
        if auto_attach and self.registered_mode == SCA_MODE:
            logger.info("organization %s uses Simple Content Access: nothing to attach", org)
            self.refresh()
        elif auto_attach:
            self.attach(None)
        else:
            self.refresh()
        return identity

    def _install_registration(
        self,
        consumer: Any,
        key_pem: bytes | None,
        consumer_name: str,
        previous: Identity | None,
        facts: dict[str, str],
        products: list[dict[str, str]],
    ) -> Identity:
        uuid, cert_pem, returned_key = _id_cert(consumer)
        # A server that ignores the CSR (stock Candlepin) generates the key and returns it: that
        # pair is the identity, whatever key we may have generated.
        key_origin = "server" if returned_key is not None else "local"
        key_pem = returned_key if returned_key is not None else key_pem
        if key_pem is None:
            raise IdentityError("the server's answer holds no private key and no CSR was sent")
        named = validate_pair(cert_pem, key_pem)["uuid"]
        if uuid and named != uuid:
            raise IdentityError(f"the server's certificate names consumer {named}, not the new consumer {uuid}")
        self.close()
        if previous is not None and previous.uuid != uuid:
            self._delete_old_consumer(previous)
        try:
            identity = self.identity.save(
                cert_pem,
                key_pem,
                name=str(consumer.get("name") or consumer_name),
                key_origin=key_origin,
            )
        except OSError as exc:
            raise IdentityError(
                f"cannot store the identity in {self.identity.directory}: {exc.strerror or exc}"
            ) from exc
        self.identity.write_checkin_cache(
            {"uuid": identity.uuid, "facts": facts_digest(facts), "products": facts_digest(products)}
        )
        if previous is not None and previous.uuid != identity.uuid:
            self.entitlements.clear()
        return identity

    def _abandon_consumer(
        self,
        consumer: Any,
        key_pem: bytes | None,
        username: str | None,
        password: str | None,
        cause: BaseException,
    ) -> None:
        """Delete the consumer a registration created but could not install; else say how to.

        With a username the deletion uses it; after an activation-key registration it uses the
        consumer's own certificate (the key the server returned, or ours), from a private
        temporary directory.
        """
        uuid = consumer.get("uuid") if isinstance(consumer, dict) else None
        if not isinstance(uuid, str) or not uuid:
            logger.error("the registration failed (%s) and the server's answer names no consumer UUID; "
                         "look for the system in the organization and delete it there", _reason(cause))
            return
        try:
            if username:
                with server_connection(self.config, username=username, password=password, retries=0) as conn:
                    conn.delete(f"consumers/{uuid}")
            else:
                id_cert = consumer.get("idCert") if isinstance(consumer, dict) else None
                cert = id_cert.get("cert") if isinstance(id_cert, dict) else None
                key = id_cert.get("key") if isinstance(id_cert, dict) else None
                pair_key = key.encode() if isinstance(key, str) and key else key_pem
                if not isinstance(cert, str) or pair_key is None:
                    raise IdentityError("no certificate and key to authenticate as the consumer")
                with tempfile.TemporaryDirectory(prefix="ftagent-abandon-") as tmp:
                    cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
                    write_atomic(key_file, pair_key, mode=0o600, durable=False)
                    write_atomic(cert_file, cert.encode(), durable=False)
                    with server_connection(self.config, cert_file=cert_file, key_file=key_file,
                                           retries=0) as conn:
                        conn.delete(f"consumers/{uuid}")
        except (FtagentError, OSError) as exc:
            url = (self.config.server.url or "").rstrip("/")
            ca = f"--cacert {self.config.server.ca_cert} " if self.config.server.ca_cert else ""
            user = username or "ADMIN"
            logger.error(
                "the registration failed (%s) after the server created consumer %s, which could not be "
                "deleted (%s); remove it with: curl %s-u %s -X DELETE %s/consumers/%s",
                _reason(cause), uuid, exc, ca, user, url, uuid,
            )
        else:
            logger.warning("the registration failed (%s); deleted consumer %s on the server", _reason(cause), uuid)

    def _delete_old_consumer(self, previous: Identity) -> None:
        """Best effort: delete the consumer that ``register --force`` replaces, as itself."""
        try:
            with server_connection(self.config, cert_file=previous.cert_path, key_file=previous.key_path,
                                   retries=0) as conn:
                conn.delete(f"consumers/{previous.uuid}")
            logger.info("deleted the previous consumer %s", previous.uuid)
        except FtagentError as exc:
            logger.warning("could not delete the previous consumer %s: %s", previous.uuid, exc)

    def unregister(self) -> str:
        """Delete the consumer on the server and the local identity and certificates."""
        uuid = self._uuid()
        try:
            self._consumer_call(lambda conn, u: conn.delete(f"consumers/{u}"))
        except Gone:
            pass  # already cleaned up by _consumer_call
        except NotFound:
            logger.warning("consumer %s was unknown to the server; removing local state", uuid)
        self._forget()
        return uuid

    def regenerate(self, *, server_key: bool = False) -> Identity:
        """Get a new identity certificate.

        A server that advertises CSR support gets a CSR for a new local key unless ``server_key``;
        otherwise (stock Candlepin) the server generates the new key and returns it with the
        certificate, and that pair is installed.
        """
        from ftagent import crypto  # see the module's docstring

        current = self.current_identity()

        def call(conn: Connection, u: str) -> tuple[Any, bytes | None]:
            new_key: bytes | None = None
            body: dict[str, Any] | None = None
            if not server_key and _honours_csr(conn):
                key = crypto.generate_key()
                new_key = crypto.key_pem(key)
                body = {"csr": crypto.make_csr(key, current.name or current.uuid).decode()}
            return conn.post(f"consumers/{u}", json=body), new_key

        consumer, new_key = self._consumer_call(call)
        _, cert_pem, returned_key = _id_cert(consumer)
        if returned_key is not None:
            key_pem, origin = returned_key, "server"
        elif new_key is not None:
            key_pem, origin = new_key, "local"
        else:  # the server signed the key it already knew
            key_pem, origin = self.identity.key_pem(), current.key_origin
        identity = self.identity.save(cert_pem, key_pem, key_origin=origin)
        self.close()
        # A new identity revokes the content access certificate: fetch its replacement now.
        self.refresh()
        return identity

    def refresh(self) -> RefreshResult:
        """Synchronise entitlement certificates (and the repository file, overrides fetched anew) with the server."""
        return self._consumer_call(lambda conn, u: self.entitlements.refresh(conn, u, full=True))

    def content_access_mode(self) -> str | None:
        """The content access mode of this consumer's organization (``org_environment`` for SCA)."""
        owner = self._consumer_call(lambda conn, u: conn.get(f"consumers/{u}/owner"))
        mode = owner.get("contentAccessMode") if isinstance(owner, dict) else None
        return mode if isinstance(mode, str) else None

    def repositories(self, *, online: bool = True) -> list[Any]:
        """The repositories this system's certificates grant, with the consumer's overrides.

        ``online`` fetches the overrides from the server (and rewrites the repository file if it
        differs); offline, or when the server cannot be reached, the last known ones are used.
        """
        uuid = self._uuid()
        overrides = None
        if online:
            try:
                overrides = self._consumer_call(lambda conn, u: self.repos.fetch_overrides(conn, u))
            except (Gone, NotFound):
                raise
            except FtagentError as exc:
                logger.warning("cannot fetch the content overrides (%s); using the last known", exc)
        if overrides is None:
            overrides = self.repos.cached_overrides(uuid) or []
        repos = self.repos.repos(overrides)
        if online and self.config.content.manage_repos:
            self.repos.write(repos)
        return repos

    def set_repositories(self, enable: Sequence[str] = (), disable: Sequence[str] = ()) -> dict[str, list[str]]:
        """Enable/disable repositories (labels or ``*`` patterns) through content overrides on the server."""
        return self._consumer_call(lambda conn, u: self.repos.set_enabled(conn, u, enable, disable))

    def checkin(self) -> CheckinResult:
        """The periodic job: send facts if changed, check in, refresh certificates.

        With nothing changed this is two requests over one TLS connection:
        ``PUT /consumers/{uuid}`` and ``GET /consumers/{uuid}/certificates/serials``.  After a
        failover the successor gets the facts and installed products in full, and the entitlement
        counts are those of the whole check-in (what the swap installed included).  The package
        profile goes when it changed (``PUT /consumers/{uuid}/packages``); within
        :data:`IDENTITY_RENEW_WINDOW` of the identity certificate's end the consumer is read
        (``GET /consumers/{uuid}``, where the server renews it) and a renewed certificate installed.
        """
        identity = self.current_identity()
        facts = self.facts()
        products = self.installed_products()
        profile = self.package_profile()
        cache = self.identity.read_checkin_cache()
        fresh = cache.get("uuid") == identity.uuid
        body: dict[str, Any] = {}
        if not fresh or cache.get("facts") != facts_digest(facts):
            body["facts"] = facts
        if not fresh or cache.get("products") != facts_digest(products):
            body["installedProducts"] = products
        held_before = self.entitlements.serials()
        conn = self.connection()
        requests_before = conn.requests_sent
        self.followed = None

        def call(conn: Connection, u: str) -> CheckinResult:
            # Run again as the successor after a failover: it has never seen this guest's facts.
            followed = self.followed
            sent = body if followed is None else {"facts": facts, "installedProducts": products}
            conn.put(f"consumers/{u}", json=sent)
            packages = cache.get("packages") if fresh and followed is None else None
            profile_sent = self._send_profile(conn, u, profile, packages)
            renewed = self._renew_identity(conn, u)
            refresh = self.entitlements.refresh(conn, u, full=self.config.content.full_refresh_on_yum)
            self.identity.write_checkin_cache(
                {"uuid": u, "facts": facts_digest(facts), "products": facts_digest(products),
                 "packages": facts_digest(profile) if profile is not None else None}
            )
            if followed is not None:
                refresh = RefreshResult.between(held_before, self.entitlements.serials())
            return CheckinResult(
                uuid=u,
                facts_sent="facts" in sent,
                refresh=refresh,
                failed_over_from=followed.from_uuid if followed is not None else None,
                requests=conn.requests_sent - requests_before,
                connections=conn.connections_opened,
                profile_sent=None if profile is None else profile_sent,
                identity_renewed=renewed,
            )

        return self._consumer_call(call)

    def _send_profile(self, conn: Connection, uuid: str, profile: list[dict[str, Any]] | None,
                      sent_digest: Any) -> bool:
        """Send the package profile unless it is what was sent last; True when sent."""
        if profile is None or facts_digest(profile) == sent_digest:
            return False
        try:
            conn.put(f"consumers/{uuid}/packages", json=profile)
        except (NotFound, ServerError) as exc:  # Candlepin 5 answers 501: it keeps no profiles
            logger.info("the server keeps no package profile (%s): not sent again until it changes", exc)
            return False
        logger.info("package profile sent: %d packages", len(profile))
        return True

    def _renew_identity(self, conn: Connection, uuid: str) -> int | None:
        """Near the identity certificate's end, read the consumer and install a renewed certificate
        (the failover swap's checks and atomic install); its serial, or None."""
        current = self.current_identity()
        try:
            ends = datetime.datetime.fromisoformat(current.not_after)
        except ValueError:
            return None
        if ends.tzinfo is None:
            ends = ends.replace(tzinfo=datetime.timezone.utc)
        if ends - datetime.datetime.now(datetime.timezone.utc) > IDENTITY_RENEW_WINDOW:
            return None
        consumer = conn.get(f"consumers/{uuid}")
        try:
            renewed = self._swapper(conn).renew(consumer if isinstance(consumer, dict) else {})
        except IdentityError as exc:
            logger.warning("%s; the current identity certificate stays in use", exc)
            return None
        return renewed.serial if renewed is not None else None

    def update_facts(self) -> dict[str, str]:
        """Send the current facts (and installed products) to the server."""
        facts = self.facts()
        products = self.installed_products()

        def call(conn: Connection, u: str) -> None:
            conn.put(f"consumers/{u}", json={"facts": facts, "installedProducts": products})
            self.identity.write_checkin_cache(
                {"uuid": conn.resolve_uuid(u), "facts": facts_digest(facts), "products": facts_digest(products)}
            )

        self._consumer_call(call)
        return facts

    def attach(self, pool: str | None = None, quantity: int | None = None) -> list[Any]:
        """Attach a pool (``quantity`` of it; or auto-attach with ``None``); then refresh certificates."""
        params: dict[str, Any] | None = {"pool": pool} if pool else None
        if params is not None and quantity is not None:
            params["quantity"] = quantity

        def call(conn: Connection, u: str) -> list[Any]:
            result = conn.post(f"consumers/{u}/entitlements", params=params)
            return result if isinstance(result, list) else ([result] if result else [])

        entitlements = self._consumer_call(call)
        certs: list[Any] = []
        for ent in entitlements:
            if isinstance(ent, dict) and isinstance(ent.get("certificates"), list):
                certs.extend(ent["certificates"])
        if certs:
            self.entitlements.save_from_server(certs)
        self.refresh()
        return entitlements

    def consumed(self) -> list[Any]:
        """The consumer's entitlements."""
        result = self._consumer_call(lambda conn, u: conn.get(f"consumers/{u}/entitlements"))
        return result if isinstance(result, list) else []

    def available(self) -> list[Any]:
        """Pools this consumer can attach."""
        result = self._consumer_call(lambda conn, u: conn.get("pools", params={"consumer": u}))
        return result if isinstance(result, list) else []

    def compliance(self) -> dict[str, Any]:
        """The consumer's compliance status."""
        result = self._consumer_call(lambda conn, u: conn.get(f"consumers/{u}/compliance"))
        return result if isinstance(result, dict) else {}

    def protection(self) -> dict[str, Any] | None:
        """Whether this consumer's FT group is protected, as the server sees it (``protection``,
        ``reasons``, ``faultToleranceState``); None for a consumer in no FT group, or a server that
        does not keep it (a Candlepin without the FT additions answers 404 too)."""
        try:
            result = self._consumer_call(lambda conn, u: conn.get(f"consumers/{u}/protection"))
        except NotFound:
            return None
        return result if isinstance(result, dict) else None

    def consumer(self) -> dict[str, Any]:
        """The consumer as the server sees it."""
        result = self._consumer_call(lambda conn, u: conn.get(f"consumers/{u}"))
        return result if isinstance(result, dict) else {}

    # -- what the system sets on itself: release, service level, system purpose, autoheal -----------

    def update_consumer(self, body: dict[str, Any]) -> None:
        """``PUT /consumers/{uuid}`` with ``body`` (what it leaves out stays as it is)."""
        self._consumer_call(lambda conn, u: conn.put(f"consumers/{u}", json=body))

    def release(self) -> str | None:
        """The release this system is pinned to (None: not set)."""
        value = self.consumer().get("releaseVer")
        release = value.get("releaseVer") if isinstance(value, dict) else value
        return release if isinstance(release, str) and release else None

    def available_releases(self) -> list[str]:
        """The releases the CDN lists for the content this system's certificates grant."""
        return available_releases(self.config, self.entitlements)

    def set_release(self, release: str | None) -> str | None:
        """Pin ``$releasever`` to ``release`` (None unsets it): it must be one the CDN lists for this
        system's content, else :class:`InvalidUsage` naming it and nothing changes. The repository
        file follows at once."""
        if release is not None:
            available = self.available_releases()
            if release not in available:
                raise InvalidUsage(f"release {release!r} is not available to this system (the content lists "
                                   f"{', '.join(available) or 'none'}); see 'ftagent release --list'")
        self.update_consumer({"releaseVer": release or ""})
        uuid = self._uuid()
        self.repos.keep_release(uuid, release)
        self.repos.rewrite(uuid)
        return release

    def owner(self) -> dict[str, Any]:
        """This system's organization (OwnerDTO)."""
        owner = self._consumer_call(lambda conn, u: conn.get(f"consumers/{u}/owner"))
        return owner if isinstance(owner, dict) else {}

    def service_levels(self) -> list[str]:
        """The service levels this system's organization offers."""
        key = self.owner().get("key")
        levels = self._consumer_call(lambda conn, u: conn.get(f"owners/{key}/servicelevels"))
        return [str(v) for v in levels] if isinstance(levels, list) else []

    def set_purpose(self, name: str, value: str | list[str] | None) -> None:
        """Set (None: unset) one of :data:`PURPOSE_FIELDS`; a service level must be one the organization
        offers (compared without case), else :class:`InvalidUsage` naming it and nothing changes."""
        field_name = PURPOSE_FIELDS[name]
        if name == "service-level" and value:
            levels = self.service_levels()
            if str(value).lower() not in {lvl.lower() for lvl in levels}:
                raise InvalidUsage(f"service level {value!r} is not offered to this system's organization "
                                   f"(it offers {', '.join(levels) or 'none'}); see 'ftagent service-level --list'")
        if name == "addons":
            self.update_consumer({field_name: list(value or [])})
        else:
            self.update_consumer({field_name: value or ""})

    def purpose(self) -> dict[str, Any]:
        """The release, service level, system purpose and autoheal the server holds for this system."""
        consumer = self.consumer()
        out: dict[str, Any] = {name: consumer.get(key) for name, key in PURPOSE_FIELDS.items()}
        release = consumer.get("releaseVer")
        out["release"] = release.get("releaseVer") if isinstance(release, dict) else release
        out["autoheal"] = consumer.get("autoheal")
        return out

    def environments(self, org: str | None = None, username: str | None = None,
                     password: str | None = None) -> list[dict[str, Any]]:
        """The environments of ``org`` (with a user's credentials), or of this system's organization."""
        if username is not None:
            with self.anonymous_connection(username, password) as conn:
                result = conn.get(f"owners/{org}/environments")
        else:
            key = self.owner().get("key")
            result = self._consumer_call(lambda conn, u: conn.get(f"owners/{key}/environments"))
        return [e for e in result if isinstance(e, dict)] if isinstance(result, list) else []

    def owners(self, username: str, password: str | None) -> list[dict[str, Any]]:
        """The organizations ``username`` may register systems to."""
        with self.anonymous_connection(username, password) as conn:
            result = conn.get(f"users/{username}/owners")
        return [o for o in result if isinstance(o, dict)] if isinstance(result, list) else []

    def clean(self) -> dict[str, Any]:
        """Remove the local identity and entitlement certificates without asking the server."""
        uuid: str | None = None
        if self.identity.exists():
            try:
                uuid = self.current_identity().uuid
            except FtagentError:
                uuid = None
        had_identity = self.identity.exists()
        self.close()
        self.identity.delete()
        removed = self.entitlements.clear()
        return {"uuid": uuid, "identity_removed": had_identity, "entitlements_removed": removed}

    def remove(self, *, serials: Sequence[int] = (), pools: Sequence[str] = (), all_: bool = False) -> list[str]:
        """Remove entitlements by certificate serial or pool (or all); returns the removed entitlement ids.

        Uses only the entitlement listing and ``DELETE .../entitlements/{id}``, which every
        Candlepin-compatible server has.  A serial or pool this consumer does not hold is an error.
        """
        def call(conn: Connection, u: str) -> list[str]:
            if all_:
                ents = conn.get(f"consumers/{u}/entitlements")
                conn.delete(f"consumers/{u}/entitlements")
                return [str(e.get("id")) for e in ents if isinstance(e, dict)] if isinstance(ents, list) else []
            listing = conn.get(f"consumers/{u}/entitlements")
            ents = [e for e in listing if isinstance(e, dict)] if isinstance(listing, list) else []
            chosen: dict[str, dict[str, Any]] = {}
            for serial in serials:
                match = [e for e in ents if serial in _entitlement_serials(e)]
                if not match:
                    raise InvalidUsage(f"no entitlement of this system has certificate serial {serial}")
                chosen.update((str(e["id"]), e) for e in match)
            for pool in pools:
                match = [e for e in ents if isinstance(e.get("pool"), dict) and e["pool"].get("id") == pool]
                if not match:
                    raise InvalidUsage(f"this system holds no entitlement from pool {pool}")
                chosen.update((str(e["id"]), e) for e in match)
            for ent_id in chosen:
                conn.delete(f"consumers/{u}/entitlements/{ent_id}")
            return list(chosen)

        removed = self._consumer_call(call)
        self.refresh()
        return removed

    def installed_status(self) -> list[dict[str, Any]]:
        """Installed products, each with whether the server considers it covered (when registered)."""
        products = self.installed_products()
        status: dict[str, str] = {}
        if self.identity.exists():
            try:
                compliance = self.compliance()
            except FtagentError as exc:
                logger.warning("cannot get the coverage of installed products: %s", exc)
            else:
                covered = compliance.get("compliantProducts") or {}
                partial = compliance.get("partiallyCompliantProducts") or {}
                for p in products:
                    pid = p["productId"]
                    status[pid] = "subscribed" if pid in covered else "partially subscribed" \
                        if pid in partial else "not subscribed"
        return [dict(p, status=status.get(p["productId"], "unknown")) for p in products]

    def reattach(self, consumer_id: str, *, username: str, password: str | None, server_key: bool = False,
                 force: bool = False) -> Identity:
        """Become an existing consumer again (``register --consumerid``): a new identity certificate.

        A user may regenerate any consumer of its organization; with a local key the certificate is
        issued for our CSR, so the private key never leaves this system.
        """
        from ftagent import crypto  # see the module's docstring

        self.check_can_register(force)
        body: dict[str, Any] | None = None
        key_pem: bytes | None = None
        if not server_key:
            key = crypto.generate_key()
            key_pem = crypto.key_pem(key)
            body = {"csr": crypto.make_csr(key, consumer_id).decode()}
        with self.anonymous_connection(username, password) as conn:
            consumer = conn.post(f"consumers/{consumer_id}", json=body)
        uuid, cert_pem, returned_key = _id_cert(consumer)
        # A server that ignores CSRs generates the key itself: then its key is the certificate's.
        key_pem = returned_key or key_pem
        if key_pem is None:
            raise RemoteError(200, "the server sent no private key for the consumer")
        self.close()
        self.entitlements.clear()
        identity = self.identity.save(cert_pem, key_pem, name=str(consumer.get("name") or uuid),
                                      key_origin="server" if server_key else "local")
        self.refresh()
        return identity

    def adopt(self, *, force: bool = False) -> Identity:
        """Take over the registration subscription-manager made (``register --adopt``): no new consumer.

        The identity is subscription-manager's ``cert.pem`` and ``key.pem`` in rhsm.conf's
        ``consumerCertDir`` (in the ``rhsm`` layout, ftagent's own identity directory: the files stay
        where they are). The pair is validated and checked with the server as that consumer; the
        facts go to the server (``virt.uuid`` among them), then the certificates and the repository
        file are refreshed. From then on ftagent follows the consumer's failovers as its own."""
        source = self._rhsm_consumer_dir()
        cert_file, key_file = source / CERT_NAME, source / KEY_NAME
        if cert_file != self.identity.cert_path:
            self.check_can_register(force)
        try:
            cert_pem, key_pem = cert_file.read_bytes(), key_file.read_bytes()
        except FileNotFoundError:
            raise NotRegistered(f"there is no registration to adopt: no {cert_file} and {key_file}") from None
        except PermissionError:
            raise PermissionDenied(str(source)) from None
        uuid = validate_pair(cert_pem, key_pem, cert_label=str(cert_file), key_label=str(key_file))["uuid"]
        facts, products = self.facts(), self.installed_products()
        with server_connection(self.config, cert_file=cert_file, key_file=key_file) as conn:
            try:
                consumer = conn.get(f"consumers/{uuid}")
            except FailoverRequired:
                consumer = None  # it has a successor: adopted first, the failover is followed below
        name = consumer.get("name") if isinstance(consumer, dict) else None
        known = consumer.get("facts") if isinstance(consumer, dict) else None
        theirs = known.get("virt.uuid") if isinstance(known, dict) else None
        if theirs and facts.get("virt.uuid") and str(theirs).lower() != facts["virt.uuid"].lower():
            logger.warning("consumer %s was registered with virt.uuid %s; this system's is %s (sent now)", uuid,
                           theirs, facts["virt.uuid"])
        self.close()
        self.identity.save(cert_pem, key_pem, name=name if isinstance(name, str) else None, key_origin="adopted")
        self._consumer_call(lambda conn, u: conn.put(f"consumers/{u}",
                                                     json={"facts": facts, "installedProducts": products}))
        current = self.current_identity()
        self.identity.write_checkin_cache(
            {"uuid": current.uuid, "facts": facts_digest(facts), "products": facts_digest(products)})
        logger.info("adopted consumer %s from %s", current.uuid, source)
        self.refresh()
        return self.current_identity()

    def _rhsm_consumer_dir(self) -> Path:
        """Where subscription-manager keeps the identity: rhsm.conf's ``consumerCertDir``."""
        if self.config.agent.rhsm:
            return Path(self.config.agent.identity_dir)
        return read_rhsm_conf(system_root(ROOT_VAR), self.config.agent.rhsm_conf).path_of("rhsm", "consumerCertDir")

    def server_status(self) -> dict[str, Any]:
        """The server's ``GET /status`` (version, capabilities); anonymous."""
        with self.anonymous_connection() as conn:
            result = conn.get("status")
        return result if isinstance(result, dict) else {}

    @contextmanager
    def locked(self) -> Iterator[Agent]:
        """``with agent.locked():`` hold the inter-process lock."""
        with self.lock():
            yield self


class _BothLocks(FileLock):
    """ftagent's own lock, then subscription-manager's; released in the reverse order."""

    def __init__(self, path: Path, timeout: float, rhsm: RhsmLock) -> None:
        super().__init__(path, timeout)
        self.rhsm = rhsm

    def acquire(self) -> None:
        super().acquire()
        try:
            self.rhsm.acquire()
        except BaseException:
            super().release()
            raise

    def release(self) -> None:
        self.rhsm.release()
        super().release()


def _honours_csr(conn: Connection) -> bool:
    """Whether the server issues certificates for a client's CSR (``/status`` capabilities).

    Stock Candlepin does not: it ignores the field and generates the key itself.
    """
    try:
        status = conn.get("status")
    except RemoteError as exc:
        logger.info("no server status (%s); registering without a CSR", exc)
        return False
    caps = status.get("managerCapabilities") if isinstance(status, dict) else None
    return isinstance(caps, list) and CSR_CAPABILITY in caps


def _environment_ids(conn: Connection, org: str, wanted: Sequence[str]) -> list[str]:
    """The ids of the org's environments ``wanted`` names (by name or id), in that order; an unknown
    one is :class:`InvalidUsage` naming it."""
    listed = conn.get(f"owners/{org}/environments")
    envs = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    ids = []
    unknown = []
    for name in wanted:
        match = next((e for e in envs if name in (e.get("name"), e.get("id"))), None)
        if match is None:
            unknown.append(name)
        elif str(match["id"]) not in ids:
            ids.append(str(match["id"]))
    if unknown:
        known = ", ".join(str(e.get("name")) for e in envs) or "none"
        raise InvalidUsage(f"organization {org} has no environment {', '.join(repr(u) for u in unknown)} "
                           f"(it has: {known}); see 'ftagent environments --list'")
    return ids


def _ft_instance_joined(consumer: Any, sent: Mapping[str, str]) -> str | None:
    """The instance UUID when a registration's answer is an FT group's primary rather than a consumer
    the registration created; ``None`` for a new consumer.

    The server makes a consumer per FT instance from hypervisor reports, with the facts
    ``instanceUUID`` and ``ftinfo.role``, and a registration naming the VM's ``virt.uuid`` returns the
    group's role-0 consumer; a consumer a registration creates has only the facts it sent. So an
    ``instanceUUID`` the registration did not send marks a consumer that existed before it. The test
    holds whatever the server's clock and with any server: stock Candlepin, which has no FT groups,
    never adds the fact, and its answer is always a new consumer.
    """
    facts = consumer.get("facts") if isinstance(consumer, dict) else None
    instance = facts.get("instanceUUID") if isinstance(facts, dict) else None
    if isinstance(instance, str) and instance and instance != sent.get("instanceUUID"):
        return instance
    return None


def _leave_ft_primary(consumer: Mapping[str, Any], instance: str, org: str, cause: BaseException) -> None:
    """Say why the FT group's primary stays on the server after a failed registration, and what to do."""
    facts = consumer.get("facts")
    virt_uuid = facts.get("virt.uuid") if isinstance(facts, dict) else None
    logger.error(
        "the registration failed (%s) after the server returned consumer %s, the primary of the FT group of "
        "virt.uuid %s (instance %s), which existed before this registration: it is left in place, since "
        "deleting it would end the whole FT group (its backups and their entitlements). Fix the cause, then "
        "register again as an administrator of the organization: ftagent register --force --org %s "
        "--username ADMIN (the server counts the identity it has just issued as live)",
        _reason(cause), consumer.get("uuid"), virt_uuid, instance, org)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return str(exc) or type(exc).__name__


def _entitlement_serials(ent: dict[str, Any]) -> set[int]:
    out = set()
    for cert in ent.get("certificates") or []:
        serial = serial_of(cert.get("serial") if isinstance(cert, dict) else None)
        if serial is not None:
            out.add(serial)
    return out


def _id_cert(consumer: Any) -> tuple[str, bytes, bytes | None]:
    if not isinstance(consumer, dict):
        raise RemoteError(200, "unexpected answer: no consumer object")
    id_cert = consumer.get("idCert")
    if not isinstance(id_cert, dict) or not isinstance(id_cert.get("cert"), str):
        raise IdentityError("the server's answer holds no identity certificate")
    key = id_cert.get("key")
    return (
        str(consumer.get("uuid", "")),
        id_cert["cert"].encode(),
        key.encode() if isinstance(key, str) and key else None,
    )

