"""Messages an operator can act on: permissions, CA files, URLs, unknown keys, wrong org (issue 16)."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD, FtmockServer
from tests.ftagent.test_cli_commands import ftagent
from tests.kit.ca import CertAuthority
from tests.kit.guest import FTAGENT, Guest, cli_guest


def unprivileged(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run as nobody when we are root (as the issue's operator did); as ourselves otherwise."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *cmd], capture_output=True, text=True, env=env, timeout=60, cwd="/")


@pytest.fixture
def shared_guest(ftmock_session: FtmockServer, org: str) -> Iterator[Guest]:
    """A guest in a directory others can traverse (pytest's tmp_path is private to its owner)."""
    root = Path(tempfile.mkdtemp(prefix="ftagent-perm-"))
    os.chmod(root, 0o755)
    guest = cli_guest(root / "g", ftmock_session, org)
    yield guest
    shutil.rmtree(root)


def test_non_root_identity_and_status_say_permission_denied(shared_guest: Guest) -> None:
    guest = shared_guest
    guest.register()
    # What the package installs: configuration readable by all, the identity closed to others.
    for path in [guest.root, guest.root / "facts", guest.root / "products"]:
        os.chmod(path, 0o755)
    for path in [guest.conf, *guest.root.rglob("*.facts"), *guest.root.rglob("*.json")]:
        os.chmod(path, 0o644)
    os.chmod(guest.id_dir, 0o700)
    # A lock file this user cannot create: a command that needed the lock would fail with exit 78.
    guest.conf.write_text(guest.conf.read_text().replace("lock_file = ftagent.lock",
                                                          "lock_file = /var/lock/no-such-dir/ftagent.lock"))
    env = dict(os.environ, FTAGENT_CONFIG=str(guest.conf))
    res = unprivileged([FTAGENT, "identity"], env)
    assert res.returncode == 77, res.stderr
    assert "not registered" not in res.stderr
    assert f"cannot read {guest.id_dir}" in res.stderr and "permission denied" in res.stderr
    # status needs no lock (the lock file cannot even be created here): it says what it cannot read.
    res = unprivileged([FTAGENT, "status"], env)
    assert res.returncode == 77, res.stderr
    assert "permission denied" in res.stderr and "lock" not in res.stderr
    assert res.stderr.count("\n") == 1  # one line


def test_status_does_not_take_the_lock(guest: Guest) -> None:
    guest.register()
    import fcntl

    with open(guest.root / "ftagent.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a long check-in holds it
        res = ftagent(guest, "status")
    assert res.returncode == 0, res.stderr
    assert "Overall status" in res.stdout


def test_wrong_org_is_not_found_not_unavailable(guest: Guest) -> None:
    res = ftagent(guest, "register", "--org", "no-such-org", "--username", "admin")
    assert res.returncode == 64, res.stderr
    assert "no-such-org" in res.stderr and "could not be found" in res.stderr


def test_ca_file_problems_name_the_setting(guest: Guest, tmp_path: Path) -> None:
    conf = guest.conf.read_text()
    missing = tmp_path / "missing-ca.pem"
    guest.conf.write_text(conf.replace(str(guest.server.ca_path), str(missing)))
    res = ftagent(guest, "register", "--org", guest.org, "--username", "admin")
    assert res.returncode == 78
    assert f"CA certificate {missing} ([server] ca_cert in {guest.conf}) does not exist" in res.stderr

    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x01\x0a" + os.urandom(200))
    guest.conf.write_text(conf.replace(str(guest.server.ca_path), str(der)))
    res = ftagent(guest, "register", "--org", guest.org, "--username", "admin")
    assert res.returncode == 78
    assert "holds no PEM certificate" in res.stderr and "openssl x509 -inform der" in res.stderr
    assert "[server] ca_cert" in res.stderr

    guest.conf.write_text(conf.replace(guest.server.url, guest.server.url.replace("https://", "http://")))
    res = ftagent(guest, "register", "--org", guest.org, "--username", "admin")
    assert res.returncode == 78
    assert "[server] url" in res.stderr and "plain HTTP" in res.stderr and "https://" in res.stderr


def test_expired_ca_is_named(guest: Guest, tmp_path: Path) -> None:
    # A CA that expired: the server's chain cannot verify, and the message says the CA is the cause.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    original = x509.load_pem_x509_certificate(guest.server.ca_path.read_bytes())
    key_pem = (guest.server.data_dir / "ca-key.pem")
    assert key_pem.exists(), sorted(p.name for p in guest.server.data_dir.iterdir())
    key = serialization.load_pem_private_key(key_pem.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.timezone(datetime.timedelta(0)))
    expired = (x509.CertificateBuilder().subject_name(original.subject).issuer_name(original.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now - datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               # Python 3.13 verifies strictly (VERIFY_X509_STRICT): a CA without key usage would be
               # refused for that before its expiry is looked at. The same extensions as ftmock's CA.
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .sign(key, hashes.SHA256()))
    ca = tmp_path / "expired-ca.pem"
    ca.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    guest.conf.write_text(guest.conf.read_text().replace(str(guest.server.ca_path), str(ca)))
    res = ftagent(guest, "register", "--org", guest.org, "--username", "admin")
    assert res.returncode == 69
    cn = original.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert f"the CA certificate CN={cn}" in res.stderr and f"in {ca} expired on" in res.stderr


def test_unknown_key_offers_the_nearest(guest: Guest) -> None:
    guest.conf.write_text(guest.conf.read_text().replace("timeout = 20", "timout = 20"))
    res = ftagent(guest, "identity")
    assert "[server] unknown key timout ignored; did you mean timeout?" in res.stderr


def test_no_urllib3_retry_warnings(guest: Guest) -> None:
    guest.conf.write_text(guest.conf.read_text().replace(guest.server.url, "https://127.0.0.1:9/candlepin")
                          .replace("timeout = 20", "timeout = 2\nretries = 2"))
    res = ftagent(guest, "register", "--org", guest.org, "--username", "admin",
                  env={"FTAGENT_PASSWORD": ADMIN_PASSWORD})
    assert res.returncode == 69
    assert "Retrying" not in res.stderr and "urllib3" not in res.stderr
    assert res.stderr.count("\n") == 1


def test_untrusted_ca_still_reported(tmp_path: Path, ftmock_session: FtmockServer, org: str) -> None:
    other = tmp_path / "other-ca.pem"
    CertAuthority().write(other)
    g = cli_guest(tmp_path / "g", ftmock_session, org, ca=other)
    res = ftagent(g, "register", "--org", org, "--username", "admin")
    assert res.returncode == 69 and "server certificate not trusted" in res.stderr
