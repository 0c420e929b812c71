"""ftmock's table of Candlepin's DTO fields (src/ftmock/dtoschema.py) is the API description's.

The table is generated from `data/candlepin-api-spec.yaml`: ``python -m tests.ftmock.test_dtoschema``
rewrites it. The test fails when the description and the table part ways, naming the DTO.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from ftmock import dtoschema
from ftmock.api import Api
from ftmock.ca import CertificateAuthority
from ftmock.store import Database

SPEC_PATH = Path(__file__).parent / "data" / "candlepin-api-spec.yaml"
MODULE_PATH = Path(__file__).resolve().parents[2] / "src" / "ftmock" / "dtoschema.py"

# The DTOs ftmock answers with; every DTO they nest is included.
ROOTS = [
    "StatusDTO", "OwnerDTO", "ConsumerDTO", "ConsumerDTOArrayElement", "ComplianceStatusDTO", "EntitlementDTO",
    "PoolDTO", "ProductDTO", "ActivationKeyDTO", "AsyncJobStatusDTO", "ContentAccessDTO", "ContentOverrideDTO",
    "EnvironmentDTO", "OwnerInfo", "GuestIdDTO", "GuestIdDTOArrayElement", "PoolQuantityDTO", "ReleaseVerDTO",
    "HypervisorUpdateResultDTO", "CertificateDTO", "CertificateSerialDTO", "DeleteResult", "Link",
    "SystemPurposeAttributesDTO",
]


def _fields(schemas: dict[str, Any], name: str) -> dict[str, Any]:
    schema = schemas[name]
    out: dict[str, Any] = {}
    for part in schema.get("allOf", [schema]):
        if "$ref" in part:
            out.update(_fields(schemas, part["$ref"].rsplit("/", 1)[1]))
        else:
            out.update(part.get("properties", {}))
    return out


def _nested(prop: dict[str, Any]) -> str | None:
    """"X" for a nested DTO, "[X]" for a list of them, "{X}" for a map of them ("{[X]}": of lists of
    them), None for a plain value."""
    if "$ref" in prop:
        return str(prop["$ref"].rsplit("/", 1)[1])
    if prop.get("type") not in (None, "object", "array"):
        return None
    items = prop.get("items")
    if prop.get("type") == "array" and isinstance(items, dict) and "$ref" in items:
        return "[" + str(items["$ref"].rsplit("/", 1)[1]) + "]"
    extra = prop.get("additionalProperties")
    if isinstance(extra, dict):
        inner = _nested(extra)
        return "{" + inner + "}" if inner else None
    return None


def table_from_spec() -> dict[str, dict[str, str | None]]:
    schemas = yaml.safe_load(SPEC_PATH.read_text())["components"]["schemas"]
    table: dict[str, dict[str, str | None]] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop(0)
        if name in table:
            continue
        fields = {key: _nested(prop) for key, prop in _fields(schemas, name).items()}
        table[name] = fields
        todo.extend(ref.strip("[]{}") for ref in fields.values() if ref)
    return dict(sorted(table.items()))


def module_text(table: dict[str, dict[str, str | None]]) -> str:
    head = MODULE_PATH.read_text().split("DTOS: ", 1)[0]
    lines = ["DTOS: dict[str, dict[str, str | None]] = {"]
    for name, fields in table.items():
        lines.append(f"    {name!r}: {{")
        lines.extend(f"        {key!r}: {ref!r}," for key, ref in fields.items())
        lines.append("    },")
    lines.append("}")
    return head + "\n".join(lines).replace("'", '"') + "\n"


def test_the_table_is_the_api_descriptions() -> None:
    expected = table_from_spec()
    for name, fields in expected.items():
        assert dtoschema.DTOS.get(name) == fields, (
            f"{name}: ftmock's table differs from the API description; run python -m tests.ftmock.test_dtoschema")
    assert set(dtoschema.DTOS) == set(expected)


def test_every_route_names_a_dto_of_the_table(tmp_path: Path) -> None:
    api = Api(Database(tmp_path / "db"), CertificateAuthority.load_or_create(tmp_path))
    named = {name for name in api.route_dtos.values() if name}
    assert named and named <= set(dtoschema.DTOS), named - set(dtoschema.DTOS)


def test_complete_fills_every_field_at_every_depth() -> None:
    consumer = dtoschema.complete({"uuid": "u", "owner": {"key": "o"}, "idCert": {"serial": {"serial": 3}},
                                   "failedOverTo": "v"}, "ConsumerDTO")
    assert list(consumer)[: len(dtoschema.DTOS["ConsumerDTO"])] == list(dtoschema.DTOS["ConsumerDTO"])
    assert consumer["releaseVer"] is None and consumer["environment"] is None
    assert consumer["failedOverTo"] == "v"  # what is not Candlepin's stays
    assert set(consumer["owner"]) == set(dtoschema.DTOS["NestedOwnerDTO"])
    assert set(consumer["idCert"]["serial"]) == set(dtoschema.DTOS["CertificateSerialDTO"])
    assert consumer["idCert"]["serial"]["serial"] == 3 and consumer["idCert"]["cert"] is None


if __name__ == "__main__":
    MODULE_PATH.write_text(module_text(table_from_spec()))
    sys.exit(0)
