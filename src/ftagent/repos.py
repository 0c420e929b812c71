"""The repository file: one yum repository per content set the system's certificates grant.

subscription-manager's ``redhat.repo``, written by ftagent from its entitlement and content access
certificates (``[content] repo_file``, default ``/etc/yum.repos.d/redhat.repo``): for each content set
of type ``yum``, a section named by its label with ``name``, ``baseurl`` (``[content] baseurl`` joined
with the content path, ``$releasever``/``$basearch`` left for dnf), ``enabled`` (the content's
default, then the consumer's overrides), ``gpgcheck``/``gpgkey``, ``sslverify = 1``, ``sslcacert``
(``[content] repo_ca_cert``, default the server's CA file), the certificate and key that grant it
(``sslclientcert``/``sslclientkey``) and ``metadata_expire``; then a line per override.

Order, so that every file a section names exists while the repository file is in place: the
:class:`RepoManager` listens to the :class:`~ftagent.entitlements.EntitlementStore`, which writes
new certificates, lets it rewrite the repository file for the settled set, and only then removes
old certificates; on unregistering the repository file goes first. A file is rewritten (atomically,
durably) only when its text would change, so a check-in with nothing new leaves its mtime alone,
while a file that was deleted or edited by hand is put back at the next refresh or check-in.

Overrides (``repos --enable/--disable``) live on the server (``/consumers/{uuid}/content_overrides``);
the last answer is kept beside the identity (``content-overrides.json``) so a check-in with nothing
changed makes no extra request. They are fetched again on an explicit refresh, when certificates came
or went, and for a new consumer (registration, failover: the successor inherits them on the server).
The consumer's release (``ftagent release --set``, :mod:`ftagent.release`) is fetched and kept the
same way (``release.json``); when one is set, the URLs carry it in place of ``$releasever``. The
certificates' content sets come through :mod:`ftagent.contentcache` (``content-sets.json``), which
parses a certificate only the first time it sees it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftagent.atomic import remove_durably, write_atomic
from ftagent.contentcache import CACHE_NAME, CertContent, ContentCache
from ftagent.entitlements import EntitlementStore
from ftagent.errors import FtagentError, InvalidUsage, NotFound
from ftagent.release import pin
from ftagent.rhsmlock import write_lock

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.connection import Connection

__all__ = ["OVERRIDES_CACHE", "RELEASE_CACHE", "SCA_MODE", "Repo", "RepoManager", "entitlement_store"]

logger = logging.getLogger(__name__)

OVERRIDES_CACHE = "content-overrides.json"
RELEASE_CACHE = "release.json"
#: An org's ``contentAccessMode`` for Simple Content Access: content without attaching subscriptions.
SCA_MODE = "org_environment"
DEFAULT_METADATA_EXPIRE = 86400
HEADER = (
    "#\n"
    "# Certificate-based repositories, written by ftagent from this system's certificates.\n"
    "# Hand edits are put back at the next refresh or check-in: change a repository with\n"
    "# 'ftagent repos --enable LABEL' or '--disable LABEL' (overrides kept on the server).\n"
    "#\n"
)
# What dnf accepts as a repository id, and as an option name; values are single lines.
_LABEL = re.compile(r"^[A-Za-z0-9_.:-]+$")
_OPTION = re.compile(r"^[A-Za-z0-9_]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> bool:
    return _CONTROL.search(text) is None


def _join(base: str, path: str) -> str:
    """A content path under the base URL (a full URL in the certificate stays as it is)."""
    if "://" in path:
        return path
    return base.rstrip("/") + "/" + path.lstrip("/")


@dataclass
class Repo:
    """One repository of the file, with the overrides applied."""

    label: str
    name: str
    baseurl: str
    serial: int
    options: dict[str, str] = field(default_factory=dict)  # in file order, overrides applied

    @property
    def enabled(self) -> bool:
        return self.options.get("enabled", "1").strip().lower() in ("1", "true", "yes", "on")

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "baseurl": self.options.get("baseurl", self.baseurl),
                "enabled": self.enabled, "serial": self.serial, "options": dict(self.options)}

    def text(self) -> str:
        return f"[{self.label}]\n" + "".join(f"{k} = {v}\n" for k, v in self.options.items())


class RepoManager:
    """Builds, writes and removes the repository file; keeps the consumer's overrides."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.content = config.content
        self.lock = write_lock(config.agent)
        self.certificates = EntitlementStore(config.agent.entitlement_dir, lock=self.lock)
        # Beside the identity in ftagent's layout; in subscription-manager's, ftagent's own state
        # stays out of its directories.
        state = config.agent.state_dir if config.agent.rhsm else Path(config.agent.identity_dir)
        self.cache_path = state / OVERRIDES_CACHE
        self.release_path = state / RELEASE_CACHE
        self.content_cache = ContentCache(state / CACHE_NAME)

    @property
    def server_ca(self) -> Path | None:
        """The server's CA when it is one file (it checks the payloads' signatures; dnf's default CA)."""
        ca = self.config.server.ca_cert
        try:
            return Path(ca) if ca is not None and Path(ca).is_file() else None
        except OSError:  # unreadable: the commands that need it say so
            return None

    @property
    def repo_ca(self) -> Path | None:
        return self.content.repo_ca_cert or self.server_ca

    # -- overrides ------------------------------------------------------------------------------

    def cached_overrides(self, uuid: str | None = None) -> list[dict[str, Any]] | None:
        """The overrides last fetched (for ``uuid`` only, if given), or None."""
        try:
            data = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("overrides"), list):
            return None
        if uuid is not None and data.get("uuid") != uuid:
            return None
        return [o for o in data["overrides"] if isinstance(o, dict)]

    def _cache(self, uuid: str, overrides: list[dict[str, Any]]) -> None:
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.cache_path, json.dumps({"uuid": uuid, "overrides": overrides}).encode(), mode=0o644)
        except OSError as exc:
            logger.warning("cannot keep the content overrides in %s: %s", self.cache_path, exc)

    def fetch_overrides(self, connection: Connection, uuid: str) -> list[dict[str, Any]]:
        """The consumer's overrides from the server (a server without them: none), kept for later."""
        try:
            answer = connection.get(f"consumers/{uuid}/content_overrides")
        except NotFound:
            answer = []
        overrides = [o for o in answer if isinstance(o, dict)] if isinstance(answer, list) else []
        self._cache(uuid, overrides)
        return overrides

    def _overrides_for(self, connection: Connection, uuid: str, fetch: bool) -> list[dict[str, Any]]:
        """The overrides (and, kept alongside, the release): the last known, or fetched when ``fetch``."""
        cached = self.cached_overrides(uuid)
        if cached is not None and not fetch:
            return cached
        try:
            self.fetch_release(connection, uuid)
            return self.fetch_overrides(connection, uuid)
        except FtagentError as exc:
            logger.warning("cannot fetch the content overrides of %s (%s); using the last known", uuid, exc)
            return cached or []

    # -- the release ------------------------------------------------------------------------------

    def cached_release(self) -> str | None:
        """The release last fetched or set (None: none set, or never fetched)."""
        try:
            data = json.loads(self.release_path.read_text())
        except (OSError, ValueError):
            return None
        release = data.get("release") if isinstance(data, dict) else None
        return release if isinstance(release, str) and release and _one_line(release) else None

    def keep_release(self, uuid: str, release: str | None) -> None:
        try:
            write_atomic(self.release_path, json.dumps({"uuid": uuid, "release": release}).encode(), mode=0o644)
        except OSError as exc:
            logger.warning("cannot keep the release in %s: %s", self.release_path, exc)

    def fetch_release(self, connection: Connection, uuid: str) -> str | None:
        """The consumer's release from the server (a server without the call: none), kept for later."""
        try:
            answer = connection.get(f"consumers/{uuid}/release")
        except NotFound:
            answer = None
        value = answer.get("releaseVer") if isinstance(answer, dict) else None
        release = value if isinstance(value, str) and value.strip() else None
        self.keep_release(uuid, release)
        return release

    def rewrite(self, uuid: str) -> bool:
        """Write the file again from the certificates and what is kept (after a change of the release)."""
        if not self.content.manage_repos:
            return False
        return self.write(self.repos(self.cached_overrides(uuid) or []))

    # -- the repositories ---------------------------------------------------------------------

    def repos(self, overrides: Sequence[dict[str, Any]] = (), serials: set[int] | None = None) -> list[Repo]:
        """The repositories the certificates (``serials``, or all present) grant, overrides applied."""
        by_label: dict[str, tuple[int, dict[str, Any]]] = {}
        server_ca, repo_ca, release = self.server_ca, self.repo_ca, self.cached_release()
        for cert in self.content_cache.content(self.certificates, server_ca):
            serial = cert.serial
            if serials is not None and serial not in serials:
                continue
            if cert.skipped is not None:
                logger.warning("entitlement certificate %s skipped for repositories: %s", serial, cert.skipped)
                continue
            for item in _yum_content(cert):
                label = item["label"]
                if label not in by_label or by_label[label][0] < serial:  # the newest certificate wins
                    by_label[label] = (serial, item)
        per_label: dict[str, list[tuple[str, str]]] = {}
        for override in overrides:
            label, name, value = override.get("contentLabel"), override.get("name"), override.get("value")
            if not (isinstance(label, str) and isinstance(name, str) and isinstance(value, str)):
                continue
            if not _OPTION.match(name) or not _one_line(value):
                logger.warning("override %s of %s ignored: not a one-line option", name, label)
                continue
            per_label.setdefault(label, []).append((name.lower(), value))
        files = {serial: (str(self.certificates.cert_path(serial)), str(self.certificates.key_path(serial)))
                 for serial in {serial for serial, _item in by_label.values()}}
        return [self._repo(label, files[serial], serial, item, per_label.get(label, []), repo_ca, release)
                for label, (serial, item) in sorted(by_label.items())]

    def _repo(self, label: str, files: tuple[str, str], serial: int, item: dict[str, Any],
              overrides: list[tuple[str, str]], repo_ca: Path | None, release: str | None) -> Repo:
        name = _CONTROL.sub(" ", str(item.get("name") or label))
        baseurl = pin(_join(self.content.baseurl, str(item.get("path") or "")), release)
        gpg = item.get("gpg_url")
        options = {"name": name, "baseurl": baseurl, "enabled": "1" if item.get("enabled", True) else "0",
                   "gpgcheck": "1" if gpg else "0"}
        if gpg:
            options["gpgkey"] = _join(self.content.baseurl, str(gpg))
        options["sslverify"] = "1"
        if repo_ca is not None:
            options["sslcacert"] = str(repo_ca)
        options["sslclientkey"] = files[1]
        options["sslclientcert"] = files[0]
        expire = item.get("metadata_expire")
        options["metadata_expire"] = str(expire if isinstance(expire, int) and expire >= 0 else DEFAULT_METADATA_EXPIRE)
        for key, value in overrides:
            options[key] = value  # in place for a known option, else a line of its own at the end
        return Repo(label, name, baseurl, serial, options)

    def render(self, repos: Sequence[Repo]) -> bytes:
        return (HEADER + "".join("\n" + r.text() for r in repos)).encode()

    # -- the file ---------------------------------------------------------------------------------

    def write(self, repos: Sequence[Repo]) -> bool:
        """Install the file for these repositories; False when it already says exactly that (or cannot be)."""
        path = self.content.repo_file
        if not path.parent.is_dir():
            logger.debug("no directory %s: repository file not written (is dnf installed?)", path.parent)
            return False
        data = self.render(repos)
        try:
            if path.read_bytes() == data:
                return False
        except OSError:
            pass
        with self.lock:
            write_atomic(path, data, mode=0o644)
        logger.info("repository file %s written: %d repositories", path, len(repos))
        return True

    def remove(self) -> bool:
        """Remove the repository file (unregistered, or no longer managed)."""
        path = self.content.repo_file
        if not path.exists():
            return False
        with self.lock:
            remove_durably(path)
        logger.info("repository file %s removed", path)
        return True

    # -- CertificateListener --------------------------------------------------------------------

    def certificates_settled(self, connection: Connection, uuid: str, serials: set[int], *, changed: bool,
                             full: bool) -> None:
        if not self.content.manage_repos:
            self.remove()
            return
        overrides = self._overrides_for(connection, uuid, fetch=full or changed)
        self.write(self.repos(overrides, serials))

    def certificates_cleared(self) -> None:
        self.remove()
        for path in (self.cache_path, self.release_path, self.content_cache.path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- repos --enable / --disable ---------------------------------------------------------------

    def set_enabled(self, connection: Connection, uuid: str, enable: Sequence[str],
                    disable: Sequence[str]) -> dict[str, list[str]]:
        """Enable/disable repositories by label or ``*`` pattern, as overrides on the server.

        Every pattern must match a repository of this system, else :class:`InvalidUsage` naming the
        ones that do not and nothing is changed. Disables apply first, so ``--disable '*' --enable X``
        leaves only X enabled.
        """
        overrides = self._overrides_for(connection, uuid, fetch=True)
        labels = [r.label for r in self.repos(overrides)]
        chosen: dict[str, str] = {}
        unknown = []
        for value, patterns in (("0", disable), ("1", enable)):
            for pattern in patterns:
                matches = [label for label in labels if fnmatch.fnmatchcase(label, pattern)]
                if not matches:
                    unknown.append(pattern)
                chosen.update((label, value) for label in matches)
        if unknown:
            raise InvalidUsage("no repository of this system matches " + ", ".join(repr(u) for u in unknown)
                               + " (see 'ftagent repos --list')")
        body = [{"contentLabel": label, "name": "enabled", "value": value} for label, value in chosen.items()]
        answer = connection.put(f"consumers/{uuid}/content_overrides", json=body)
        overrides = [o for o in answer if isinstance(o, dict)] if isinstance(answer, list) else \
            self.fetch_overrides(connection, uuid)
        self._cache(uuid, overrides)
        if self.content.manage_repos:
            self.write(self.repos(overrides))
        return {"enabled": sorted(k for k, v in chosen.items() if v == "1"),
                "disabled": sorted(k for k, v in chosen.items() if v == "0")}


def _yum_content(cert: CertContent) -> list[dict[str, Any]]:
    out = []
    for item in cert.content:
        label = item.get("label")
        if (item.get("type") or "yum") != "yum" or not isinstance(label, str):
            continue
        if not _LABEL.match(label):
            logger.warning("content set %r of certificate %s skipped: not a repository id", label, cert.serial)
            continue
        out.append(item)
    return out


def entitlement_store(config: Config) -> EntitlementStore:
    """The entitlement certificate store, with the repository file following its changes."""
    repos = RepoManager(config)
    return EntitlementStore(config.agent.entitlement_dir, listener=repos, lock=repos.lock)
