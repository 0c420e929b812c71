"""Checks on request bodies, so bad input is a 400 naming the field rather than a 500."""

from __future__ import annotations

from typing import Any

from .errors import BadRequest

__all__ = ["facts_map", "opt_str", "req_dict", "req_str", "str_list"]

MAX_STR = 4096


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
        if len(key) > 255:
            raise BadRequest(f"{what}: key longer than 255 characters")
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, str | int | float):
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
