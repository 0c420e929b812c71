"""Agent-side failover: validation, atomic swap, entitlement refresh, retry, record; refusals
change nothing on disk.  The server is played by `responses`, certificates by a local CA."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import responses

from ftagent.agent import Agent
from ftagent.cli import cli
from ftagent.config import load_config
from ftagent.errors import FailoverError
from tests.clirunner import Runner
from tests.kit.ca import CertAuthority, key_pem, new_key
from tests.kit.guest import make_guest

URL = "https://cp.test:8443/candlepin"
VIRT = "4C4C4544-0042-3010-8048-B2C04F4E4E31"


class Registered:
    """A guest registered as consumer "old" by a local CA, its server played by ``responses``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = CertAuthority()
        guest = make_guest(root, None, url=URL, ca=self.ca.write(root / "ca.pem"), virt_uuid=VIRT.lower(),
                           server_options={"retries": 0})
        self.conf = guest.conf
        self.key = new_key()
        self.agent = Agent(load_config(self.conf))
        self.agent.identity.save(self.ca.issue("old", self.key.public_key()), key_pem(self.key), name="vm1")
        self.agent.entitlements.save(5, b"CERT5", b"KEY5")

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in sorted(self.root.rglob("*")):
            rel = str(p.relative_to(self.root))
            if rel == "ftagent.lock":
                continue
            if p.is_symlink():
                out[rel] = ("link", str(p.readlink()))
            elif p.is_file():
                out[rel] = p.read_bytes()
        return out

    def failover_body(self, *, cert: bytes | None = None, key: bytes | None = None, virt: str = VIRT,
                      to: str = "new", frm: str = "old") -> dict[str, Any]:
        cert = cert if cert is not None else self.ca.issue(to, self.key.public_key())
        id_cert: dict[str, Any] = {"cert": cert.decode(), "serial": {"serial": 9}}
        if key is not None:
            id_cert["key"] = key.decode()
        return {
            "displayMessage": f"Consumer {frm} has failed over to {to}.",
            "failover": {"from": frm, "to": to, "consumer": {
                "uuid": to, "name": "vm1", "facts": {"virt.uuid": virt, "ftinfo.role": "0"}, "idCert": id_cert}},
        }


def ent_cert(serial: int) -> dict[str, Any]:
    return {"id": f"c{serial}", "serial": {"serial": serial}, "cert": f"CERT{serial}", "key": f"KEY{serial}"}


@pytest.fixture
def guest(tmp_path: Path) -> Registered:
    return Registered(tmp_path)


def mock_successor(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{URL}/consumers/new/certificates/serials", json=[{"serial": 7, "expiration": "2030-01-01"}])
    rsps.get(f"{URL}/consumers/new/certificates", json=[ent_cert(7)])
    rsps.put(f"{URL}/consumers/new", status=204)


@responses.activate
def test_checkin_applies_failover_swaps_refreshes_retries_and_records(guest: Registered) -> None:
    key_before = guest.agent.identity.key_pem()
    responses.put(f"{URL}/consumers/old", status=308, json=guest.failover_body(),
                  headers={"Location": "/candlepin/consumers/new"})
    mock_successor(responses.mock)
    result = guest.agent.checkin()
    assert result.uuid == "new" and result.failed_over_from == "old"
    ident = guest.agent.identity.load(full=True)
    assert ident.uuid == "new"
    assert ident.failed_over_from == "old" and ident.failover_time
    assert ident.name == "vm1"
    assert guest.agent.identity.key_pem() == key_before  # no key crossed the wire
    assert guest.agent.entitlements.serials() == {7}  # predecessor's 5 removed
    calls = [f"{c.request.method} {c.request.path_url}" for c in responses.calls]
    assert calls[0] == "PUT /candlepin/consumers/old"
    assert "GET /candlepin/consumers/new/certificates?serials=7" in calls
    assert calls.count("PUT /candlepin/consumers/new") >= 1  # the retried request
    # the successor got this guest's facts
    sent = [json.loads(c.request.body) for c in responses.calls if c.request.method == "PUT" and c.request.body]
    assert any(b.get("facts", {}).get("virt.uuid") == VIRT.lower() for b in sent)


@responses.activate
def test_server_sent_key_replaces_the_local_key(guest: Registered) -> None:
    k2 = new_key()
    body = guest.failover_body(cert=guest.ca.issue("new", k2.public_key()), key=key_pem(k2))
    responses.get(f"{URL}/consumers/old/compliance", status=308, json=body)
    mock_successor(responses.mock)
    responses.get(f"{URL}/consumers/new/compliance", json={"status": "valid"})
    assert guest.agent.compliance() == {"status": "valid"}
    assert guest.agent.identity.key_pem() == key_pem(k2)
    assert guest.agent.identity.load(full=True).key_origin == "server"


def _forgeries(g: Registered) -> dict[str, tuple[dict[str, Any], str]]:
    other_ca = CertAuthority()
    other_key = new_key()
    old_start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
    malformed = g.failover_body()
    del malformed["failover"]["consumer"]
    return {
        "other CA": (g.failover_body(cert=other_ca.issue("new", g.key.public_key())), "not issued by the configured CA"),
        "other key": (g.failover_body(cert=g.ca.issue("new", other_key.public_key())), "not for this system's key"),
        "sent key mismatch": (g.failover_body(key=key_pem(other_key)), "key sent does not match"),
        "CN mismatch": (g.failover_body(cert=g.ca.issue("someone-else", g.key.public_key())), "not the successor"),
        "expired": (g.failover_body(cert=g.ca.issue("new", g.key.public_key(), start=old_start, days=1)), "expired"),
        "virt.uuid": (g.failover_body(virt="11111111-2222-3333-4444-555555555555"), "virt.uuid"),
        "malformed": (malformed, "malformed"),
        "not for us": (g.failover_body(frm="somebody"), "this system is old"),
        "garbage cert": (g.failover_body(cert=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "does not parse"),
    }


@pytest.mark.parametrize("case", ["other CA", "other key", "sent key mismatch", "CN mismatch", "expired",
                                  "virt.uuid", "malformed", "not for us", "garbage cert"])
def test_forged_or_bad_failover_is_refused_and_changes_nothing(guest: Registered, case: str) -> None:
    body, message = _forgeries(guest)[case]
    before = guest.snapshot()
    with responses.RequestsMock() as rsps:
        rsps.put(f"{URL}/consumers/old", status=308, json=body)
        with pytest.raises(FailoverError, match=message):
            guest.agent.checkin()
        assert len(rsps.calls) == 1  # no refresh, no retry
    assert guest.snapshot() == before


@responses.activate
def test_lease_hook_refusal_changes_nothing(tmp_path: Path) -> None:
    g = Registered(tmp_path)
    claimed: list[tuple[str, str]] = []

    def claim(frm: str, to: str, consumer: Mapping[str, Any]) -> None:
        claimed.append((frm, to))
        raise FailoverError("the successor's lease is held by another instance")

    agent = Agent(load_config(g.conf), lease_claim=claim)
    before = g.snapshot()
    responses.put(f"{URL}/consumers/old", status=308, json=g.failover_body())
    with pytest.raises(FailoverError, match="lease is held"):
        agent.checkin()
    assert claimed == [("old", "new")]
    assert g.snapshot() == before


@responses.activate
def test_cli_checkin_then_identity_shows_failover(guest: Registered) -> None:
    responses.put(f"{URL}/consumers/old", status=308, json=guest.failover_body())
    mock_successor(responses.mock)
    runner = Runner()
    res = runner.invoke(cli, ["--config", str(guest.conf), "checkin"])
    assert res.exit_code == 0, res.output
    assert "Failed over from old to new" in res.output
    res = runner.invoke(cli, ["--config", str(guest.conf), "identity", "--json"])
    data = json.loads(res.stdout)
    assert data["uuid"] == "new" and data["failed_over_from"] == "old"


@responses.activate
def test_cli_forged_failover_exit_69_with_clear_message(guest: Registered) -> None:
    other = CertAuthority()
    responses.put(f"{URL}/consumers/old", status=308,
                  json=guest.failover_body(cert=other.issue("new", guest.key.public_key())))
    before = guest.snapshot()
    res = Runner().invoke(cli, ["--config", str(guest.conf), "checkin"])
    assert res.exit_code == 69
    assert "failover refused: the successor's certificate is not issued by the configured CA" in res.stderr
    assert guest.snapshot() == before


@responses.activate
def test_a_second_failover_after_the_swap_is_an_error_and_the_call_is_not_repeated_again(guest: Registered) -> None:
    responses.put(f"{URL}/consumers/old", status=308, json=guest.failover_body())
    mock_successor(responses.mock)
    responses.replace(responses.PUT, f"{URL}/consumers/new", status=308,
                      json={"failover": {"from": "new", "to": "newer", "consumer": {}}})
    with pytest.raises(FailoverError, match="another failover") as info:
        guest.agent.checkin()
    assert info.value.to_uuid == "newer"
    puts = [c.request.path_url for c in responses.calls if c.request.method == "PUT"]
    assert puts == ["/candlepin/consumers/old", "/candlepin/consumers/new"]
    assert guest.agent.identity.load().uuid == "new"  # the first failover stands


@responses.activate
def test_cli_checkin_counts_the_certificates_the_failover_installed(guest: Registered) -> None:
    responses.put(f"{URL}/consumers/old", status=308, json=guest.failover_body())
    mock_successor(responses.mock)
    res = Runner().invoke(cli, ["--config", str(guest.conf), "checkin"])
    assert res.exit_code == 0, res.output
    assert "entitlement certificates: 1 added, 1 removed" in res.output  # 7 installed, the predecessor's 5 gone
    res = Runner().invoke(cli, ["--config", str(guest.conf), "checkin", "--json"])
    again = json.loads(res.stdout)
    assert again["failed_over_from"] is None and again["entitlements"]["added"] == []
