"""subscription-manager's whole command set through python-rhsm 1.19.2's UEPConnection, against ftmock
over mutual TLS, in an SCA org and in an entitlement-mode org.

Every call the commands make (release, service level, system purpose, autoheal, check-in, guest ids,
package profiles, environments, owner info and hypervisors, a single entitlement and product,
accessible content, content overrides) is made with the client's own code, and each answer is kept:
the test then replays on every answer the reads subscription-manager 1.29's code makes of its DTO,
with the same direct indexing (``status['compliantUntil']``, ``consumer['releaseVer']['releaseVer']``,
``owner['contentAccessMode']``, ``consumer['idCert']['serial']['serial']``...), so a key ftmock left out
is a KeyError here as it was one in subscription-manager. The run prints each python-rhsm call with
its state.

Two calls go below UEPConnection, as subscription-manager 1.29's own connection code makes them and
1.19.2's does not: system purpose (``role``, ``usage``, ``addOns``, ``serviceType`` in
``updateConsumer``) and the combined profile upload (``PUT /consumers/{uuid}/profiles``); both go
through the same UEPConnection's ``conn`` (its Restlib, its TLS, its JSON).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rhsm.connection as rc

from tests.conftest import FtmockServer
from tests.dnfkit import CONTENT_LABEL, CONTENT_PATH, RELEASES
from tests.ftmock.conftest import admin_client, checkin, hypervisor
from tests.kit.orgs import ENTITLEMENT, SCA, new_org
from tests.kit.rhsmhost import python_rhsm

PACKAGES = [{"name": "bash", "version": "5.1.8", "release": "9.el9", "arch": "x86_64", "epoch": 0,
             "vendor": "Red Hat, Inc."},
            {"name": "kernel", "version": "5.14.0", "release": "427.el9", "arch": "x86_64", "epoch": None,
             "vendor": "Red Hat, Inc."}]


# -- subscription-manager's reads of each DTO, as its code indexes them -------------------------------

def _consumer_reads(c: dict[str, Any]) -> None:
    c["uuid"], c["name"], c["facts"], c["owner"]["key"], c["type"]["label"]
    c["releaseVer"]["releaseVer"]  # release --show
    c["serviceLevel"], c["serviceType"], c["role"], c["usage"], c["addOns"]  # service-level, syspurpose sync
    c["autoheal"]  # the autoheal action and `autoheal --show`
    for product in c["installedProducts"]:
        product["productId"]
    c["idCert"]["serial"]["serial"]  # rhsmcertd's identity check: a new serial is installed
    c["environments"], c["environment"]  # identity: MULTI_ENV servers' list, older ones' single
    for env in c["environments"] or []:
        env["name"]
    c["guestIds"], c["entitlementStatus"], c["lastCheckin"], c["hypervisorId"], c["contentAccessMode"]


def _listed_consumer_reads(c: dict[str, Any]) -> None:
    """A consumer of a listing (an org's consumers, its hypervisors): virt-who and the tools read these."""
    c["uuid"], c["name"], c["type"]["label"], c["hypervisorId"], c["guestIds"], c["lastCheckin"], c["facts"]


def _compliance_reads(s: dict[str, Any]) -> None:
    s["status"], s["compliant"], s["date"], s["reasons"]
    s["compliantUntil"]  # cert_sorter: `if status['compliantUntil'] is not None`
    s["nonCompliantProducts"], s["partiallyCompliantProducts"], s["compliantProducts"], s["partialStacks"]
    for reason in s["reasons"]:
        reason["key"], reason["message"], reason["attributes"]


def _owner_reads(o: dict[str, Any]) -> None:
    o["key"], o["displayName"]
    o["contentAccessMode"]  # show_autosubscribe_output, the yum plugins
    o["contentAccessModeList"], o["defaultServiceLevel"]


def _release_reads(r: dict[str, Any]) -> None:
    r["releaseVer"]


def _pool_reads(p: dict[str, Any]) -> None:
    p["id"], p["productName"], p["productId"], p["quantity"], p["consumed"], p["exported"], p["startDate"]
    p["endDate"], p["attributes"], p["productAttributes"], p["providedProducts"], p["contractNumber"]
    p["accountNumber"], p["calculatedAttributes"], p["subscriptionId"]


def _entitlement_reads(e: dict[str, Any]) -> None:
    e["id"], e["quantity"], e["startDate"], e["endDate"], e["certificates"]
    _pool_reads(e["pool"])


def _environment_reads(e: dict[str, Any]) -> None:
    e["id"], e["name"], e["description"]


def _certificate_reads(c: dict[str, Any]) -> None:
    c["cert"], c["key"], c["serial"]["serial"], c["serial"]["expiration"]


def _status_reads(s: dict[str, Any]) -> None:
    s["managerCapabilities"], s["version"], s["release"], s["rulesVersion"], s["result"]


def _product_reads(p: dict[str, Any]) -> None:
    p["id"], p["name"], p["attributes"], p["productContent"], p["providedProducts"]


def _guest_reads(g: dict[str, Any]) -> None:
    g["guestId"], g["attributes"]


READS: dict[str, Callable[[dict[str, Any]], None]] = {
    "consumer": _consumer_reads, "listed consumer": _listed_consumer_reads, "compliance": _compliance_reads, "owner": _owner_reads,
    "release": _release_reads, "pool": _pool_reads, "entitlement": _entitlement_reads,
    "environment": _environment_reads, "certificate": _certificate_reads, "status": _status_reads,
    "product": _product_reads, "guest": _guest_reads,
}


@dataclass
class Run:
    """Each python-rhsm call made, with its outcome, and each answer with the DTO it is."""

    calls: dict[str, str] = field(default_factory=dict)
    answers: list[tuple[str, str, Any]] = field(default_factory=list)

    def call(self, name: str, fn: Callable[[], Any], kind: str | None = None) -> Any:
        result = fn()
        self.calls[name] = "works"
        if kind is not None:
            for item in result if isinstance(result, list) else [result]:
                self.answers.append((name, kind, item))
        return result

    def refused(self, name: str, fn: Callable[[], Any], code: int) -> None:
        with pytest.raises(rc.RestlibException) as refused:
            fn()
        assert refused.value.code == code, name
        self.calls.setdefault(name, f"works; {code} where Candlepin refuses it too")


@pytest.fixture
def common(cdn_server: FtmockServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    shutil.copy(cdn_server.ca_path, ca_dir / "ftmock-ca.pem")
    with python_rhsm(cdn_server, ca_dir) as args:
        yield args


def _setup(server: FtmockServer, mode: str) -> tuple[str, dict[str, str]]:
    """An org with a subscription offering the CDN's test content and a service level; its pools."""
    org = new_org(server, mode=mode)
    admin = admin_client(server)
    for body in ({"id": "479", "name": "Guest Linux", "attributes": {"version": "9"}, "productContent": [
                     {"content": {"id": "c-test", "label": CONTENT_LABEL, "contentUrl": CONTENT_PATH}, "enabled": True}]},
                 {"id": "GL-SUB", "name": "Guest Linux Premium", "providedProducts": ["479"],
                  "attributes": {"support_level": "Premium", "support_type": "L1-L3", "roles": "Server",
                                 "usage": "Production", "addons": "ADDON1"}}):
        assert admin.post(f"/owners/{org}/products", json=body).status_code == 200
    pool = admin.post(f"/owners/{org}/pools", json={"productId": "GL-SUB", "quantity": 10})
    assert pool.status_code == 200, pool.text
    env = admin.post(f"/owners/{org}/environments", json={
        "id": f"dev-{org}", "name": "Dev", "description": "development",
        "environmentContent": [{"contentId": "c-test", "enabled": True}]})
    assert env.status_code == 200, env.text
    checkin(server, org, {"hypervisors": [hypervisor("esx-compat", ["guest-compat"])]})
    return org, {"GL-SUB": pool.json()["id"]}


@pytest.mark.parametrize("mode", [SCA, ENTITLEMENT])
def test_subscription_managers_calls_through_python_rhsm(cdn_server: FtmockServer, common: dict[str, Any],
                                                         tmp_path: Path, mode: str) -> None:
    org, pools = _setup(cdn_server, mode)
    run = Run()
    admin = rc.UEPConnection(username="admin", password=cdn_server.admin_password, **common)
    run.call("getStatus", admin.getStatus, "status")
    run.call("getOwnerList", lambda: admin.getOwnerList("admin"), "owner")
    run.call("getOwners", admin.getOwners, "owner")

    # register (the server makes the key: python-rhsm sends no CSR), then everything as the consumer
    installed = [{"productId": "479", "productName": "Guest Linux", "version": "9", "arch": "x86_64"}]
    consumer = run.call("registerConsumer", lambda: admin.registerConsumer(
        name="compat-guest", type="system", owner=org, installed_products=installed,
        facts={"virt.uuid": "6a7b8c9d-0000-1111-2222-333344445555", "virt.is_guest": "true"}), "consumer")
    uuid = consumer["uuid"]
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_text(consumer["idCert"]["cert"])
    key_file.write_text(consumer["idCert"]["key"])
    me = rc.UEPConnection(cert_file=str(cert_file), key_file=str(key_file), **common)
    assert run.call("getConsumer", lambda: me.getConsumer(uuid), "consumer")["owner"]["contentAccessMode"] == mode
    run.call("getOwner", lambda: me.getOwner(uuid), "owner")
    run.call("getCompliance", lambda: me.getCompliance(uuid), "compliance")

    # check-in and identity
    back = run.call("checkin", lambda: me.checkin(uuid), "consumer")
    assert back["uuid"] == uuid and back["idCert"]["serial"]["serial"] == consumer["idCert"]["serial"]["serial"]

    # entitlements: bind by pool (older clients in SCA too), one entitlement, a product
    [ent] = run.call("bindByEntitlementPool", lambda: me.bindByEntitlementPool(uuid, pools["GL-SUB"]), "entitlement")
    run.call("getEntitlementList", lambda: me.getEntitlementList(uuid), "entitlement")
    assert run.call("getEntitlement", lambda: me.getEntitlement(ent["id"]), "entitlement")["pool"]["id"] == pools["GL-SUB"]
    product_uuid = admin.conn.request_get(f"/owners/{org}/products")[0]["uuid"]
    assert run.call("getProduct", lambda: me.getProduct(product_uuid), "product")["uuid"] == product_uuid
    run.call("getPoolsList", lambda: me.getPoolsList(consumer=uuid, owner=org), "pool")
    run.call("getCertificates", lambda: me.getCertificates(uuid), "certificate")

    # release: the CDN's listings beside $releasever in the granted content
    assert run.call("getRelease", lambda: me.getRelease(uuid), "release") == {"releaseVer": None}
    assert run.call("getAvailableReleases", lambda: me.getAvailableReleases(uuid)) == list(RELEASES)
    run.call("updateConsumer(release=)", lambda: me.updateConsumer(uuid, release=RELEASES[1]))
    assert me.getRelease(uuid) == {"releaseVer": RELEASES[1]}

    # service level, autoheal and the rest of system purpose
    assert run.call("getServiceLevelList", lambda: me.getServiceLevelList(org)) == ["Premium"]
    run.call("updateConsumer(service_level=)", lambda: me.updateConsumer(uuid, service_level="Premium"))
    run.refused("updateConsumer(service_level=) unknown", lambda: me.updateConsumer(uuid, service_level="Gold"), 400)
    run.call("updateConsumer(autoheal=)", lambda: me.updateConsumer(uuid, autoheal=False))
    purpose = {"role": "Server", "usage": "Production", "addOns": ["ADDON1"], "serviceType": "L1-L3"}
    run.call("updateConsumer(role=, usage=, addons=, service_type=) [1.29's, via conn]",
             lambda: me.conn.request_put(f"/consumers/{uuid}", purpose))
    now = me.getConsumer(uuid)
    assert (now["serviceLevel"], now["autoheal"], now["releaseVer"]) == ("Premium", False, {"releaseVer": RELEASES[1]})
    assert {k: now[k] for k in purpose} == purpose

    # guest ids (python-rhsm sends whole GuestIdDTOs: the server lists the guestids resource)
    assert me.supports_resource("guestids")
    run.call("updateConsumer(guest_uuids=)", lambda: me.updateConsumer(
        uuid, guest_uuids=[{"guestId": "nested-1", "attributes": {"active": 1, "virtWhoType": "libvirt"}}]))
    run.call("getGuestIds", lambda: me.getGuestIds(uuid), "guest")
    run.call("addOrUpdateGuestId", lambda: me.addOrUpdateGuestId(uuid, "nested-2"))
    assert run.call("getGuestId", lambda: me.getGuestId(uuid, "NESTED-2"), "guest")["guestId"] == "nested-2"
    run.call("removeGuestId", lambda: me.removeGuestId(uuid, "nested-2"))
    assert [g["guestId"] for g in me.getGuestIds(uuid)] == ["nested-1"]
    assert me.getGuestIds(uuid)[0]["attributes"] == {"active": "1", "virtWhoType": "libvirt"}

    # package profiles: what was put is what is read back
    run.call("updatePackageProfile", lambda: me.updatePackageProfile(uuid, PACKAGES))
    assert me.conn.request_get(f"/consumers/{uuid}/packages") == PACKAGES
    combined = [{"profile_type": "rpm", "profile": PACKAGES[:1]},
                {"profile_type": "enabled_repos", "profile": [{"repositoryid": CONTENT_LABEL, "baseurl": ["x"]}]}]
    run.call("updateCombinedProfile [1.29's, via conn]", lambda: me.conn.request_put(f"/consumers/{uuid}/profiles",
                                                                                     combined))
    assert me.conn.request_get(f"/consumers/{uuid}/packages") == PACKAGES[:1]

    # content: accessible content (SCA only, as Candlepin), overrides
    if mode == SCA:
        listing = run.call("getAccessibleContent", lambda: me.getAccessibleContent(uuid))
        assert listing["contentListing"] and listing["lastUpdate"]
    else:
        run.refused("getAccessibleContent", lambda: me.getAccessibleContent(uuid), 400)
    run.call("setContentOverrides", lambda: me.setContentOverrides(
        uuid, [{"contentLabel": CONTENT_LABEL, "name": "enabled", "value": "0"}]))
    assert [o["value"] for o in run.call("getContentOverrides", lambda: me.getContentOverrides(uuid))] == ["0"]
    run.call("deleteContentOverrides", lambda: me.deleteContentOverrides(uuid))
    assert me.getContentOverrides(uuid) == []

    # environments: listed, found by name, registered into (python-rhsm's /environments/{id}/consumers)
    envs = run.call("getEnvironmentList", lambda: me.getEnvironmentList(org), "environment")
    env = run.call("getEnvironment", lambda: admin.getEnvironment(owner_key=org, name="Dev"), "environment")
    assert [e["id"] for e in envs] == [env["id"]]
    in_env = run.call("registerConsumer(environment=)", lambda: admin.registerConsumer(
        name="compat-dev", type="system", facts={}, environment=env["id"]), "consumer")
    assert [e["id"] for e in in_env["environments"]] == [env["id"]] and in_env["owner"]["key"] == org

    # owner-level calls are a user's, as in Candlepin
    info = run.call("getOwnerInfo", lambda: admin.getOwnerInfo(org))
    assert info["consumerCounts"]["system"] == 2 and info["consumerCounts"]["hypervisor"] == 1
    run.refused("getOwnerInfo", lambda: me.getOwnerInfo(org), 403)
    hosts = run.call("getOwnerHypervisors", lambda: admin.getOwnerHypervisors(org, ["esx-compat"]),
                     "listed consumer")
    assert [h["name"] for h in hosts] == ["esx-compat"]
    run.refused("getOwnerHypervisors", lambda: me.getOwnerHypervisors(org), 403)
    assert run.call("getConsumers", lambda: admin.getConsumers(owner=org), "listed consumer")

    # the rest of the command set: regenerate identity and entitlement certificates, unbind, unregister
    run.call("regenEntitlementCertificates", lambda: me.regenEntitlementCertificates(uuid))
    run.call("unbindAll", lambda: me.unbindAll(uuid))
    renewed = run.call("regenIdCertificate", lambda: me.regenIdCertificate(uuid), "consumer")
    cert_file.write_text(renewed["idCert"]["cert"])
    key_file.write_text(renewed["idCert"]["key"])
    me = rc.UEPConnection(cert_file=str(cert_file), key_file=str(key_file), **common)
    run.call("getConsumer (after regeneration)", lambda: me.getConsumer(uuid), "consumer")
    run.call("unregisterConsumer", lambda: me.unregisterConsumer(uuid))

    # subscription-manager's reads, replayed on every answer of their DTO
    replayed = 0
    for name, kind, answer in run.answers:
        try:
            READS[kind](answer)
        except (KeyError, TypeError) as exc:
            raise AssertionError(f"subscription-manager's read of {name}'s {kind} fails: {exc!r}") from exc
        replayed += 1
    assert {kind for _, kind, _ in run.answers} == set(READS)
    width = max(len(n) for n in run.calls)
    print(f"\npython-rhsm 1.19.2 against ftmock ({mode} org): {len(run.calls)} calls, {replayed} answers replayed "
          "through subscription-manager's reads")
    for name, state in run.calls.items():
        print(f"  {name:<{width}}  {state}")
