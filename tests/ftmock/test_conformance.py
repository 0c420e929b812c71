"""ftmock answers as Candlepin's own API description says Candlepin does.

A scenario drives a real ftmock over HTTPS through every Candlepin route it serves (the FT and lease
additions, which docs/design.md defines, aside), in an entitlement-mode org and in an SCA org, and
records every answer. Each answer is then checked against `data/candlepin-api-spec.yaml` (Candlepin
5.0.3, OpenAPI 3): the path and method exist, the status code is one the description lists, and the
JSON body validates against the operation's schema (types, formats, nested DTOs) with **every
property of every DTO present**, as Candlepin's serialisation writes them (``null`` where there is
no value); the fields Candlepin clients read are also non-null. Satellite's calls that Candlepin 5
does not have (check-in, available releases, package profiles) are checked against the shapes in
`SATELLITE`. The deliberate differences are in `KNOWN_DIFFERENCES` and in docs/ftmock.md.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ftmock.api import PREFIX, Api
from ftmock.ca import CertificateAuthority
from ftmock.store import Database
from tests.conftest import FtmockServer
from tests.dnfkit import CONTENT_LABEL, CONTENT_PATH, RELEASES
from tests.ftmock.conftest import Client, admin_client, hypervisor, make_key_and_csr
from tests.kit.ftmock import finished_job

SPEC_PATH = Path(__file__).parent / "data" / "candlepin-api-spec.yaml"

# Fields Candlepin clients (python-rhsm, subscription-manager, virt-who) read: required here, on top
# of what the description itself requires (it marks almost nothing required).
CLIENT_READS: dict[str, list[str]] = {
    "StatusDTO": ["result", "version", "release", "standalone", "managerCapabilities", "timeUTC", "mode"],
    "OwnerDTO": ["id", "key", "displayName", "contentAccessMode", "contentAccessModeList"],
    "NestedOwnerDTO": ["id", "key", "displayName", "href"],
    "ConsumerDTO": ["id", "uuid", "name", "owner", "type", "facts", "installedProducts", "created", "updated",
                    "environments", "contentAccessMode", "entitlementStatus", "guestIds", "capabilities", "href",
                    "serviceType", "role", "usage", "addOns", "serviceLevel", "autoheal", "releaseVer"],
    "ConsumerDTOArrayElement": ["id", "uuid", "name", "type", "created", "contentAccessMode", "href"],
    "ConsumerTypeDTO": ["label", "manifest"],
    "CertificateDTO": ["id", "cert", "serial"],
    "CertificateSerialDTO": ["id", "serial", "expiration", "revoked"],
    "EntitlementDTO": ["id", "consumer", "pool", "quantity", "certificates", "startDate", "endDate"],
    "PoolDTO": ["id", "owner", "type", "productId", "productName", "quantity", "consumed", "exported",
                "startDate", "endDate", "attributes", "productAttributes", "providedProducts",
                "calculatedAttributes", "subscriptionId", "contractNumber", "href"],
    "ProvidedProductDTO": ["productId", "productName"],
    "ComplianceStatusDTO": ["status", "compliant", "date", "compliantProducts", "partiallyCompliantProducts",
                            "partialStacks", "nonCompliantProducts", "reasons", "productComplianceDateRanges"],
    "AsyncJobStatusDTO": ["id", "key", "name", "state", "statusPath", "principal", "created", "updated"],
    "ProductDTO": ["id", "name", "attributes", "productContent", "providedProducts"],
    "ProductContentDTO": ["content", "enabled"],
    "ContentDTO": ["id", "type", "label", "name", "contentUrl"],
    "ActivationKeyDTO": ["id", "name", "owner", "autoAttach", "pools"],
    "PoolQuantityDTO": ["pool", "quantity"],
    "DeleteResult": ["deletedRecords"],
    "Link": ["rel", "href"],
    "ContentAccessDTO": ["contentAccessMode", "contentAccessModeList"],
    "ContentOverrideDTO": ["contentLabel", "name", "value"],
    "ExceptionMessage": ["displayMessage"],
}

# Where ftmock answers differently from the description, on purpose (also in docs/ftmock.md).
KNOWN_DIFFERENCES = {
    # The description types bind's answer as text/plain; Candlepin (and ftmock) answer with the JSON
    # list of created entitlements, which python-rhsm and subscription-manager parse.
    ("POST", "/consumers/{consumer_uuid}/entitlements"): {
        "type": "array", "items": {"$ref": "#/components/schemas/EntitlementDTO"}},
    # The description types the content access body as text/plain; Candlepin answers with a JSON
    # listing (serial -> [certificate, entitlement data and signature]) that subscription-manager reads.
    ("GET", "/consumers/{consumer_uuid}/accessible_content"): {
        "type": "object", "required": ["contentListing", "lastUpdate"],
        "properties": {"contentListing": {"type": "object", "additionalProperties": {
                           "type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}},
                       "lastUpdate": {"type": "string", "format": "date-time"}}},
}

# Satellite's calls that Candlepin 5 does not serve (python-rhsm and subscription-manager make them):
# the shapes Satellite answers with. PUT /consumers/{uuid}/packages is in Candlepin's description
# only as "501 not implemented"; ftmock stores the profile, as Satellite does.
_PACKAGE = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
SATELLITE: dict[tuple[str, str], dict[str, Any] | None] = {
    ("PUT", "/consumers/{uuid}/checkin"): {"$ref": "#/components/schemas/ConsumerDTO"},
    ("GET", "/consumers/{uuid}/available_releases"): {"type": "array", "items": {"type": "string"}},
    ("GET", "/consumers/{uuid}/packages"): {"type": "array", "items": _PACKAGE},
    ("PUT", "/consumers/{uuid}/packages"): None,
    ("GET", "/consumers/{uuid}/profiles"): {"type": "array", "items": {
        "type": "object", "required": ["profile_type", "profile"], "properties": {"profile_type": {"type": "string"}}}},
    ("PUT", "/consumers/{uuid}/profiles"): None,
}

# A guest asking for its host gets the reduced view (no facts, no identity certificate) that the
# description defines as ConsumerDTOArrayElement; users get the full ConsumerDTO.
GUEST_HOST_VIEW = {"$ref": "#/components/schemas/ConsumerDTOArrayElement"}

# A void JAX-RS method answers 204 although the description documents "200" without a body.
VOID_200_AS_204 = True


@dataclass
class Exchange:
    method: str
    path: str  # under /candlepin, without the query
    status: int
    body: Any
    as_consumer: bool = False


class Recorder:
    """A Client wrapper that keeps every request and answer."""

    def __init__(self, client: Client, log: list[Exchange]) -> None:
        self.client = client
        self.log = log

    def call(self, method: str, path: str, expect: int | None = None, **kw: Any) -> Any:
        r = self.client.call(method, path, **kw)
        body = r.json() if r.content and r.headers.get("Content-Type", "").startswith("application/json") else None
        self.log.append(Exchange(method, path.split("?", 1)[0], r.status_code, body,
                                 as_consumer=self.client.session.cert is not None))
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text[:300]}"
        return body


def _template_regex(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "/?$")


def _spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def _schemas_for_answers(spec: dict[str, Any]) -> dict[str, Any]:
    """The description's schemas as answers must meet them: every property present (nullable), and
    the ones in CLIENT_READS present and not null."""
    schemas = copy.deepcopy(spec["components"]["schemas"])
    for name, fields in CLIENT_READS.items():
        schema = schemas[name]
        parts = schema.get("allOf", [schema])
        missing = [f for f in fields if not any(
            f in (schemas[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p).get("properties", {}) for p in parts)]
        assert not missing, f"{name}: {missing} are not fields of the description"
    for name, schema in schemas.items():
        reads = set(CLIENT_READS.get(name, ()))
        for part in schema.get("allOf", [schema]):
            props = part.get("properties")
            if not props:
                continue
            part["required"] = sorted(props)
            for key, prop in props.items():
                if key not in reads:
                    props[key] = {"anyOf": [{"type": "null"}, prop]}
    return schemas


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("date-time", raises=ValueError)
    def date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.tzinfo is not None  # RFC 3339 needs the offset

    return checker


class FieldCounter:
    """Counts the schema fields an answer exercised: (schema, field) pairs, and every value checked."""

    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas
        self.pairs: set[tuple[str, str]] = set()
        self.values = 0

    def walk(self, schema: dict[str, Any], value: Any, name: str = "") -> None:
        if "$ref" in schema:
            ref = schema["$ref"].rsplit("/", 1)[1]
            self.walk(self.schemas[ref], value, ref)
            return
        if "allOf" in schema or "anyOf" in schema:
            for part in schema.get("allOf") or schema["anyOf"]:
                self.walk(part, value, name)
            return
        if isinstance(value, dict):
            for key, sub in schema.get("properties", {}).items():
                if key in value:
                    self.pairs.add((name, key))
                    self.values += 1
                    self.walk(sub, value[key], name)
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for sub_value in value.values():
                    self.walk(extra, sub_value, name)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for item in value:
                self.walk(schema["items"], item, name)


def _wait_job(admin: Recorder, job: dict[str, Any]) -> dict[str, Any]:
    return finished_job(lambda job_id: admin.call("GET", f"/jobs/{job_id}", 200), job["id"])


def _scenario(server: FtmockServer, tmp: Path, log: list[Exchange]) -> None:
    """Every Candlepin route ftmock serves, driven as a user and as a consumer would."""
    anon = Recorder(Client(server), log)
    admin = Recorder(admin_client(server), log)
    anon.call("GET", "/", 200)
    anon.call("GET", "/status", 200)
    org = f"conf-{int(time.time() * 1000) % 10**9}"
    # Entitlement mode: the scenario binds, lists and removes entitlement certificates.
    admin.call("POST", "/owners", 200, json={"key": org, "displayName": "Conformance",
                                              "contentAccessMode": "entitlement"})
    admin.call("GET", "/owners", 200)
    admin.call("GET", f"/owners/{org}", 200)
    admin.call("GET", "/users/admin/owners", 200)
    admin.call("POST", f"/owners/{org}/products", 200, json={
        "id": "69", "name": "Server OS", "attributes": {"arch": "x86_64", "version": "9"},
        "productContent": [{"content": {"label": "os-base", "contentUrl": "/content/os/base"}, "enabled": True}]})
    admin.call("POST", f"/owners/{org}/products", 200, json={
        "id": "SKU", "name": "Server Subscription", "providedProducts": ["69"],
        "attributes": {"virt_limit": "4", "support_level": "Premium", "support_type": "L1-L3", "roles": "Server",
                       "usage": "Production", "addons": "Smart Management"}})
    admin.call("GET", f"/owners/{org}/products", 200)
    pool = admin.call("POST", f"/owners/{org}/pools", 200, json={"productId": "SKU", "quantity": 10})
    admin.call("GET", f"/owners/{org}/pools", 200)
    admin.call("POST", f"/owners/{org}/activation_keys", 200, json={"name": "ak", "pools": [pool["id"]]})
    admin.call("GET", f"/owners/{org}/activation_keys", 200)

    # A guest registers with a CSR, and another with an activation key (server key)
    key_pem, csr = make_key_and_csr("guest")
    facts = {"virt.uuid": "0f6a2f4e-1111-2222-3333-444455556666", "virt.is_guest": "true"}
    guest = admin.call("POST", f"/consumers?owner={org}", 200, json={
        "name": "guest", "type": {"label": "system"}, "facts": facts, "csr": csr,
        "installedProducts": [{"productId": "69", "productName": "Server OS"}]})
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    cert.write_text(guest["idCert"]["cert"])
    key.write_text(key_pem)
    me = Recorder(Client(server, cert=(str(cert), str(key))), log)
    uuid = guest["uuid"]
    keyed = anon.call("POST", f"/consumers?owner={org}&activation_keys=ak", 200,
                      json={"name": "keyed", "type": {"label": "system"}, "facts": {}})

    me.call("GET", f"/consumers/{uuid}", 200)
    me.call("PUT", f"/consumers/{uuid}", 204, json={"facts": {**facts, "cpu.cpu_socket(s)": "1"}})
    _purpose_scenario(me, admin, org, uuid)
    me.call("GET", f"/consumers/{uuid}/owner", 200)
    me.call("GET", f"/pools?consumer={uuid}", 200)
    me.call("GET", f"/owners/{org}/pools?consumer={uuid}", 200)
    me.call("GET", f"/pools/{pool['id']}", 200)
    me.call("GET", f"/consumers/{uuid}/entitlements/dry-run?service_level=", 200)
    me.call("GET", f"/consumers/{uuid}/compliance", 200)
    me.call("POST", f"/consumers/{uuid}/entitlements?pool={pool['id']}", 200)
    me.call("GET", f"/consumers/{uuid}/compliance", 200)  # valid now: compliantUntil
    serials = me.call("GET", f"/consumers/{uuid}/certificates/serials", 200)
    me.call("GET", f"/consumers/{uuid}/certificates", 200)
    me.call("GET", f"/consumers/{uuid}/certificates?serials={serials[0]['serial']}", 200)
    me.call("PUT", f"/consumers/{uuid}/certificates?lazy_regen=true", 204)
    ents = me.call("GET", f"/consumers/{uuid}/entitlements", 200)
    me.call("GET", f"/entitlements/{ents[0]['id']}", 200)
    me.call("GET", f"/products/{ents[0]['pool']['providedProducts'][0]['productId']}", 200)
    me.call("GET", f"/consumers/{uuid}/available_releases", 200)
    me.call("DELETE", f"/consumers/{uuid}/entitlements/{ents[0]['id']}", 204)
    me.call("POST", f"/consumers/{uuid}/entitlements?pool={pool['id']}", 200)
    serial = me.call("GET", f"/consumers/{uuid}/certificates/serials", 200)[0]["serial"]
    me.call("DELETE", f"/consumers/{uuid}/certificates/{serial}", 204)
    me.call("POST", f"/consumers/{uuid}/entitlements?pool={pool['id']}", 200)
    me.call("DELETE", f"/consumers/{uuid}/entitlements/pool/{pool['id']}", 204)
    me.call("POST", f"/consumers/{uuid}/entitlements?pool={pool['id']}", 200)
    me.call("DELETE", f"/consumers/{uuid}/entitlements", 200)
    me.call("POST", f"/consumers/{uuid}/entitlements", 200)  # auto-attach

    # Hypervisors: virt-who's asynchronous check-in and heartbeat, and a hypervisor registered by id
    report = {"hypervisors": [hypervisor("hyp-1", [{"guestId": facts["virt.uuid"], "state": 1, "attributes": {}}])]}
    job = admin.call("POST", f"/hypervisors/{org}?reporter_id=r1", 200, data=json.dumps(report),
                     headers={"Content-Type": "application/json"})
    _wait_job(admin, job)
    admin.call("PUT", f"/hypervisors/{org}/heartbeat?reporter_id=r1", 200)
    hyp = admin.call("POST", f"/consumers?owner={org}", 200, json={
        "name": "hyp-2", "type": {"label": "hypervisor"}, "hypervisorId": {"hypervisorId": "hyp-2"}, "facts": {}})
    admin.call("PUT", f"/consumers/{hyp['uuid']}", 204, json={"guestIds": [{"guestId": "guest-x"}]})
    hosts = admin.call("GET", f"/owners/{org}/consumers?type=hypervisor", 200)
    host = next(h for h in hosts if h["name"] == "hyp-1")
    admin.call("GET", f"/consumers/{host['uuid']}/guests", 200)
    me.call("GET", f"/consumers/{uuid}/host", 200)
    admin.call("GET", f"/consumers/{uuid}/host", 200)
    admin.call("GET", f"/consumers?owner={org}", 200)
    admin.call("GET", f"/owners/{org}/consumers", 200)
    admin.call("GET", f"/owners/{org}/info", 200)
    admin.call("GET", f"/owners/{org}/hypervisors", 200)
    admin.call("GET", f"/owners/{org}/hypervisors?hypervisor_id=hyp-1", 200)
    me.call("GET", f"/owners/{org}/info", 403)  # owner-level calls are a user's
    admin.call("GET", "/pools", 200)
    products = admin.call("GET", f"/owners/{org}/products", 200)
    admin.call("GET", f"/products/{products[0]['uuid']}", 200)
    _environment_scenario(me, admin, anon, org, uuid)

    _sca_scenario(server, tmp, admin, anon, log)

    # Identity regeneration, deletion, and the errors Candlepin documents
    me.call("POST", f"/consumers/{uuid}", 200, json={"csr": csr})
    admin.call("GET", "/consumers/no-such-consumer", 404)
    admin.call("GET", "/pools/no-such-pool", 404)
    admin.call("POST", "/owners", 400, json={"key": "bad key!"})
    admin.call("DELETE", f"/consumers/{keyed['uuid']}", 204)
    admin.call("GET", f"/consumers/{keyed['uuid']}", 410)


def _purpose_scenario(me: Recorder, admin: Recorder, org: str, uuid: str) -> None:
    """Release, system purpose, autoheal, check-in, package profiles and guest ids, as the consumer."""
    me.call("GET", f"/owners/{org}/servicelevels", 200)
    me.call("GET", f"/owners/{org}/system_purpose", 200)
    me.call("PUT", f"/consumers/{uuid}", 204, json={
        "releaseVer": "9", "serviceLevel": "premium", "role": "Server", "usage": "Production",
        "addOns": ["Smart Management"], "serviceType": "L1-L3", "autoheal": False})
    me.call("PUT", f"/consumers/{uuid}", 400, json={"serviceLevel": "Gold"})
    me.call("PUT", f"/consumers/{uuid}", 204, json={"releaseVer": {"releaseVer": "9.4"}})
    me.call("GET", f"/consumers/{uuid}/release", 200)
    me.call("PUT", f"/consumers/{uuid}/checkin", 200)
    me.call("PUT", f"/consumers/{uuid}/packages", 204, json=[
        {"name": "bash", "version": "5.1.8", "release": "9.el9", "arch": "x86_64", "epoch": 0, "vendor": "Red Hat"}])
    me.call("GET", f"/consumers/{uuid}/packages", 200)
    me.call("PUT", f"/consumers/{uuid}/profiles", 204, json=[
        {"profile_type": "rpm", "profile": [{"name": "bash", "version": "5.1.8", "release": "9.el9",
                                             "arch": "x86_64", "epoch": 0, "vendor": "Red Hat"}]},
        {"profile_type": "enabled_repos", "profile": [{"repositoryid": "os-base", "baseurl": ["https://cdn"]}]}])
    me.call("GET", f"/consumers/{uuid}/profiles", 200)
    me.call("PUT", f"/consumers/{uuid}/guestids", 204, json=[{"guestId": "nested-1", "attributes": {"active": 1}}])
    me.call("GET", f"/consumers/{uuid}/guestids", 200)
    me.call("PUT", f"/consumers/{uuid}/guestids/nested-2", 204, json={"guestId": "nested-2", "attributes": {}})
    me.call("GET", f"/consumers/{uuid}/guestids/nested-2", 200)
    me.call("DELETE", f"/consumers/{uuid}/guestids/nested-2", 204)
    me.call("GET", f"/consumers/{uuid}/guestids/nested-2", 404)
    me.call("GET", f"/consumers/{uuid}", 200)


def _environment_scenario(me: Recorder, admin: Recorder, anon: Recorder, org: str, uuid: str) -> None:
    """An org's environments: listed, one made and shown, a consumer registered into it and moved."""
    env = admin.call("POST", f"/owners/{org}/environments", 200, json={
        "id": f"env-{org}", "name": "Development", "description": "promoted first",
        "environmentContent": [{"contentId": "os-base", "enabled": True}]})
    admin.call("GET", f"/owners/{org}/environments", 200)
    me.call("GET", f"/owners/{org}/environments?name=Development", 200)
    me.call("GET", f"/environments/{env['id']}", 200)
    admin.call("POST", f"/environments/{env['id']}/consumers", 200, json={"name": "in-dev", "facts": {}})
    me.call("PUT", f"/consumers/{uuid}", 204, json={"environments": [{"id": env["id"]}]})
    me.call("GET", f"/consumers/{uuid}", 200)
    admin.call("DELETE", f"/environments/{env['id']}", 204)
    admin.call("GET", f"/environments/{env['id']}", 404)


def _sca_scenario(server: FtmockServer, tmp: Path, admin: Recorder, anon: Recorder, log: list[Exchange]) -> None:
    """Simple content access: the org's mode, a system's content access certificate, its overrides."""
    org = f"conf-sca-{int(time.time() * 1000) % 10**9}"
    admin.call("POST", "/owners", 200, json={"key": org, "contentAccessMode": "entitlement"})
    admin.call("PUT", f"/owners/{org}", 200, json={"contentAccessMode": "org_environment"})
    admin.call("GET", f"/owners/{org}/content_access", 200)
    admin.call("POST", f"/owners/{org}/products", 200, json={
        "id": "70", "name": "Server OS", "productContent": [
            {"content": {"label": "sca-base", "contentUrl": "/content/sca/$releasever/$basearch/base"},
             "enabled": True},
            {"content": {"label": CONTENT_LABEL, "contentUrl": CONTENT_PATH}, "enabled": True}]})
    admin.call("POST", f"/owners/{org}/pools", 200, json={"productId": "70", "quantity": 10})
    key_pem, csr = make_key_and_csr("sca-guest")
    guest = admin.call("POST", f"/consumers?owner={org}", 200, json={
        "name": "sca-guest", "type": {"label": "system"}, "facts": {}, "csr": csr})
    cert, key = tmp / "sca-cert.pem", tmp / "sca-key.pem"
    cert.write_text(guest["idCert"]["cert"])
    key.write_text(key_pem)
    me = Recorder(Client(server, cert=(str(cert), str(key))), log)
    uuid = guest["uuid"]
    me.call("GET", f"/consumers/{uuid}/content_access", 200)
    releases = me.call("GET", f"/consumers/{uuid}/available_releases", 200)
    assert releases == list(RELEASES), releases  # read from the CDN's listing beside $releasever
    me.call("PUT", f"/consumers/{uuid}/checkin", 200)
    me.call("GET", f"/consumers/{uuid}/certificates", 200)
    me.call("GET", f"/consumers/{uuid}/accessible_content", 200)
    me.call("GET", f"/consumers/{uuid}/accessible_content", 304,
            headers={"If-Modified-Since": "Fri, 31 Dec 2100 23:59:59 GMT"})
    me.call("PUT", f"/consumers/{uuid}/content_overrides", 200,
            json=[{"contentLabel": "sca-base", "name": "enabled", "value": "0"}])
    me.call("GET", f"/consumers/{uuid}/content_overrides", 200)
    me.call("DELETE", f"/consumers/{uuid}/content_overrides", 200, json=[{"contentLabel": "sca-base"}])


def test_every_candlepin_route_answers_as_candlepins_api_description_says(
    cdn_server: FtmockServer, tmp_path: Path
) -> None:
    spec = _spec()
    schemas = _schemas_for_answers(spec)
    checker = _format_checker()
    log: list[Exchange] = []
    _scenario(cdn_server, tmp_path, log)

    # ftmock's own route table, in its dispatch order
    api = Api(Database(tmp_path / "routes.db"), CertificateAuthority.load_or_create(tmp_path))
    table = [(m, p, _template_regex(p)) for m, p, ft in api.route_table if not ft]
    spec_ops = sorted(((m.upper(), p, _template_regex(p)) for p, ops in spec["paths"].items() for m in ops
                       if m in ("get", "put", "post", "delete")), key=lambda t: t[1].count("{"))
    counter = FieldCounter(schemas)
    exercised: set[tuple[str, str]] = set()
    problems: list[str] = []
    for ex in log:
        assert ex.path.startswith("/") and not ex.path.startswith(PREFIX)
        route = next(((m, p) for m, p, rx in table if m == ex.method and rx.match(ex.path)), None)
        assert route is not None, f"{ex.method} {ex.path} matched no ftmock route"
        if route in api.satellite_routes:
            if ex.status < 300:
                exercised.add(route)
                problems.extend(_check_satellite(route, ex, schemas, checker, counter))
            continue
        op_key = next(((m, p) for m, p, rx in spec_ops if m == ex.method and rx.match(ex.path)), None)
        if op_key is None:
            problems.append(f"{ex.method} {ex.path}: not in Candlepin's API description")
            continue
        op = spec["paths"][op_key[1]][ex.method.lower()]
        codes = {str(c) for c in op["responses"]}
        if ex.status < 300:
            exercised.add(route)
        documented = str(ex.status) in codes or (
            VOID_200_AS_204 and ex.status == 204 and "200" in codes and not op["responses"][200].get("content"))
        if not documented and (ex.status < 400 or "default" not in codes):
            problems.append(f"{ex.method} {op_key[1]}: status {ex.status} not among {sorted(codes)}")
            continue
        answer = op["responses"].get(ex.status) or op["responses"].get(str(ex.status)) or op["responses"]["default"]
        schema = KNOWN_DIFFERENCES.get(op_key) if ex.status < 300 else None
        if ex.status == 200 and ex.as_consumer and op_key == ("GET", "/consumers/{consumer_uuid}/host"):
            schema = GUEST_HOST_VIEW
        if schema is None:
            schema = ((answer.get("content") or {}).get("application/json") or {}).get("schema")
        if schema is None and ex.status >= 400:
            schema = {"$ref": "#/components/schemas/ExceptionMessage"}  # an error the description leaves to default
        if schema is None:
            if ex.body is not None and ex.status != 204:
                problems.append(f"{ex.method} {op_key[1]}: a body where the description has none")
            continue
        validator = jsonschema.Draft4Validator({**schema, "components": {"schemas": schemas}}, format_checker=checker)
        for error in validator.iter_errors(ex.body):
            where = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{ex.method} {op_key[1]} -> {ex.status} at {where or '(root)'}: {error.message[:200]}")
        counter.walk(schema, ex.body)

    missing = [f"{m} {p}" for m, p, _ in table if (m, p) not in exercised]
    print(f"\nconformance: {len(table)} Candlepin and Satellite routes served ({len(api.satellite_routes)} "
          f"Satellite's), {len(exercised)} exercised with a 2xx, {len(log)} answers validated, "
          f"{len(counter.pairs)} distinct schema fields checked, each present ({counter.values} field values), "
          f"{len(KNOWN_DIFFERENCES)} documented difference(s)")
    assert not missing, f"routes the scenario did not exercise: {missing}"
    assert not problems, "\n".join(problems)
    assert len(counter.pairs) > 250  # the scenario really reaches into the DTOs
    reached = {name for name, _ in counter.pairs}
    assert {"ConsumerDTO", "ComplianceStatusDTO", "OwnerDTO", "ReleaseVerDTO", "CertificateSerialDTO", "EnvironmentDTO",
            "GuestIdDTO", "OwnerInfo", "EntitlementDTO", "PoolDTO", "ProductDTO", "ContentDTO"} <= reached, reached


def _check_satellite(route: tuple[str, str], ex: Exchange, schemas: dict[str, Any],
                     checker: jsonschema.FormatChecker, counter: FieldCounter) -> list[str]:
    """A Satellite call's answer against the shape in SATELLITE."""
    schema = SATELLITE[route]
    if schema is None:
        return [] if ex.body is None else [f"{ex.method} {route[1]}: a body where Satellite answers none"]
    validator = jsonschema.Draft4Validator({**schema, "components": {"schemas": schemas}}, format_checker=checker)
    counter.walk(schema, ex.body)
    return [f"{ex.method} {route[1]} -> {ex.status} at {'/'.join(map(str, e.absolute_path)) or '(root)'}: "
            f"{e.message[:200]}" for e in validator.iter_errors(ex.body)]


def test_status_advertises_csr_support_only_when_it_is_honoured(ftmock_nocsr_session: FtmockServer,
                                                                server: FtmockServer) -> None:
    caps = Client(server).get("/status").json()["managerCapabilities"]
    stock = Client(ftmock_nocsr_session).get("/status").json()["managerCapabilities"]
    assert "ft_csr" in caps and "ft_csr" not in stock
    assert set(caps) - {"ft_csr"} == set(stock)
