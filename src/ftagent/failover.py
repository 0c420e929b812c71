"""The failover answer (HTTP 308 with a ``failover`` body): recognised, validated and followed here only.

:func:`parse_failover` is the one place that recognises the answer; the connection raises what it
returns (:class:`~ftagent.errors.FailoverRequired`) to its caller and does nothing else with it.  The
caller (:class:`ftagent.agent.Agent` for a command, :class:`ftagent.lease.keeper.LeaseKeeper` for the
heartbeat) follows it, one step after the other, in the order docs/design.md ("The agent's rules")
fixes:

1. :meth:`IdentitySwapper.validate`: the successor's certificate chains to the configured CA, its CN
   is the ``to`` UUID, its public key is the local key (or the key the server sent), it is inside its
   validity period, ``from`` is our current UUID, and the consumer's ``virt.uuid`` fact is ours (case
   and SMBIOS byte order ignored);
2. the caller claims the successor's lease, if it uses the FT lease (a command through its
   ``lease_claim``, the keeper through its backend's handover); a refusal stops here, nothing swapped;
3. :meth:`IdentitySwapper.install`: swap the identity atomically (:meth:`IdentityStore.save`; the
   key is replaced only when the server sent one), recording ``from``/``to``/``time`` with it, point
   the connection at it, and refresh entitlement certificates as the successor, which removes the
   predecessor's.

A command then runs its call once more, as the successor.  A failover answer that fails validation
raises :class:`~ftagent.errors.FailoverError` and changes nothing on disk.

A **renewed** identity certificate for the same consumer (the server replaces one close to its expiry
when the consumer checks in, and answers it in the consumer's ``idCert``) goes through the same two
steps with the same checks, :func:`check_identity_certificate` (CN the local UUID) and the same
atomic install (:meth:`IdentitySwapper.renew`), so the files on disk always pair.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftagent.errors import FailoverError, FailoverRequired, FtagentError, IdentityError
from ftagent.facts import same_virt_uuid

if TYPE_CHECKING:
    from ftagent.connection import Connection
    from ftagent.entitlements import EntitlementStore, RefreshResult
    from ftagent.identity import Identity, IdentityStore

__all__ = ["FAILOVER_STATUS", "FollowedFailover", "IdentitySwapper", "LeaseClaim", "ValidatedFailover",
           "check_identity_certificate", "parse_failover", "validate_failover"]

logger = logging.getLogger(__name__)

#: The status of a failover answer: a permanent redirect that clients never follow by themselves.
FAILOVER_STATUS = 308

#: ``claim(from_uuid, to_uuid, consumer)``: claim the successor's lease; raise to refuse the swap.
LeaseClaim = Callable[[str, str, Mapping[str, Any]], None]


def parse_failover(status: int, body: Any, *, method: str = "", path: str = "") -> FailoverRequired | None:
    """The failover answer in a response (``None`` if it is none): a 308 whose JSON body holds a
    ``failover`` object.  The result is not validated yet (:meth:`IdentitySwapper.validate`)."""
    if status != FAILOVER_STATUS or not isinstance(body, dict) or not isinstance(body.get("failover"), dict):
        return None
    display = body.get("displayMessage")
    return FailoverRequired(status, display if isinstance(display, str) and display else None, body=body,
                            method=method, path=path)


@dataclass(frozen=True)
class ValidatedFailover:
    """A failover answer that passed validation."""

    from_uuid: str
    to_uuid: str
    cert_pem: bytes
    key_pem: bytes | None
    consumer: dict[str, Any]
    serial: int
    not_after: str


@dataclass(frozen=True)
class FollowedFailover:
    """A failover this system followed: what was validated, and what the entitlement refresh did
    (``None`` if it failed: the next check-in completes it)."""

    failover: ValidatedFailover
    refresh: RefreshResult | None

    @property
    def from_uuid(self) -> str:
        return self.failover.from_uuid

    @property
    def to_uuid(self) -> str:
        return self.failover.to_uuid


def _refuse(message: str, frm: Any = None, to: Any = None) -> FailoverError:
    return FailoverError(
        f"failover refused: {message}",
        from_uuid=frm if isinstance(frm, str) else None,
        to_uuid=to if isinstance(to, str) else None,
    )


def check_identity_certificate(
    id_cert: Any,
    *,
    ca_certs: list[Any],
    expected_cn: str,
    local_key_pem: bytes,
    refuse: Callable[[str], FtagentError],
    what: str,
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes | None, Any]:
    """Check an identity certificate a server sent for ``what`` (a CertificateDTO: ``cert``, and
    ``key`` when the server made the key): it parses, chains to ``ca_certs``, names ``expected_cn``,
    is for the key sent or else the local key, and is inside its validity period. Returns the
    certificate, the key sent (None: the local key stays) and the certificate's
    :class:`~ftagent.crypto.CertInfo`; raises ``refuse(message)`` saying what is wrong."""
    from ftagent import crypto  # cryptography: loaded only when a certificate arrives (about 30 ms)

    if not isinstance(id_cert, dict) or not isinstance(id_cert.get("cert"), str):
        raise refuse(f"malformed answer: no identity certificate for {what}")
    cert_pem = id_cert["cert"].encode()
    try:
        cert = crypto.load_cert(cert_pem)
    except ValueError as exc:
        raise refuse(f"{what}'s certificate does not parse: {exc}") from exc
    if not ca_certs:
        raise refuse(f"no CA certificate is configured to check {what}'s certificate")
    if crypto.verify_issued_by(cert, ca_certs) is None:
        raise refuse(f"{what}'s certificate is not issued by the configured CA")
    info = crypto.cert_info(cert)
    if info.common_name != expected_cn:
        raise refuse(f"the certificate is for {info.common_name!r}, not {what} {expected_cn}")
    key_pem: bytes | None = None
    if isinstance(id_cert.get("key"), str) and id_cert["key"]:
        key_pem = id_cert["key"].encode()
        try:
            sent_key = crypto.load_key(key_pem)
        except (ValueError, TypeError) as exc:
            raise refuse(f"the key sent with the certificate does not parse: {exc}") from exc
        if crypto.public_key_der(sent_key) != crypto.public_key_der(cert):
            raise refuse(f"the key sent does not match {what}'s certificate")
    else:
        try:
            local_key = crypto.load_key(local_key_pem)
        except (ValueError, TypeError) as exc:
            raise refuse(f"the local key does not parse: {exc}") from exc
        if crypto.public_key_der(local_key) != crypto.public_key_der(cert):
            raise refuse(f"{what}'s certificate is not for this system's key")
    problem = crypto.check_validity(cert, now)
    if problem is not None:
        raise refuse(f"{what}'s certificate {problem}")
    return cert_pem, key_pem, info


def validate_failover(
    failover: Mapping[str, Any],
    *,
    ca_certs: list[Any],
    local_uuid: str,
    local_key_pem: bytes,
    local_virt_uuid: str | None,
    now: datetime.datetime | None = None,
) -> ValidatedFailover:
    """Check a failover body; raise :class:`FailoverError` saying what is wrong."""
    frm, to = failover.get("from"), failover.get("to")
    if not isinstance(frm, str) or not frm or not isinstance(to, str) or not to:
        raise _refuse("malformed answer: 'from' and 'to' must be consumer UUIDs", frm, to)
    if frm.lower() != local_uuid.lower():
        raise _refuse(f"it is for consumer {frm}, but this system is {local_uuid}", frm, to)
    if to.lower() == local_uuid.lower():
        raise _refuse("the successor is this very consumer", frm, to)
    consumer = failover.get("consumer")
    if not isinstance(consumer, dict):
        raise _refuse("malformed answer: no successor consumer", frm, to)
    if consumer.get("uuid") not in (None, to):
        raise _refuse(f"the successor consumer is {consumer.get('uuid')}, not {to}", frm, to)
    cert_pem, key_pem, info = check_identity_certificate(
        consumer.get("idCert"), ca_certs=ca_certs, expected_cn=to, local_key_pem=local_key_pem, now=now,
        refuse=lambda message: _refuse(message, frm, to), what="the successor")
    facts = consumer.get("facts") if isinstance(consumer.get("facts"), dict) else {}
    remote_virt = facts.get("virt.uuid") if isinstance(facts, dict) else None
    if not local_virt_uuid:
        raise _refuse("this system's virt.uuid is unknown, so the successor cannot be checked", frm, to)
    if not isinstance(remote_virt, str) or not same_virt_uuid(remote_virt, local_virt_uuid):
        raise _refuse(
            f"the successor's virt.uuid {remote_virt!r} is not this system's {local_virt_uuid!r}", frm, to
        )
    return ValidatedFailover(
        from_uuid=frm,
        to_uuid=to,
        cert_pem=cert_pem,
        key_pem=key_pem,
        consumer=dict(consumer),
        serial=info.serial,
        not_after=info.not_after.isoformat(),
    )


class IdentitySwapper:
    """Validates and installs failover successors for one identity (see the module's docstring).

    ``connection()`` is the connection the identity's calls go through: it is pointed at the successor
    and fetches its entitlement certificates.
    """

    def __init__(
        self,
        identity: IdentityStore,
        entitlements: EntitlementStore | None,
        *,
        ca_cert: str | os.PathLike[str] | None,
        local_virt_uuid: Callable[[], str | None],
        connection: Callable[[], Connection],
    ) -> None:
        self.identity = identity
        self.entitlements = entitlements
        self.ca_cert = Path(ca_cert) if ca_cert is not None else None
        self.local_virt_uuid = local_virt_uuid
        self.connection = connection

    def _ca_certs(self, refused: str) -> list[Any]:
        from ftagent import crypto  # as in check_identity_certificate

        if self.ca_cert is None:
            return []
        try:
            return list(crypto.load_ca_certs(self.ca_cert))
        except (ValueError, OSError) as exc:
            raise FailoverError(f"{refused}: cannot read CA {self.ca_cert}: {exc}") from exc

    def validate(self, answer: FailoverRequired) -> ValidatedFailover:
        """Validate against the current identity without changing anything."""
        try:
            current = self.identity.load(full=True)
            key_pem = self.identity.key_pem()
        except IdentityError as exc:
            raise FailoverError(f"failover refused: the local identity is unusable: {exc}") from exc
        return validate_failover(
            answer.failover,
            ca_certs=self._ca_certs("failover refused"),
            local_uuid=current.uuid,
            local_key_pem=key_pem,
            local_virt_uuid=self.local_virt_uuid(),
        )

    def _install_identity(self, cert_pem: bytes, key_pem: bytes | None, *, name: str | None, key_origin: str,
                          failover: dict[str, Any] | None) -> Identity:
        """The one atomic, durable install of a new certificate (with the key the server sent, else the
        local one), then the connection pointed at it. OSError or IdentityError when it cannot be written."""
        identity = self.identity.save(cert_pem, key_pem if key_pem is not None else self.identity.key_pem(),
                                      name=name, key_origin=key_origin, failover=failover)
        self.connection().reload_identity()
        return identity

    def renew(self, consumer: Mapping[str, Any]) -> Identity | None:
        """Install the identity certificate a check-in answered (``consumer["idCert"]``) when the server
        renewed it, the way a successor's is installed; None when it is the local one already.

        Raises :class:`~ftagent.errors.IdentityError` when the certificate fails the checks a successor's
        faces (with CN this consumer): nothing is changed then, the local pair stays in use."""
        current = self.identity.load(full=True)
        id_cert = consumer.get("idCert")
        serial = id_cert.get("serial") if isinstance(id_cert, dict) else None
        number = serial.get("serial") if isinstance(serial, dict) else serial
        if number is None or str(number) == str(current.serial):
            return None

        def refuse(message: str) -> IdentityError:
            return IdentityError(f"renewed identity certificate refused: {message}")

        try:
            cas = self._ca_certs("renewed identity certificate refused")
        except FailoverError as exc:
            raise IdentityError(str(exc)) from exc
        cert_pem, key_pem, info = check_identity_certificate(
            id_cert, ca_certs=cas, expected_cn=current.uuid, local_key_pem=self.identity.key_pem(), refuse=refuse,
            what="this consumer")
        try:
            renewed = self._install_identity(cert_pem, key_pem, name=current.name,
                                             key_origin="server" if key_pem is not None else current.key_origin,
                                             failover=None)
        except OSError as exc:
            raise IdentityError(f"the renewed identity certificate could not be written: {exc}") from exc
        logger.warning("identity certificate of %s renewed: serial %s -> %s, valid until %s", current.uuid,
                       current.serial, info.serial, info.not_after.isoformat())
        return renewed

    def install(self, checked: ValidatedFailover) -> FollowedFailover:
        """Install the successor's identity atomically and durably, recording the failover; point the
        connection at it and refresh the entitlement certificates as the successor."""
        current = self.identity.load(full=True)
        key_pem = checked.key_pem if checked.key_pem is not None else self.identity.key_pem()
        record = {
            "from": checked.from_uuid,
            "to": checked.to_uuid,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        name = checked.consumer.get("name")
        try:
            self._install_identity(
                checked.cert_pem,
                key_pem,
                name=name if isinstance(name, str) else current.name,
                key_origin="server" if checked.key_pem is not None else current.key_origin,
                failover=record,
            )
        except (OSError, IdentityError) as exc:
            raise FailoverError(
                f"failover to {checked.to_uuid} could not be written: {exc}",
                from_uuid=checked.from_uuid,
                to_uuid=checked.to_uuid,
            ) from exc
        logger.warning("identity failed over from %s to %s", checked.from_uuid, checked.to_uuid)
        connection = self.connection()
        connection.alias(checked.from_uuid, checked.to_uuid)
        refresh = None
        if self.entitlements is not None:
            try:
                refresh = self.entitlements.refresh(connection, checked.to_uuid)
            except FtagentError as exc:
                logger.warning(
                    "entitlement refresh after failover to %s failed (%s); the next checkin retries",
                    checked.to_uuid,
                    exc,
                )
        return FollowedFailover(checked, refresh)
