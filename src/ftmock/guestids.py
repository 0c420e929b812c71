"""Guest identifiers as Candlepin matches them: case-insensitive and byte-order-insensitive.

SMBIOS before 2.6 stored the first three UUID fields big-endian, later versions little-endian, so
the same machine may be reported as `12345678-...` by one tool and `78563412-...` by another. Both
spellings map to one key.
"""

from __future__ import annotations

import re
import uuid

__all__ = ["guest_key"]

_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def guest_key(guest_id: str) -> str:
    text = guest_id.strip().lower()
    if _CANONICAL.match(text):
        # The common spelling, swapped by slicing: a report of tens of thousands of guests would
        # otherwise spend most of its time building UUID objects.
        flipped = (f"{text[6:8]}{text[4:6]}{text[2:4]}{text[0:2]}-{text[11:13]}{text[9:11]}-"
                   f"{text[16:18]}{text[14:16]}{text[18:]}")
        return min(text, flipped)
    try:
        value = uuid.UUID(text)
    except ValueError:
        return text
    swapped = uuid.UUID(bytes=value.bytes_le)
    return min(str(value), str(swapped))
