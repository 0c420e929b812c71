"""The scanner of the regular shape (ftreport.sources.vimscan) against the XML parser alone.

Every answer is decoded twice, with the scanner in front of the parser and with the parser alone,
cut into chunks of several sizes: the records, the page and the touched objects must be the
same, or both ways must fail the same way. The simulator's answers and vCenter's own shape must
be scanned whole; anything else may fall back to the parser, but never decode differently."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ftreport.sources.inventory import Inventory
from ftreport.sources.vimstream import VimFault, VimProtocolError, decode_retrieve, decode_updates

VIM = Path(__file__).parent / "data" / "vim"
CHUNKS = (1, 3, 64, 1 << 20)

XSI = "http://www.w3.org/2001/XMLSchema-instance"
# vCenter declares xsi once, on the envelope; govmomi's simulator declares it on every value.
ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/'
            'soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/'
            f'2001/XMLSchema" xmlns:xsi="{XSI}">\n<soapenv:Body>\n')
END = "\n</soapenv:Body>\n</soapenv:Envelope>"


def _retrieve(objects: str, *, envelope: str = ENVELOPE, head: str = "", tail: str = "") -> bytes:
    return (envelope + '<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval>' + head + objects + tail
            + "</returnval></RetrievePropertiesExResponse>" + END).encode()


def _updates(object_sets: str, *, tail: str = "") -> bytes:
    return (ENVELOPE + '<WaitForUpdatesExResponse xmlns="urn:vim25"><returnval><version>12</version><filterSet>'
            '<filter type="PropertyFilter">session[1]f</filter>' + object_sets + "</filterSet>" + tail
            + "</returnval></WaitForUpdatesExResponse>" + END).encode()


def _vm(moid: str, *props: str) -> str:
    return f'<objects><obj type="VirtualMachine">{moid}</obj>{"".join(props)}</objects>'


def _prop(name: str, value: str, xsi_type: str = "xsd:string", extra: str = "") -> str:
    return f'<propSet><name>{name}</name><val xsi:type="{xsi_type}"{extra}>{value}</val></propSet>'


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i:i + size] for i in range(0, len(data), size))


def _decode(data: bytes, size: int, *, scan: bool, updates: bool) -> tuple[str, Any]:
    inv = Inventory()
    inv.objects["VirtualMachine"]["vm-0"] = {"config.uuid": "before", "runtime.powerState": "poweredOff"}
    touched: set[str] = set()
    try:
        if updates:
            page: Any = decode_updates(_chunks(data, size), inv.objects, touched, scan=scan)
            scanned, page.scanned = page.scanned, 0
            return "ok", (inv.objects, touched, page, scanned)
        page = decode_retrieve(_chunks(data, size), inv.objects, scan=scan)
        scanned, page.scanned = page.scanned, 0
        return "ok", (inv.objects, touched, page, scanned)
    except (VimFault, VimProtocolError, ValueError) as exc:
        return type(exc).__name__, str(exc) if isinstance(exc, VimFault) else ""


def _same_both_ways(data: bytes, *, updates: bool = False) -> list[int]:
    """Decode both ways in every chunk size; assert the outcomes agree. Returns what the scanner
    took in each chunk size (empty when both ways failed)."""
    scanned = []
    for size in CHUNKS:
        parsed = _decode(data, size, scan=False, updates=updates)
        both = _decode(data, size, scan=True, updates=updates)
        if parsed[0] != "ok" or both[0] != "ok":
            assert both == parsed, f"chunks of {size}"
            continue
        assert both[1][:3] == parsed[1][:3], f"chunks of {size}"
        assert parsed[1][3] == 0
        scanned.append(both[1][3])
    return scanned


# -- what is scanned whole --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "total"), [("retrieve.xml", 13), ("updates.xml", 13), ("updates-failover.xml", 2)])
def test_the_simulators_answers_are_scanned_whole(name: str, total: int) -> None:
    data = (VIM / name).read_bytes()
    assert _same_both_ways(data, updates=name.startswith("updates")) == [total] * len(CHUNKS)


def test_vcenters_own_shape_is_scanned_whole() -> None:
    """xsi bound once on the envelope; every kind of value ftreport asks for."""
    data = _retrieve(
        _vm("vm-1", _prop("config.uuid", "4211-aa"), _prop("config.instanceUuid", "5011-bb"),
            _prop("config.ftInfo.role", "2", "xsd:int"),
            '<propSet><name>config.ftInfo.instanceUuids</name><val xsi:type="ArrayOfString">'
            "<string>5011-aa</string><string>5011-bb</string></val></propSet>",
            _prop("runtime.powerState", "poweredOn", "VirtualMachinePowerState"),
            _prop("runtime.host", "host-9", "ManagedObjectReference", ' type="HostSystem"'))
        + '<objects><obj type="HostSystem">host-9</obj>'
        + _prop("summary.hardware.numCpuPkgs", "2", "xsd:short") + _prop("config.product.name", "VMware ESXi")
        + _prop("runtime.inMaintenanceMode", "false", "xsd:boolean") + _prop("name", "") + "</objects>"
        + '<objects><obj type="Datastore">ds-1</obj>' + _prop("name", "ignored") + "</objects>",
        head="<token>t-1</token>")  # a page's token comes first (RetrieveResult: token, objects)
    assert _same_both_ways(data) == [3] * len(CHUNKS)
    inv = Inventory()
    page = decode_retrieve([data], inv.objects)
    assert (page.objects, page.scanned, page.token) == (3, 3, "t-1")
    assert inv.objects["VirtualMachine"]["vm-1"] == {
        "config.uuid": "4211-aa", "config.instanceUuid": "5011-bb", "config.ftInfo.role": 2,
        "config.ftInfo.instanceUuids": ["5011-aa", "5011-bb"], "runtime.powerState": "poweredOn",
        "runtime.host": "host-9"}
    assert inv.objects["HostSystem"]["host-9"] == {"summary.hardware.numCpuPkgs": 2,
                                                   "config.product.name": "VMware ESXi",
                                                   "runtime.inMaintenanceMode": False, "name": ""}


def test_updates_in_vcenters_shape_are_scanned_whole() -> None:
    data = _updates(
        '<objectSet><kind>modify</kind><obj type="VirtualMachine">vm-0</obj>'
        '<changeSet><name>config.uuid</name><op>assign</op><val xsi:type="xsd:string">after</val></changeSet>'
        "<changeSet><name>runtime.powerState</name><op>remove</op></changeSet></objectSet>"
        '<objectSet><kind>enter</kind><obj type="VirtualMachine">vm-2</obj>'
        "<changeSet><name>config.ftInfo.role</name><op>assign</op></changeSet></objectSet>"
        '<objectSet><kind>leave</kind><obj type="VirtualMachine">vm-7</obj></objectSet>',
        tail="<truncated>true</truncated>")
    assert _same_both_ways(data, updates=True) == [3] * len(CHUNKS)
    inv = Inventory()
    inv.objects["VirtualMachine"]["vm-0"] = {"config.uuid": "before", "runtime.powerState": "poweredOff"}
    inv.objects["VirtualMachine"]["vm-7"] = {"config.uuid": "gone"}
    touched: set[str] = set()
    page = decode_updates([data], inv.objects, touched)
    assert (page.received, page.version, page.truncated, page.updates, page.scanned) == (True, "12", True, 3, 3)
    assert inv.objects["VirtualMachine"] == {"vm-0": {"config.uuid": "after"}, "vm-2": {"config.ftInfo.role": None}}
    assert touched == {"vm-0", "vm-2", "vm-7"}


# -- what differs goes to the parser, and decodes as it always did ----------------------------

PLAIN = _vm("vm-1", _prop("config.uuid", "u-1"))
LATER = _vm("vm-3", _prop("config.uuid", "u-3"))

DEVIATIONS = {
    "token after the objects": "<token>late</token>",
    "entity reference": _vm("vm-2", _prop("name", "a &amp; b &#x263A;")),
    "CDATA": _vm("vm-2", _prop("name", "<![CDATA[a < b]]>")),
    "comment between objects": "<!-- a comment -->",
    "comment inside an object": _vm("vm-2", "<!-- x -->", _prop("name", "n")),
    "whitespace inside an object": _vm("vm-2", "\n  ", _prop("name", "n")),
    "carriage return in a value": _vm("vm-2", _prop("name", "a\r\nb")),
    "tab and newline in an attribute": '<objects><obj type="Virtual\tMachine">vm-2</obj></objects>',
    "self-closing value": _vm("vm-2", '<propSet><name>name</name><val xsi:type="xsd:string"/></propSet>'),
    "missingSet": _vm("vm-2", "<missingSet><path>config</path><fault><fault xsi:type=\"NoPermission\"/></fault>"
                              "</missingSet>"),
    "type prefix bound elsewhere": _vm("vm-2", _prop("name", "n", "xsd:string").replace("xsi:type", "xsd:type")),
    "xsi rebound on the value": _vm("vm-2", _prop("name", "n", "xsd:int", ' xmlns:xsi="urn:other"')),
    "default namespace on an object": '<objects xmlns="urn:other"><obj type="VirtualMachine">vm-2</obj></objects>',
    "array item with its own type": _vm("vm-2", '<propSet><name>a</name><val xsi:type="ArrayOfAnyType">'
                                                '<anyType xsi:type="xsd:int">4</anyType></val></propSet>'),
    "children without an array type": _vm("vm-2", '<propSet><name>a</name><val xsi:type="xsd:string">'
                                                   "<string>x</string></val></propSet>"),
    "text in an array": _vm("vm-2", '<propSet><name>a</name><val xsi:type="ArrayOfString">x</val></propSet>'),
    "value without a type": _vm("vm-2", "<propSet><name>a</name><val>x</val></propSet>"),
    "property without a value": _vm("vm-2", "<propSet><name>a</name></propSet>"),
    "empty name": _vm("vm-2", _prop("", "x")),
    "nested objects": _vm("vm-2", _vm("vm-9")),
    "an object of another namespace's prefix": '<v:objects xmlns:v="urn:vim25"><v:obj type="VirtualMachine">vm-2'
                                                "</v:obj></v:objects>",
    "unicode digits in an int": _vm("vm-2", _prop("n", "\u0661\u0662", "xsd:int")),
    "non-ASCII names and values": _vm("vm-2", _prop("caf\u00e9", "na\u00efve \u263a")),
    "fullwidth letters (UTF-8 lead byte 0xEF)": _vm("vm-2", _prop("name", "\uff21\uff22 \uf8ff")),
}


@pytest.mark.parametrize("middle", list(DEVIATIONS.values()), ids=list(DEVIATIONS))
def test_anything_else_decodes_as_the_parser_alone_decodes_it(middle: str) -> None:
    data = _retrieve(PLAIN + middle + LATER)
    scanned = _same_both_ways(data)
    assert scanned and all(n >= 1 for n in scanned)  # the regular object before it was scanned


BROKEN = {
    "unbound prefix": _vm("vm-2", _prop("name", "n").replace("xsi:type", "zz:type")),
    "undeclared entity": _vm("vm-2", _prop("name", "&nbsp;")),
    "control character": _vm("vm-2", _prop("name", "a\x01b")),
    "U+FFFF": _vm("vm-2", _prop("name", "a\uffffb")),
    "mismatched tag": _vm("vm-2", _prop("name", "n").replace("</val>", "</value>")),
    "not an int": _vm("vm-2", _prop("n", "twelve", "xsd:int")),
}


@pytest.mark.parametrize("middle", list(BROKEN.values()), ids=list(BROKEN))
def test_a_broken_answer_fails_as_it_fails_the_parser(middle: str) -> None:
    data = _retrieve(PLAIN + middle + LATER)
    assert _same_both_ways(data) == []
    with pytest.raises((VimProtocolError, ValueError)):
        decode_retrieve([data], Inventory().objects)


def test_invalid_utf8_and_another_encoding() -> None:
    bad = _retrieve(PLAIN + _vm("vm-2", _prop("name", "X")) + LATER).replace(b">X<", b">\xff\xfe<")
    assert _same_both_ways(bad) == []
    latin = (_retrieve(PLAIN + _vm("vm-2", _prop("name", "X")), envelope=ENVELOPE.replace("UTF-8", "ISO-8859-1"))
             .replace(b">X<", b">caf\xe9<"))
    assert _same_both_ways(latin) == [0] * len(CHUNKS)  # not the regular shape: parsed whole
    inv = Inventory()
    decode_retrieve([latin], inv.objects)
    assert inv.objects["VirtualMachine"]["vm-2"] == {"name": "caf\u00e9"}


OPENINGS = {
    "header": ENVELOPE.replace("<soapenv:Body>", "<soapenv:Header></soapenv:Header><soapenv:Body>"),
    "comment hiding an object": ENVELOPE + "<!-- <objects> -->",
    "attribute other than a namespace": ENVELOPE.replace("<soapenv:Envelope ", '<soapenv:Envelope id="e" '),
    "no declaration, another prefix": ENVELOPE.replace('<?xml version="1.0" encoding="UTF-8"?>\n', ""),
}


@pytest.mark.parametrize("envelope", list(OPENINGS.values()), ids=list(OPENINGS))
def test_an_unusual_opening_is_parsed_or_scanned_alike(envelope: str) -> None:
    data = _retrieve(PLAIN + LATER, envelope=envelope)
    if envelope is OPENINGS["no declaration, another prefix"]:
        data = data.replace(b"soapenv:", b"s:").replace(b"xmlns:soapenv", b"xmlns:s")
    scanned = _same_both_ways(data)
    assert scanned in ([0] * len(CHUNKS), [2] * len(CHUNKS))


def test_cut_short_inside_an_object_is_a_protocol_error_both_ways() -> None:
    data = _retrieve(PLAIN + LATER)
    cut = data[:data.index(b"u-3")]
    assert _same_both_ways(cut) == []
    with pytest.raises(VimProtocolError):
        decode_retrieve(_chunks(cut, 64), Inventory().objects)


def test_faults_and_empty_waits_are_the_parsers() -> None:
    for name in ("fault-notauthenticated.xml", "fault-invalidlogin.xml", "fault-requestcanceled.xml"):
        assert _same_both_ways((VIM / name).read_bytes(), updates=True) == []
    empty = (ENVELOPE + '<WaitForUpdatesExResponse xmlns="urn:vim25"></WaitForUpdatesExResponse>' + END).encode()
    assert _same_both_ways(empty, updates=True) == [0] * len(CHUNKS)
    assert not decode_updates([empty], Inventory().objects).received


def test_a_second_filter_and_what_follows_are_parsed() -> None:
    enter = ('<objectSet><kind>enter</kind><obj type="VirtualMachine">vm-{}</obj><changeSet><name>config.uuid'
             '</name><op>assign</op><val xsi:type="xsd:string">u</val></changeSet></objectSet>')
    data = _updates(enter.format(1), tail='<filterSet><filter type="PropertyFilter">g</filter>'
                                          + enter.format(2) + "</filterSet>")
    assert _same_both_ways(data, updates=True) == [1] * len(CHUNKS)
    inv = Inventory()
    assert decode_updates([data], inv.objects).updates == 2
    assert set(inv.objects["VirtualMachine"]) == {"vm-1", "vm-2"}


def test_an_element_or_opening_past_the_limits_is_left_to_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """What is held back waiting for the rest of an element is bounded: past the limit, the parser
    takes the answer from there (and decodes it the same)."""
    from ftreport.sources import vimscan

    big = _vm("vm-2", *(_prop(f"p{i}", "x" * 50) for i in range(40)))
    data = _retrieve(PLAIN + big + LATER)
    monkeypatch.setattr(vimscan, "_ELEMENT_LIMIT", 1000)
    assert _same_both_ways(data)[:3] == [1, 1, 1]  # chunks of 1, 3, 64 bytes: vm-2 grows past the limit
    monkeypatch.setattr(vimscan, "_OPENING_LIMIT", 100)
    assert _same_both_ways(data)[:3] == [0, 0, 0]
