"""A host registered with subscription-manager, under a test root: ``etc/rhsm/rhsm.conf`` pointing
at a test server, its CA in ``etc/rhsm/ca/``, and the consumer certificate and key in
``etc/pki/consumer/`` with subscription-manager's modes.

The programs find the tree through their root variable (``FTREPORT_ROOT``, ``FTAGENT_ROOT``): no code
is patched. rhsm.conf names the system paths as a real one does (``/etc/rhsm/ca/``...); the
programs take them inside the root.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.kit.ftmock import FtmockServer

__all__ = ["python_rhsm", "register_host", "write_rhsm_conf"]

CA_NAME = "ftmock-ca.pem"


def write_rhsm_conf(root: Path, server: FtmockServer, *, baseurl: str = "https://cdn.example.com",
                    extra: str = "") -> Path:
    """``root/etc/rhsm/rhsm.conf`` for ``server`` (hostname, port, prefix), its CA in ``ca_cert_dir``,
    the content at ``baseurl``."""
    ca_dir = root / "etc" / "rhsm" / "ca"
    ca_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(server.ca_path, ca_dir / CA_NAME)
    conf = root / "etc" / "rhsm" / "rhsm.conf"
    conf.write_text(
        "# as subscription-manager writes it, pointed at the test server\n"
        "[server]\n"
        "hostname = 127.0.0.1\n"
        "prefix = /candlepin\n"
        f"port = {server.port}\n"
        "insecure = 0\n"
        "proxy_hostname =\n"
        "proxy_port =\n"
        "\n"
        "[rhsm]\n"
        f"baseurl = {baseurl}\n"
        "ca_cert_dir = /etc/rhsm/ca/\n"
        f"repo_ca_cert = %(ca_cert_dir)s{CA_NAME}\n"
        "productCertDir = /etc/pki/product\n"
        "entitlementCertDir = /etc/pki/entitlement\n"
        "consumerCertDir = /etc/pki/consumer\n"
        "manage_repos = 1\n"
        f"{extra}"
    )
    return conf


def register_host(root: Path, server: FtmockServer, org: str, *, name: str = "host.example.com",
                  ctype: str = "system", **body: Any) -> str:
    """Register the host in ``org`` (as its admin, with a server-generated key, as subscription-manager
    against stock Candlepin) and install the identity in ``root/etc/pki/consumer``; the consumer UUID."""
    r = requests.post(server.url + "/consumers", params={"owner": org}, auth=server.admin_auth,
                      verify=str(server.ca_path), timeout=30,
                      json={"name": name, "type": {"label": ctype}, "facts": {}, **body})
    assert r.status_code == 200, r.text
    consumer = r.json()
    directory = root / "etc" / "pki" / "consumer"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_text(consumer["idCert"]["cert"])
    key = directory / "key.pem"
    key.write_text(consumer["idCert"]["key"])
    key.chmod(0o600)
    return str(consumer["uuid"])


@contextmanager
def python_rhsm(server: FtmockServer, ca_dir: Path) -> Iterator[dict[str, Any]]:
    """python-rhsm's connection arguments for ``server``, with the certificates of ``ca_dir`` as
    python-rhsm's only trusted CAs (its process-wide settings are put back afterwards)."""
    import rhsm.connection as rc

    saved = {(s, k): rc.config.get(s, k) for s, k in (("rhsm", "ca_cert_dir"), ("server", "insecure"))}
    rc.config.set("rhsm", "ca_cert_dir", f"{ca_dir}/")
    rc.config.set("server", "insecure", "0")
    try:
        yield {"host": "127.0.0.1", "ssl_port": server.port, "handler": "/candlepin", "timeout": 30}
    finally:
        for (section, key), value in saved.items():
            rc.config.set(section, key, value)
