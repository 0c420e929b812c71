"""The report encoder: the same bytes and digest as building the whole body, re-encoding only the
hypervisors that changed (what keeps a failover in a 45,000-VM vCenter cheap to report)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from ftreport.encoding import ReportEncoder, encode_body
from ftreport.model import Guest, Hypervisor, body_hash, ft_attributes, report_body


def _fleet() -> list[Hypervisor]:
    hosts = []
    for h in range(5):
        guests = tuple(Guest(f"vm-{h}-{g}", 1, {"virtWhoType": "esx", "active": 1}) for g in range(4))
        hosts.append(Hypervisor(f"host-{h}", f"h{h}.example.com", guests, {"cpu.cpu_socket(s)": "2"}))
    return hosts


def _expected(hypervisors: list[Hypervisor]) -> tuple[bytes, str]:
    body = report_body(hypervisors)
    return encode_body(body), body_hash(body)


def test_bytes_and_digest_equal_the_whole_body_through_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []
    real = Hypervisor.to_json

    def counting(self: Hypervisor) -> dict[str, Any]:
        encoded.append(self.hypervisor_id)
        return real(self)

    monkeypatch.setattr(Hypervisor, "to_json", counting)
    encoder = ReportEncoder()
    fleet = _fleet()
    report = encoder.encode(reversed(fleet))  # any order in, sorted out
    assert (report.data, report.digest) == _expected(fleet)
    assert (report.hypervisors, report.guests) == (5, 20)
    assert json.loads(report.data) == report_body(fleet)

    # A failover: host-1 loses the primary, host-3 gets the new one. Only those two are encoded again.
    moved = fleet[1].guests[0]
    primary = Guest(moved.guest_id, 1, {"virtWhoType": "esx", "active": 1, **ft_attributes("i-2", 1, ["i-2", "i-3"])})
    fleet = [fleet[0], replace(fleet[1], guests=fleet[1].guests[1:]), fleet[2],
             replace(fleet[3], guests=(*fleet[3].guests, primary)), fleet[4]]
    encoded.clear()
    report = encoder.encode(fleet)
    assert sorted(encoded) == ["host-1", "host-3"]
    assert (report.data, report.digest) == _expected(fleet)
    assert (report.hypervisors, report.guests) == (5, 20)

    # Equal but newly made objects (a source that rebuilds its snapshot) are not encoded again.
    fleet = [replace(h) for h in fleet]
    want = _expected(fleet)
    encoded.clear()
    report = encoder.encode(fleet)
    assert encoded == [] and (report.data, report.digest) == want

    # A changed fact, a hypervisor gone and one added.
    fleet = [replace(fleet[0], facts={"cpu.cpu_socket(s)": "4"}), *fleet[2:], Hypervisor("host-0a", None, ())]
    report = encoder.encode(fleet)
    assert (report.data, report.digest) == _expected(fleet)
    assert (report.hypervisors, report.guests) == (5, 17)
    # ... and host-1 comes back unchanged after being gone: encoded from scratch, still right.
    back = _fleet()[1]
    want = _expected([*fleet, back])
    encoded.clear()
    report = encoder.encode([*fleet, back])
    assert encoded == ["host-1"] and (report.data, report.digest) == want


def test_a_changed_guest_state_or_attribute_is_never_hidden() -> None:
    encoder = ReportEncoder()
    fleet = _fleet()
    first = encoder.encode(fleet)
    guest = fleet[2].guests[1]
    for changed in (replace(guest, state=5), replace(guest, attributes={**guest.attributes, "active": 0})):
        host = replace(fleet[2], guests=(fleet[2].guests[0], changed, *fleet[2].guests[2:]))
        again = encoder.encode([*fleet[:2], host, *fleet[3:]])
        assert again.digest != first.digest
        assert (again.data, again.digest) == _expected([*fleet[:2], host, *fleet[3:]])


def test_printing_needs_no_digest_and_keeps_nothing() -> None:
    encoder = ReportEncoder(keep=False)
    fleet = _fleet()
    report = encoder.encode(fleet, digest=False)
    assert report.data == _expected(fleet)[0] and report.digest == ""
    assert (report.hypervisors, report.guests) == (5, 20)
    # Without keep, the next report is encoded from scratch, and a digest asked for later is right.
    assert encoder.encode(fleet).digest == _expected(fleet)[1]


def test_a_cached_hypervisor_encoded_without_digest_gets_one_when_asked() -> None:
    encoder = ReportEncoder()
    fleet = _fleet()
    encoder.encode(fleet, digest=False)
    assert encoder.encode(fleet).digest == _expected(fleet)[1]
