"""Report format: FT attributes, sorting, hashing, merging, host filters; the fake source."""

from __future__ import annotations

import json
from pathlib import Path

from ftreport import examples
from ftreport.config import load_config
from ftreport.filters import HostFilter, parse_patterns
from ftreport.model import Guest, Hypervisor, body_hash, ft_attributes, merge_hypervisors, report_body
from ftreport.sources.fake import FakeSource
from tests.kit.wait import hold_for, wait_until

from .conftest import SourceWatch, ft_guests, run_ftreport, write_config


def test_ft_role_is_converted_to_zero_based() -> None:
    assert ft_attributes("B", 1, ["B", "C"]) == {
        "instanceUUID": "B", "ftinfo.role": "0", "ftinfo.instanceUUIDs": ["B", "C"]}
    assert ft_attributes("C", 2, ("B", "C"))["ftinfo.role"] == "1"


def test_body_is_sorted_and_hash_is_stable() -> None:
    hv_b = Hypervisor("b", "B", (Guest("g2"), Guest("g1", 1, {"instanceUUID": "y"}), Guest("g1", 1, {"instanceUUID": "x"})),
                      {"z": "1", "a": "2"})
    hv_a = Hypervisor("a", "A", ())
    body = report_body([hv_b, hv_a])
    assert [h["hypervisorId"]["hypervisorId"] for h in body["hypervisors"]] == ["a", "b"]
    guests = body["hypervisors"][1]["guestIds"]
    assert [(g["guestId"], g["attributes"].get("instanceUUID")) for g in guests] == [
        ("g1", "x"), ("g1", "y"), ("g2", None)]
    assert list(body["hypervisors"][1]["facts"]) == ["a", "z"]
    assert body_hash(body) == body_hash(report_body([hv_a, hv_b]))
    assert body_hash(body) != body_hash(report_body([hv_a]))


def test_merge_unions_guests_of_the_same_hypervisor() -> None:
    merged = merge_hypervisors([[Hypervisor("h", "n", (Guest("g1"),), {"a": "1"})],
                                [Hypervisor("h", None, (Guest("g2"),), {"b": "2"}), Hypervisor("i")]])
    assert [h.hypervisor_id for h in merged] == ["h", "i"]
    assert {g.guest_id for g in merged[0].guests} == {"g1", "g2"}
    assert merged[0].facts == {"a": "1", "b": "2"} and merged[0].name == "n"


def test_merge_of_many_sources_keeps_the_last_view_of_a_guest() -> None:
    def hv(name: str | None, state: int, fact: str) -> Hypervisor:
        return Hypervisor("h", name, (Guest("g", state), Guest(f"only-{fact}")), {"f": fact, fact: "1"})

    merged = merge_hypervisors([[hv("first", 1, "a")], [hv(None, 5, "b")], [hv("third", 3, "c")], [hv(None, 1, "d")]])
    assert len(merged) == 1
    only = merged[0]
    assert only.name == "third" and only.facts == {"f": "d", "a": "1", "b": "1", "c": "1", "d": "1"}
    assert [(g.guest_id, g.state) for g in only.guests] == [("g", 1), ("only-a", 0), ("only-b", 0), ("only-c", 0),
                                                           ("only-d", 0)]
    lone = Hypervisor("lone", "x", (Guest("y"),))
    assert merge_hypervisors([[lone]])[0] is lone


def test_host_filters_take_wildcards_or_regexes() -> None:
    assert parse_patterns(' a*, "b[0-9]+" ,\'c\',') == ("a*", "b[0-9]+", "c")
    f = HostFilter(include=("esx-*", r"kvm-\d+"), exclude=("esx-old*",))
    assert f.allows("ESX-1") and f.allows("kvm-12") and not f.allows("kvm-x")
    assert not f.allows("esx-old-1") and not f.allows("other")
    assert f.allows("id-without-match", "esx-2.example.com")  # matched by name
    assert HostFilter(include=("[",)).allows("[")  # not a valid regex: used as a wildcard only


def test_fake_source_expresses_report_1_and_report_2(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    conf = write_config(tmp_path / "fake.conf", {"r1": {"type": "fake"}})
    out = run_ftreport(["-c", str(conf), "-p"], isolated_env)
    assert out.returncode == 0, out.stderr
    r1 = json.loads(out.stdout)
    assert r1 == report_body(merge_hypervisors([FakeSource(load_config([str(conf)]).sources[0]).collect()]))
    assert ft_guests(r1) == {
        examples.INSTANCE_A: {"hypervisor": examples.HYPERVISOR_A, "role": "0", "guestId": examples.VM1_UUID,
                              "instances": [examples.INSTANCE_A, examples.INSTANCE_B], "state": 1},
        examples.INSTANCE_B: {"hypervisor": examples.HYPERVISOR_B, "role": "1", "guestId": examples.VM1_UUID,
                              "instances": [examples.INSTANCE_A, examples.INSTANCE_B], "state": 1},
    }
    conf = write_config(tmp_path / "fake2.conf", {"r2": {"type": "fake", "file": "builtin:report2"}})
    r2 = json.loads(run_ftreport(["-c", str(conf), "-p"], isolated_env).stdout)
    ft = ft_guests(r2)
    assert {k: (v["hypervisor"], v["role"]) for k, v in ft.items()} == {
        examples.INSTANCE_B: (examples.HYPERVISOR_B, "0"), examples.INSTANCE_C: (examples.HYPERVISOR_C, "1")}
    assert r2["hypervisors"][0]["guestIds"] == []  # hypervisor A no longer runs the VM


def test_fake_source_reads_virt_who_format_and_follows_changes(tmp_path: Path, isolated_env: dict[str, str]) -> None:
    data = tmp_path / "hosts.json"
    data.write_text(json.dumps({"hypervisors": [
        {"uuid": "h1", "name": "host1", "guests": [{"guestId": "g1", "state": 1, "attributes": {"active": 1}}],
         "facts": {"hypervisor.type": "fake"}}]}))
    conf = write_config(tmp_path / "fake.conf", {"f": {"type": "fake", "file": data, "is_hypervisor": "true"}})
    watch = SourceWatch(FakeSource(load_config([str(conf)]).sources[0], poll=0.05))
    seen: list[list[Hypervisor]] = watch.snapshots
    wait_until(lambda: seen, 5, "the first snapshot")
    assert seen[0] == [Hypervisor("h1", "host1", (Guest("g1", 1, {"active": 1}),), {"hypervisor.type": "fake"})]
    data.write_text("{broken")  # a half-written file is skipped, not reported
    for _ in hold_for(0.3, step=0.05):  # several polls of the broken file
        assert len(seen) == 1
    data.write_text(json.dumps(examples.REPORT_2))
    wait_until(lambda: len(seen) >= 2, 5, "the snapshot of the new file")
    watch.close()
    assert len(seen) == 2
    assert report_body(seen[1]) == report_body(merge_hypervisors([seen[1]]))
    assert {h.hypervisor_id for h in seen[1]} == {examples.HYPERVISOR_A, examples.HYPERVISOR_B, examples.HYPERVISOR_C}


def test_progress_line_is_drawn_and_erased() -> None:
    import io

    from ftreport.progress import Progress

    stream = io.StringIO()
    progress = Progress(stream, enabled=True, delay=0.0, period=0.01)
    report = progress.callback("vcenter")
    progress.start()
    report("1200 hosts, 40000 VMs")
    wait_until(lambda: "vcenter: 1200 hosts, 40000 VMs" in stream.getvalue(), 5, "the progress line")
    progress.stop()
    text = stream.getvalue()
    assert "vcenter: 1200 hosts, 40000 VMs" in text
    assert text.endswith("\r\x1b[K")
    quiet = io.StringIO()
    off = Progress(quiet)  # not a terminal: nothing drawn
    off.start()
    off.stop()
    assert quiet.getvalue() == ""
