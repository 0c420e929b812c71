"""Environments: an org's places that content is promoted to; a consumer in them gets only that content,
in its content access certificate (SCA) and in its entitlement certificates alike."""

from __future__ import annotations

from pathlib import Path

from rhsm.certificate import create_from_pem

from tests.conftest import FtmockServer
from tests.ftmock.conftest import Registered, admin_client, register
from tests.ftmock.test_content_access import BASEOS, access_cert, content_product
from tests.kit.orgs import ENTITLEMENT, new_org

APPSTREAM = "/content/dist/el9/$releasever/$basearch/appstream/os"


def _environment(server: FtmockServer, org: str, name: str, content: dict[str, bool | None]) -> str:
    """An environment of ``org`` named ``name`` with content promoted to it; its id (ids are the server's)."""
    env_id = f"{name}-{org}"
    r = admin_client(server).post(f"/owners/{org}/environments", json={
        "id": env_id, "name": name.title(), "description": f"the {name} stage",
        "environmentContent": [{"contentId": c, **({} if e is None else {"enabled": e})} for c, e in content.items()]})
    assert r.status_code == 200, r.text
    assert r.json()["owner"]["key"] == org and r.json()["id"] == env_id
    return env_id


def _labels(reg: Registered) -> dict[str, bool]:
    return {c.label: c.enabled for c in access_cert(reg).content}


def test_environments_are_listed_and_named(server: FtmockServer, org: str, tmp_path: Path) -> None:
    dev = _environment(server, org, "dev", {"EL-el9-baseos": True})
    prod = _environment(server, org, "prod", {})
    reg = register(server, tmp_path, org, name="lister")
    listed = reg.client.get(f"/owners/{org}/environments").json()
    assert [e["name"] for e in listed] == ["Dev", "Prod"]
    assert listed[0]["environmentContent"] == [{"contentId": "EL-el9-baseos", "enabled": True}]
    assert [e["id"] for e in reg.client.get(f"/owners/{org}/environments?name=Prod").json()] == [prod]
    assert reg.client.get(f"/environments/{dev}").json()["description"] == "the dev stage"
    admin = admin_client(server)
    assert admin.post(f"/owners/{org}/environments", json={"id": dev, "name": "again"}).status_code == 400
    assert admin.post(f"/owners/{org}/environments", json={"name": "Dev"}).status_code == 400
    other = new_org(server)
    assert register(server, tmp_path, other, name="stranger").client.get(f"/environments/{dev}").status_code == 403


def test_sca_content_follows_the_consumers_environments(server: FtmockServer, org: str, tmp_path: Path) -> None:
    content_product(server, org, "EL", {"el9-baseos": BASEOS, "el9-appstream": APPSTREAM})
    dev = _environment(server, org, "dev", {"EL-el9-baseos": None, "EL-el9-appstream": False})
    qa = _environment(server, org, "qa", {"EL-el9-appstream": True})
    plain = register(server, tmp_path, org, name="everywhere")
    assert _labels(plain) == {"el9-baseos": True, "el9-appstream": True}
    r = admin_client(server).post(f"/environments/{dev}/consumers", json={"name": "in-dev", "facts": {}})
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()["environments"]] == [dev] and r.json()["environment"]["id"] == dev
    reg = register(server, tmp_path, org, name="mover")
    assert reg.client.put(f"/consumers/{reg.uuid}", json={"environments": [{"id": dev}]}).status_code == 204
    assert _labels(reg) == {"el9-baseos": True, "el9-appstream": False}  # the promotion's enabled wins
    # Several environments: the first that names a content set decides.
    assert reg.client.put(f"/consumers/{reg.uuid}", json={"environments": [{"id": qa}, {"id": dev}]}).status_code == 204
    assert _labels(reg) == {"el9-baseos": True, "el9-appstream": True}
    assert [e["id"] for e in reg.client.get(f"/consumers/{reg.uuid}").json()["environments"]] == [qa, dev]
    # An environment of another org, or none that exists: refused, nothing changed.
    elsewhere = _environment(server, new_org(server), "elsewhere", {})
    for bad in ([{"id": elsewhere}], [{"id": "nope"}]):
        assert reg.client.put(f"/consumers/{reg.uuid}", json={"environments": bad}).status_code == 404
    # Deleting an environment takes its consumers out of it; with none left, all of the org's content.
    admin = admin_client(server)
    assert admin.delete(f"/environments/{qa}").status_code == 204
    assert _labels(reg) == {"el9-baseos": True, "el9-appstream": False}
    assert admin.delete(f"/environments/{dev}").status_code == 204
    assert _labels(reg) == {"el9-baseos": True, "el9-appstream": True}
    assert reg.client.get(f"/consumers/{reg.uuid}").json()["environments"] == []


def test_entitlement_certificates_follow_the_environments_too(server: FtmockServer, tmp_path: Path) -> None:
    org = new_org(server, mode=ENTITLEMENT)
    pool = content_product(server, org, "EL", {"el9-baseos": BASEOS, "el9-appstream": APPSTREAM})
    dev = _environment(server, org, "dev", {"EL-el9-baseos": None})
    reg = register(server, tmp_path, org, name="entitled")
    assert reg.client.post(f"/consumers/{reg.uuid}/entitlements?pool={pool}").status_code == 200

    def labels() -> list[str]:
        [cert] = reg.client.get(f"/consumers/{reg.uuid}/certificates").json()
        return sorted(c.label for c in create_from_pem(cert["cert"]).content)

    assert labels() == ["el9-appstream", "el9-baseos"]
    assert reg.client.put(f"/consumers/{reg.uuid}", json={"environments": [{"id": dev}]}).status_code == 204
    assert labels() == ["el9-baseos"]  # reissued at once
