"""The system's release: what ``$releasever`` is pinned to, and the releases the CDN offers.

subscription-manager's ``release``. The release is the consumer's ``releaseVer`` on the server; set,
the repository file's URLs carry it in place of ``$releasever`` (:mod:`ftagent.repos`), so dnf stays
on that release whatever the installed system says. The releases a system may choose from are
read as subscription-manager reads them, from the content delivery network: beside ``$releasever``
in a content path (``/content/dist/rhel9/$releasever/$basearch/baseos/os``) the CDN publishes a
``listing`` file (``/content/dist/rhel9/listing``), one release per line. Each listing of the yum
content the system's certificates grant is fetched under ``[content] baseurl``, with the certificate
and key that grant it and the repositories' CA (``[content] repo_ca_cert``), through the same
transport as the server's calls (timeouts, retries, proxy).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftagent.errors import FtagentError

if TYPE_CHECKING:
    from ftagent.config import Config
    from ftagent.entitlements import EntitlementStore

__all__ = ["RELEASEVER", "available_releases", "listing_path", "parse_listing", "pin"]

logger = logging.getLogger(__name__)

RELEASEVER = "$releasever"
MAX_LINES = 10_000


def listing_path(content_path: str) -> str | None:
    """The ``listing`` file beside ``$releasever`` in a content path (None: the path has no release)."""
    if RELEASEVER not in content_path:
        return None
    return content_path.split(RELEASEVER, 1)[0].rstrip("/") + "/listing"


def parse_listing(text: str) -> list[str]:
    """The releases of a listing file: one per line; blank lines and ``#`` comments aside."""
    return [line.strip() for line in text.splitlines()[:MAX_LINES]
            if line.strip() and not line.lstrip().startswith("#")]


def pin(url: str, release: str | None) -> str:
    """``url`` with ``$releasever`` replaced by ``release`` (unchanged when none is set)."""
    return url.replace(RELEASEVER, release) if release else url


def _listings(config: Config, store: EntitlementStore) -> dict[str, tuple[Path, Path]]:
    """Each listing of the granted yum content, with the certificate and key files that grant it."""
    ca = config.server.ca_cert
    server_ca = Path(ca) if ca is not None and Path(ca).is_file() else None
    out: dict[str, tuple[Path, Path]] = {}
    for serial, cert in store.certificates(server_ca):
        if isinstance(cert, FtagentError) or getattr(cert, "signature", "") == "invalid":
            continue
        for item in cert.content:
            path = item.get("path")
            if (item.get("type") or "yum") != "yum" or not isinstance(path, str):
                continue
            listing = listing_path(path)
            if listing is not None:
                out.setdefault(listing, (store.cert_path(serial), store.key_path(serial)))
    return out


def available_releases(config: Config, store: EntitlementStore) -> list[str]:
    """The releases the CDN lists for the content this system's certificates grant, sorted."""
    # Here, not at the top: repos.py pins with this module, and requests costs every command that
    # imports it about 60 ms (python -X importtime) and the heartbeat 15 MB (bench/ftagent_heartbeat).
    from ftagent.requests_transport import RequestsTransport

    ca = config.content.repo_ca_cert or config.server.ca_cert
    found: set[str] = set()
    for listing, (cert, key) in _listings(config, store).items():
        transport = RequestsTransport(config.content.baseurl, ca_cert=ca, cert_file=cert, key_file=key,
                                      proxy=config.server.proxy, no_proxy=config.server.no_proxy,
                                      retries=config.server.retries)
        try:
            answer = transport.send("GET", listing, body=None, headers={}, timeout=config.server.timeout)
        except FtagentError as exc:
            logger.warning("cannot read the release listing %s: %s", listing, exc)
            continue
        finally:
            transport.close()
        if answer.status == 200:
            found.update(parse_listing(answer.body.decode("utf-8", errors="replace")))
        elif answer.status == 404:
            logger.debug("no release listing at %s", listing)
        else:
            logger.warning("release listing %s: the content server answered %d", listing, answer.status)
    return sorted(found, key=_version_key)


def _version_key(release: str) -> list[Any]:
    """Releases in version order (9 < 9.4 < 10), text after numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in release.replace("-", ".").split(".")]
