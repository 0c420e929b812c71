"""The identity store: validation on load, atomic generations, and crash safety under SIGKILL."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ftagent.errors import IdentityError, NotRegistered
from ftagent.identity import IdentityStore
from tests.kit.ca import CertAuthority, key_pem, new_key


@pytest.fixture
def ca() -> CertAuthority:
    return CertAuthority()


def test_not_registered_when_empty(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "id")
    assert not store.exists()
    with pytest.raises(NotRegistered):
        store.load()


def test_save_and_load_round_trip(tmp_path: Path, ca: CertAuthority) -> None:
    cert, key = ca.pair("11111111-2222-3333-4444-555555555555", org="acme")
    store = IdentityStore(tmp_path / "id")
    saved = store.save(cert, key, name="vm1")
    assert saved.uuid == "11111111-2222-3333-4444-555555555555"
    for full in (False, True):
        loaded = store.load(full=full)
        assert (loaded.uuid, loaded.org, loaded.name, loaded.serial) == (saved.uuid, "acme", "vm1", saved.serial)
    assert stat.S_IMODE(os.stat(store.key_path).st_mode) == 0o600
    assert store.cert_path.read_bytes() == cert
    assert store.key_path.read_bytes() == key
    # Only one generation is kept.
    gens = [p for p in store.directory.iterdir() if p.name.startswith(".gen-")]
    assert len(gens) == 1


def test_save_refuses_mismatched_pair_and_changes_nothing(tmp_path: Path, ca: CertAuthority) -> None:
    store = IdentityStore(tmp_path / "id")
    cert, key = ca.pair("u1")
    store.save(cert, key)
    other_cert, _ = ca.pair("u2")
    with pytest.raises(IdentityError, match="does not match"):
        store.save(other_cert, key)
    assert store.load(full=True).uuid == "u1"


DAMAGE: dict[str, tuple[Callable[[Path, bytes], object], str]] = {
    "corrupt certificate": (lambda d, cert: (d / "cert.pem").write_bytes(cert[:100] + b"garbage" + cert[120:]),
                            r"identity certificate .*cert\.pem is corrupt"),
    "corrupt key": (lambda d, _: (d / "key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                                             b"-----END PRIVATE KEY-----\n"),
                    r"identity key .*key\.pem is corrupt"),
    "mismatched key": (lambda d, _: (d / "key.pem").write_bytes(key_pem(new_key())),
                       r"key .*key\.pem does not match certificate"),
    "missing key": (lambda d, _: (d / "key.pem").unlink(), r"key .* is missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_identity_refused_with_clear_message(tmp_path: Path, ca: CertAuthority, damage: str) -> None:
    store = IdentityStore(tmp_path / "id")
    cert, key = ca.pair("u1")
    store.save(cert, key)
    spoil, message = DAMAGE[damage]
    spoil(store.directory / ".current", cert)
    with pytest.raises(IdentityError, match=message):
        store.load()


def test_expired_identity_refused(tmp_path: Path, ca: CertAuthority) -> None:
    store = IdentityStore(tmp_path / "id")
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)
    key = new_key()
    cert = ca.issue("u1", key.public_key(), start=start, days=5)
    with pytest.raises(IdentityError, match="expired"):
        store.save(cert, key_pem(key))
    # Saved while valid, loaded later: the fast path checks expiry too.
    key2 = new_key()
    cert2 = ca.issue("u2", key2.public_key(), days=1)
    store.save(cert2, key_pem(key2))
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    for full in (False, True):
        with pytest.raises(IdentityError, match="expired on"):
            store.load(full=full, now=later)


def test_plain_files_layout_is_accepted(tmp_path: Path, ca: CertAuthority) -> None:
    """cert.pem/key.pem written by hand (no generations) are read and fully validated."""
    d = tmp_path / "id"
    d.mkdir()
    cert, key = ca.pair("plain-uuid")
    (d / "cert.pem").write_bytes(cert)
    (d / "key.pem").write_bytes(key)
    store = IdentityStore(d)
    assert store.load().uuid == "plain-uuid"
    # The next save converts to the atomic layout.
    cert2, key2 = ca.pair("plain-uuid")
    store.save(cert2, key2)
    assert store.cert_path.is_symlink()
    assert store.load().serial != 0


def test_delete(tmp_path: Path, ca: CertAuthority) -> None:
    store = IdentityStore(tmp_path / "id")
    store.save(*ca.pair("u1"))
    store.delete()
    assert not store.exists()
    assert [p.name for p in store.directory.iterdir()] == []


def test_failover_record_kept_on_same_uuid_resave(tmp_path: Path, ca: CertAuthority) -> None:
    store = IdentityStore(tmp_path / "id")
    key = new_key()
    store.save(ca.issue("new", key.public_key()), key_pem(key), failover={"from": "old", "to": "new", "time": "t"})
    store.save(ca.issue("new", key.public_key()), key_pem(key))
    assert store.load().failed_over_from == "old"


# -- crash safety ------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, itertools
    from pathlib import Path
    from ftagent.identity import IdentityStore
    pairs = [(Path(sys.argv[2] + f"/cert{i}.pem").read_bytes(), Path(sys.argv[2] + f"/key{i}.pem").read_bytes())
             for i in range(3)]
    store = IdentityStore(sys.argv[1])
    import ftagent.crypto  # loaded before the kill window opens
    store.save(*pairs[1], name="warm-up")
    print("ready", flush=True)
    for i in itertools.count():
        cert, key = pairs[i % 3]
        store.save(cert, key, name=f"gen{i}")
        print("saved", flush=True)
    """
)


def test_sigkill_during_writes_always_leaves_an_intact_pair(tmp_path: Path, ca: CertAuthority) -> None:
    """A writer replacing the pair in a loop is killed at random points; every time the store
    loads (full validation) and holds one of the known pairs, never a mix."""
    runs = int(os.environ.get("FTAGENT_CRASH_RUNS", "30"))
    material = tmp_path / "material"
    material.mkdir()
    known: dict[bytes, bytes] = {}
    for i in range(3):
        cert, key = ca.pair(f"uuid-{i}")  # three different keys and certificates
        (material / f"cert{i}.pem").write_bytes(cert)
        (material / f"key{i}.pem").write_bytes(key)
        known[cert] = key
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    store = IdentityStore(tmp_path / "id")
    first_cert = next(iter(known))
    store.save(first_cert, known[first_cert])
    rng = random.Random(int(os.environ.get("FTAGENT_CRASH_SEED", "1234")))
    loads = 0
    interrupted = 0
    names: set[str | None] = set()
    for _ in range(runs):
        proc = subprocess.Popen([sys.executable, str(script), str(store.directory), str(material)],
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        # Let a random number of saves complete first, so the kills land in different generations
        # however slow the disk is, then kill at a random point of the next save.
        for _ in range(rng.randrange(0, 6)):
            assert proc.stdout.readline().strip() == b"saved"
        time.sleep(rng.uniform(0.0, 0.02))  # a real duration: the kill lands at a random point of the save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        entries = [p.name for p in store.directory.iterdir()]
        if any(".tmp-" in n for n in entries) or len([n for n in entries if n.startswith(".gen-")]) > 1:
            interrupted += 1
        ident = store.load(full=True)
        cert = (store.directory / ".current" / "cert.pem").read_bytes()
        key = (store.directory / ".current" / "key.pem").read_bytes()
        assert known.get(cert) == key, "certificate and key from different generations"
        assert store.cert_path.read_bytes() == cert and store.key_path.read_bytes() == key
        assert ident.uuid.startswith("uuid-")
        names.add(ident.name)
        assert stat.S_IMODE(os.stat(store.key_path).st_mode) == 0o600
        loads += 1
    assert loads == runs
    print(f"crash runs={runs} interrupted={interrupted} distinct={len(names)}")
    # The kills landed among the writes: many generations were seen, and some kills caught a
    # write half-done (temporary files or a second generation directory left behind).
    assert len(names) > min(runs, 10) // 2
    if runs >= 20:
        assert interrupted > 0
    # Leftovers of killed writers are cleaned by the next successful save.
    store.save(first_cert, known[first_cert])
    leftovers = [p.name for p in store.directory.iterdir() if ".tmp-" in p.name]
    assert leftovers == []
    assert len([p for p in store.directory.iterdir() if p.name.startswith(".gen-")]) == 1
