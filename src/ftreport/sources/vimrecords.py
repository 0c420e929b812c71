"""The per-object records the esx source keeps, and how one decoded vSphere object folds into them.

Both ways of reading a PropertyCollector answer (the XML parser in ``vimstream`` and the scanner of
the regular shape in ``vimscan``) end here, so they cannot differ in what a value becomes or in how
an ``ObjectContent`` or an ``ObjectUpdate`` changes the records.

Values are what pyvmomi would give for the leaf paths ftreport asks for: strings and enumerations
as ``str``, ``xsd:int``/``short``/``long``/``byte`` as ``int``, ``xsd:boolean`` as ``bool``,
``ManagedObjectReference`` as its moId, ``ArrayOf*`` as a list, and no value as ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from sys import intern
from typing import Any, Optional

__all__ = [
    "Change",
    "Records",
    "apply_update",
    "converter",
    "is_array",
    "item_type",
    "scalar",
    "store_object",
]

#: moId -> {property path: value}, by managed object type ("VirtualMachine", ...).
Records = dict[str, dict[str, dict[str, Any]]]

#: One PropertyChange: (property path, operation, value or None when it carries none).
Change = tuple[str, Optional[str], Any]

_INTEGERS = frozenset(("int", "short", "long", "byte", "unsignedInt", "unsignedShort", "unsignedLong",
                       "unsignedByte", "integer"))
_FLOATS = frozenset(("float", "double", "decimal"))
_XSD_TEXT = frozenset(("string", "dateTime", "base64Binary", "anyURI"))
_REMOVALS = frozenset(("remove", "indirectRemove"))


def _text(text: str | None) -> str:
    return text or ""


def _integer(text: str | None) -> int:
    return int(text or 0)


def _boolean(text: str | None) -> bool:
    return text in ("true", "1")


def _float(text: str | None) -> float:
    return float(text or 0)


def _shared(text: str | None) -> str:
    # Enumerations and ManagedObjectReferences repeat across objects ("poweredOn", "host-12"):
    # one shared string each instead of one per object.
    return "" if text is None else intern(text)


@lru_cache(maxsize=256)
def converter(xsi_type: str | None) -> Callable[[str | None], Any]:
    """What turns the text of a value of this ``xsi:type`` (``None``: none) into the value."""
    if xsi_type is None:
        return _text
    local = xsi_type.rpartition(":")[2]
    if local in _INTEGERS:
        return _integer
    if local == "boolean":
        return _boolean
    if local in _FLOATS:
        return _float
    if local in _XSD_TEXT:
        return _text
    return _shared


def scalar(text: str | None, xsi_type: str | None) -> Any:
    """One value from its text (``None``: empty element) and its ``xsi:type`` (``None``: none)."""
    return converter(xsi_type)(text)


@lru_cache(maxsize=256)
def is_array(xsi_type: str | None) -> bool:
    """Whether a value of this ``xsi:type`` is an array (ArrayOfString, ArrayOfInt...)."""
    return xsi_type is not None and xsi_type.rpartition(":")[2].startswith("ArrayOf")


def item_type(local_name: str) -> str | None:
    """The type of an array item without ``xsi:type``: its element name says it (``<int>``...)."""
    if local_name in _INTEGERS or local_name in _FLOATS or local_name == "boolean":
        return local_name
    return None


def store_object(records: Records, obj_type: str, moid: str, props: dict[str, Any]) -> None:
    """Fold one ObjectContent (a retrieved object and the properties it was given) into records."""
    table = records.get(obj_type)
    if table is None:
        return
    known = table.get(moid)
    if known is None:
        table[moid] = props
    else:
        known.update(props)


def apply_update(records: Records, touched: set[str] | None, obj_type: str, moid: str, kind: str | None,
                 changes: Iterable[Change]) -> None:
    """Fold one ObjectUpdate (``enter``/``modify``/``leave`` and its property changes) into records."""
    table = records.get(obj_type)
    if table is None:
        return
    if touched is not None:
        touched.add(moid)
    if kind == "leave":
        table.pop(moid, None)
        return
    props = table.get(moid)
    if props is None:
        props = table[moid] = {}
    for name, op, value in changes:
        if op in _REMOVALS:
            props.pop(name, None)
        else:
            props[name] = value
