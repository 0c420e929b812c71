"""Guest identifiers as Candlepin matches them: case-insensitive and byte-order-insensitive.

SMBIOS before 2.6 stored the first three UUID fields big-endian, later versions little-endian, so
the same machine may be reported as `12345678-...` by one tool and `78563412-...` by another. Both
spellings map to one key.
"""

from __future__ import annotations

import uuid

__all__ = ["guest_key"]


def guest_key(guest_id: str) -> str:
    text = guest_id.strip().lower()
    try:
        value = uuid.UUID(text)
    except ValueError:
        return text
    swapped = uuid.UUID(bytes=value.bytes_le)
    return min(str(value), str(swapped))
