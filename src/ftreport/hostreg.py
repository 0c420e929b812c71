"""The host's own registration, which virt-who falls back on and so does ftreport.

On a host registered with subscription-manager, virt-who needs no entitlement server in its
configuration: every ``rhsm_*`` connection key a section leaves out comes from ``/etc/rhsm/rhsm.conf``
(``[server] hostname, port, prefix, insecure, proxy_*, no_proxy``), it authenticates with the host's
consumer certificate (``cert.pem`` and ``key.pem`` in rhsm.conf's ``consumerCertDir``,
``/etc/pki/consumer``) unless the section gives ``rhsm_username`` and ``rhsm_password``, and trusts the
CA certificates of rhsm.conf's ``ca_cert_dir`` (``/etc/rhsm/ca/``) unless the section names
``rhsm_ca_cert``. :class:`HostRegistration` reads those files, once and only when a section needs
them, inside the system root ``FTREPORT_ROOT`` (:mod:`ftagent.sysroot`).
"""

from __future__ import annotations

from pathlib import Path

from ftagent.errors import ConfigError as FtagentConfigError
from ftagent.rhsmconf import RhsmConf, read_rhsm_conf
from ftagent.sysroot import system_root

from .errors import ConfigError

__all__ = ["ROOT_VARIABLE", "ConsumerIdentity", "HostRegistration"]

#: The environment variable naming the system root (default ``/``).
ROOT_VARIABLE = "FTREPORT_ROOT"


class ConsumerIdentity:
    """The host's consumer certificate and key, and the consumer (UUID, org) the certificate names."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key

    def present(self) -> bool:
        return self.cert.is_file()

    def subject(self) -> tuple[str, str | None]:
        """(consumer UUID, org) from the certificate's subject (CN, O)."""
        # cryptography costs ~40 ms to import: only a section that reports the host's own guests
        # needs the UUID while the configuration is read.
        from ftagent.crypto import cert_info, load_cert

        try:
            info = cert_info(load_cert(self.cert.read_bytes()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the host's consumer certificate: {exc}", file=str(self.cert)) from exc
        if not info.common_name:
            raise ConfigError("the host's consumer certificate names no consumer (no CN)", file=str(self.cert))
        return info.common_name, info.organization


class HostRegistration:
    """rhsm.conf and the consumer certificate of the host (inside ``root``), read on first use."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else system_root(ROOT_VARIABLE)
        self._conf: RhsmConf | None = None

    @property
    def conf(self) -> RhsmConf:
        if self._conf is None:
            try:
                self._conf = read_rhsm_conf(self.root)
            except FtagentConfigError as exc:
                raise ConfigError(str(exc)) from exc
        return self._conf

    @property
    def conf_path(self) -> Path:
        return self.conf.path

    def registered(self) -> bool:
        """Whether the host has an rhsm.conf to fall back on."""
        return self.conf.exists

    def server_value(self, key: str) -> str | None:
        """rhsm.conf's ``[server] key`` (its default when the file leaves it out), or None without a file."""
        if not self.conf.exists:
            return None
        try:
            return self.conf.get("server", key) or None
        except FtagentConfigError as exc:
            raise ConfigError(str(exc)) from exc

    def ca_dir(self) -> Path | None:
        """rhsm.conf's ``ca_cert_dir`` when there is an rhsm.conf and the directory exists."""
        if not self.conf.exists:
            return None
        path = self.conf.path_of("rhsm", "ca_cert_dir")
        return path if path.is_dir() else None

    def consumer(self) -> ConsumerIdentity:
        """The consumer certificate and key in rhsm.conf's ``consumerCertDir`` (``/etc/pki/consumer``)."""
        directory = self.conf.path_of("rhsm", "consumerCertDir")
        return ConsumerIdentity(directory / "cert.pem", directory / "key.pem")
