"""Guest id matching: every spelling of one SMBIOS UUID gives one key."""

from __future__ import annotations

from ftmock.guestids import guest_key


def test_every_spelling_of_one_uuid_has_one_key() -> None:
    spellings = [
        "12345678-9abc-def0-1234-56789abcdef0",  # SMBIOS 2.6+
        "78563412-bc9a-f0de-1234-56789abcdef0",  # before 2.6: first three fields byte-swapped
        "  78563412-BC9A-F0DE-1234-56789ABCDEF0\n",
        "{12345678-9ABC-DEF0-1234-56789ABCDEF0}",
        "123456789abcdef0123456789abcdef0",
        "urn:uuid:78563412-bc9a-f0de-1234-56789abcdef0",
    ]
    assert {guest_key(s) for s in spellings} == {"12345678-9abc-def0-1234-56789abcdef0"}
    assert guest_key("f0000000-0000-0000-0000-000000000000") == "000000f0-0000-0000-0000-000000000000"


def test_other_ids_are_matched_case_insensitively() -> None:
    assert guest_key(" VM-7 ") == "vm-7"
    assert guest_key("12345678-9abc-def0-1234-56789abcdef") == "12345678-9abc-def0-1234-56789abcdef"
