"""python-rhsm 1.19.2 on a host, at its default paths: run as a script inside a mount namespace
(:mod:`tests.kit.mountns`), it prints JSON on what python-rhsm's own readers find, or registers the host
as subscription-manager would.

- ``sees``: ``rhsm.config.initConfig()`` with no argument (``/etc/rhsm/rhsm.conf``), the consumer read as
  subscription-manager's ``ConsumerIdentity`` reads it (``cert.pem`` and ``key.pem`` of
  ``consumerCertDir``, the UUID the certificate's CN), a ``UEPConnection`` given nothing but that pair
  (server and CA from rhsm.conf) fetching the consumer, and the entitlement certificates of
  ``entitlementCertDir`` with their keys and content;
- ``register OWNER USERNAME PASSWORD [FACTS-JSON]``: a ``UEPConnection`` with the credentials (server
  and CA from rhsm.conf) registers a system and the identity is written to ``consumerCertDir`` with
  subscription-manager's mode (0640); prints the consumer's UUID.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

CONSUMER_CERT = "/etc/pki/consumer/cert.pem"
CONSUMER_KEY = "/etc/pki/consumer/key.pem"
ID_CERT_MODE = 0o640


def sees() -> dict[str, Any]:
    import rhsm.certificate as rcert
    import rhsm.config as rconfig
    import rhsm.connection as rc

    cfg = rconfig.initConfig()
    consumer_dir = cfg.get("rhsm", "consumerCertDir")
    ent_dir = cfg.get("rhsm", "entitlementCertDir")
    out: dict[str, Any] = {
        "config": rconfig.DEFAULT_CONFIG_PATH,
        "server": [cfg.get("server", "hostname"), cfg.get("server", "port"), cfg.get("server", "prefix")],
        "consumer_dir": consumer_dir, "entitlement_dir": ent_dir,
        "consumer": None, "entitlements": [],
    }
    if os.path.exists(CONSUMER_CERT):
        cert = rcert.create_from_file(CONSUMER_CERT)
        uuid = cert.subject["CN"]
        conn = rc.UEPConnection(cert_file=CONSUMER_CERT, key_file=CONSUMER_KEY)
        out["consumer"] = {
            "uuid": uuid, "org": cert.subject.get("O"), "serial": cert.serial,
            "key_ok": not rcert.Key.read(os.path.join(consumer_dir, "key.pem")).bogus(),
            "server_uuid": conn.getConsumer(uuid)["uuid"],
        }
    for path in sorted(Path(ent_dir).glob("*.pem")) if os.path.isdir(ent_dir) else ():
        if path.name.endswith("-key.pem"):
            continue
        ent = rcert.create_from_file(str(path))
        key = path.with_name(f"{path.stem}-key.pem")
        out["entitlements"].append({
            "file": str(path), "serial": ent.serial, "content": sorted(c.label for c in ent.content),
            "key_ok": key.is_file() and not rcert.Key.read(str(key)).bogus(),
        })
    return out


def register(owner: str, username: str, password: str, facts: dict[str, str]) -> str:
    import rhsm.config as rconfig
    import rhsm.connection as rc

    conn = rc.UEPConnection(username=username, password=password)
    consumer = conn.registerConsumer(name=socket.gethostname(), type="system", owner=owner, facts=facts)
    directory = Path(rconfig.initConfig().get("rhsm", "consumerCertDir"))
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("key.pem", consumer["idCert"]["key"]), ("cert.pem", consumer["idCert"]["cert"])):
        path = directory / name
        path.write_text(text)
        path.chmod(ID_CERT_MODE)
    return str(consumer["uuid"])


def main(argv: list[str]) -> int:
    if argv[:1] == ["sees"]:
        print(json.dumps(sees()))
    elif argv[:1] == ["register"] and len(argv) in (4, 5):
        facts = json.loads(argv[4]) if len(argv) == 5 else {}
        print(json.dumps({"uuid": register(argv[1], argv[2], argv[3], facts)}))
    else:
        print(__doc__, file=sys.stderr)
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
