"""One section of the configuration, read with typed getters whose errors name file, section and key.

:mod:`ftreport.config` reads the files into sections and the keys every source shares; each
source module reads its own keys from the same :class:`Section` (``read_settings``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .errors import ConfigError, PasswordError
from .filters import parse_patterns

__all__ = ["Section"]

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off", ""}


def _no_key(_value: str) -> str:
    raise PasswordError("no key to decrypt it with")


class Section:
    """Values of one section (key -> (value, file)), with typed getters.

    ``decrypt`` turns an ``encrypted_password`` value into the password (with the configured keys)."""

    def __init__(self, name: str, values: Mapping[str, tuple[str, str]], origin: str = "<none>",
                 decrypt: Callable[[str], str] = _no_key) -> None:
        self.name = name
        self.values = values
        self.origin = origin  # the file that defines the section
        self._decrypt = decrypt

    def file_of(self, key: str | None = None) -> str:
        if key and key in self.values:
            return self.values[key][1]
        return self.origin

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, file=self.file_of(key), section=self.name, key=key)

    def get(self, key: str, default: str | None = None) -> str | None:
        if key in self.values:
            return self.values[key][0]
        return default

    def flag(self, key: str, default: bool = False) -> bool:
        raw = self.get(key)
        if raw is None:
            return default
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise self.error(key, f"expected a boolean (yes/no, true/false, 1/0), got {raw!r}")

    def number(self, key: str, default: float, *, minimum: float = 0.0, integer: bool = False) -> float:
        raw = self.get(key)
        if raw is None or raw.strip() == "":
            return default
        try:
            val = float(int(raw)) if integer else float(raw)
        except ValueError as exc:
            kind = "an integer" if integer else "a number"
            raise self.error(key, f"expected {kind}, got {raw!r}") from exc
        if val < minimum:
            raise self.error(key, f"must be at least {minimum:g}, got {raw!r}")
        return val

    def secret(self, plain: str, encrypted: str) -> str | None:
        """The value of ``plain``, else ``encrypted`` decrypted, else None."""
        value = self.get(plain)
        if value:
            return value
        enc = self.get(encrypted)
        if enc:
            try:
                return self._decrypt(enc)
            except PasswordError as exc:
                raise self.error(encrypted, str(exc)) from exc
        return value

    def patterns(self, *keys: str) -> tuple[str, ...]:
        """The pattern list of the first of ``keys`` that is set (virt-who's old spellings last)."""
        for key in keys:
            raw = self.get(key)
            if raw:
                try:
                    return parse_patterns(raw)
                except ValueError as exc:
                    raise self.error(key, str(exc)) from exc
        return ()
