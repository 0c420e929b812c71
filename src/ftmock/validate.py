"""Checks on request bodies, so bad input is a 400 naming the field rather than a 500."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import BadRequest

__all__ = ["INT64_MAX", "INT64_MIN", "MAX_DEPTH", "check_nesting", "facts_map", "int_text", "opt_str", "parse_json",
           "req_dict", "req_str", "str_list"]

MAX_STR = 4096
MAX_DEPTH = 32
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def int_text(text: str, what: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """An integer from a query parameter or header, within what SQLite (and reason) can hold."""
    stripped = text.strip()
    if not stripped or len(stripped) > 20 or not stripped.lstrip("+-").isascii() \
            or not stripped.lstrip("+-").isdigit():
        raise BadRequest(f"{what} must be an integer")
    value = int(stripped)
    if not low <= value <= high:
        raise BadRequest(f"{what} must be between {low} and {high}")
    return value


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > 19 or not INT64_MIN <= int(text) <= INT64_MAX:
        raise BadRequest(f"Integer {text[:24]}{'...' if len(text) > 24 else ''} is out of range (64 bits)")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"Number {text[:24]} is out of range")
    return value


def _json_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON")


# Every ASCII digit becomes "0" and every other byte a space: a run of 19 digits shows as "0" * 19.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
# The only way a lone surrogate gets into a string decoded from valid UTF-8: a \uD800-\uDFFF escape.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_tree(value: Any, what: str, texts: bool = True, depth: int = 1) -> None:
    """Depth and text checks, iteratively: bounded nesting, and strings that are valid Unicode."""
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if texts:
                _check_text(item, what)
        elif isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                raise BadRequest(f"{what} is nested more than {MAX_DEPTH} levels deep")
            if isinstance(item, dict):
                for key, sub in item.items():
                    if texts:
                        _check_text(key, what)
                    stack.append((sub, depth + 1))
            else:
                stack.extend((sub, depth + 1) for sub in item)


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} holds a string that is not valid Unicode (a lone surrogate)") from None


def check_nesting(value: Any, what: str, depth: int = 1) -> None:
    """The nesting bound of `parse_json` for a part of a document found at `depth` (the top is 1)."""
    _check_tree(value, what, texts=False, depth=depth)


def parse_json(body: bytes, what: str = "request body", nesting: bool = True) -> Any:
    """Decode a JSON body strictly: UTF-8 only, no NaN/Infinity, 64-bit integers, bounded depth.

    ``json.loads`` alone would guess UTF-16/32, accept lone surrogates and huge numbers and recurse
    without limit; each of those later failed deep inside a handler or the database as a 500.

    A caller that walks the whole document anyway may pass ``nesting=False`` and bound the depth
    itself (`check_nesting`); the text checks are still made here.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not UTF-8 encoded JSON") from None
    if not text.strip():
        return None
    # Checking every integer costs a Python call per number; only a run of 19 digits or more can
    # be an integer beyond 64 bits (or one slow to convert), so without one the check is skipped.
    long_numbers = b"0" * 19 in body.translate(_DIGITS_ONLY)
    try:
        value = json.loads(text, parse_int=_json_int if long_numbers else None, parse_float=_json_float,
                           parse_constant=_json_constant)
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"Malformed JSON in {what}: {exc}") from None
    texts = _SURROGATE_ESCAPE.search(text) is not None
    if texts or nesting:
        _check_tree(value, what, texts=texts)
    return value


def req_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def req_str(body: dict[str, Any], key: str, what: str = "", max_len: int = 255) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{what or key} is required and must be a non-empty string")
    if len(value) > max_len:
        raise BadRequest(f"{what or key} is longer than {max_len} characters")
    return value


def opt_str(body: dict[str, Any], key: str, max_len: int = 255) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    if len(value) > max_len:
        raise BadRequest(f"{key} is longer than {max_len} characters")
    return value


def facts_map(value: Any, what: str = "facts") -> dict[str, str]:
    """Facts are a flat string map; scalars are turned into strings as Candlepin stores them."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object of strings")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or len(key) > 255:
            raise BadRequest(f"{what}: key longer than 255 characters")
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, (str, int, float)):
            text = str(item)
            if len(text) > 2 * MAX_STR:
                raise BadRequest(f"{what}: value of {key!r} is too long")
            out[key] = text
        elif item is None:
            continue
        else:
            raise BadRequest(f"{what}: value of {key!r} must be a string")
    return out


def str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{what} must be a list of strings")
    return list(value)
