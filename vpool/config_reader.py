"""The one strict reader of the daemons' TOML files (``coordinator.toml``, ``signer.toml``).

Every value is read through a ``Table``, which records the keys it was asked for. Once the whole
configuration is read, ``Table.finish`` on the document refuses the first key nothing asked for,
named by its dotted place (``pool.min_confs: unknown key``, ``signers[1].tlsname: unknown
key``): a typo never leaves a default silently in force. Errors name the key and what was
expected (``server.max_message_bytes: expected an integer``); bounds are the caller's, with
the same spelling (``chain.fee_floor: must be at least 1000``).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_REQUIRED: Any = object()
"""The default of a key that must be present."""

_KINDS: dict[type, str] = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "an array",
}


class ConfigError(ValueError):
    """A configuration that cannot be used; the message starts with the key at fault."""


def read_document(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


class Table:
    """Typed access to one TOML table (the document itself, ``[name]`` or one ``[[name]]``
    entry); relative paths are resolved in ``base``."""

    def __init__(
        self,
        doc: Mapping[str, Any],
        base: Path,
        prefix: str = "",
        _tables: list[Table] | None = None,
    ) -> None:
        self.doc = doc
        self.base = base
        self.prefix = prefix
        self._asked: set[str] = set()
        self._tables: list[Table] = [] if _tables is None else _tables
        self._tables.append(self)

    def key(self, name: str) -> str:
        """The dotted place of ``name`` (``server.tls.cert``)."""
        return f"{self.prefix}.{name}" if self.prefix else name

    def has(self, name: str) -> bool:
        return name in self.doc

    def finish(self) -> None:
        """Refuse the first key of this table and of those read from it that nothing asked for."""
        for table in self._tables:
            unknown = sorted(set(table.doc) - table._asked)
            if unknown:
                raise ConfigError(f"{table.key(unknown[0])}: unknown key")

    def missing(self, name: str, why: str = "") -> ConfigError:
        """The error of a required key that is absent: a misspelling of it, when the table has
        one nothing asked for, is named as the unknown key it is."""
        others = [k for k in self.doc if k not in self._asked and isinstance(k, str)]
        close = difflib.get_close_matches(name, others, n=1, cutoff=0.8)
        if close:
            return ConfigError(f"{self.key(close[0])}: unknown key (did you mean {name}?)")
        return ConfigError(f"{self.key(name)}: missing{f' ({why})' if why else ''}")

    def _get(self, name: str, required: bool) -> Any:
        self._asked.add(name)
        if name not in self.doc and required:
            raise self.missing(name)
        return self.doc.get(name)

    # --- tables ---------------------------------------------------------------------------------

    def table(self, name: str, required: bool = False) -> Table:
        """``[name]`` (empty when absent and not required)."""
        value = self._get(name, required)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.key(name)}: expected a table [{self.key(name)}]")
        return Table(value, self.base, self.key(name), self._tables)

    def tables(self, name: str) -> list[Table]:
        """The entries of ``[[name]]``, each named ``name[i]`` in errors."""
        value = self._get(name, False)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"{self.key(name)}: expected an array of tables [[{self.key(name)}]]")
        entries = []
        for i, entry in enumerate(value):
            if not isinstance(entry, dict):
                raise ConfigError(f"{self.key(name)}[{i}]: expected a table")
            entries.append(Table(entry, self.base, f"{self.key(name)}[{i}]", self._tables))
        return entries

    # --- values ---------------------------------------------------------------------------------

    def value(self, name: str, kind: type, default: Any = _REQUIRED) -> Any:
        """The value at ``name`` of type ``kind`` (int, float, str, bool or list; an integer is
        a float too, a boolean is not an integer); required unless a default is given."""
        value = self._get(name, default is _REQUIRED)
        if value is None:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{self.key(name)}: expected {_KINDS.get(kind, kind.__name__)}")
        return value

    def string(self, name: str, default: str | None = None) -> str:
        """The non-empty string at ``name``; required unless a default is given."""
        if default is None or name in self.doc:
            return self._string(name)
        self._asked.add(name)
        return default

    def optional_string(self, name: str) -> str | None:
        self._asked.add(name)
        return self._string(name) if name in self.doc else None

    def _string(self, name: str) -> str:
        value = self._get(name, True)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.key(name)}: expected a non-empty string")
        return value

    def strings(self, name: str, required: bool = True) -> list[str]:
        value = self._get(name, required)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self.key(name)}: expected an array of non-empty strings")
        return value

    def integer(self, name: str, default: int | None = None) -> int:
        value = self._get(name, default is None)
        if value is None and default is not None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: expected an integer")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: expected true or false")
        return value

    def seconds(self, name: str, default: float) -> float:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < 1e6:
            raise ConfigError(f"{self.key(name)}: expected a number of seconds above 0")
        return float(value)

    def path(self, name: str, *, must_exist: bool = True) -> Path:
        """The file named at ``name``, relative to ``base``; it must exist unless told."""
        resolved = (self.base / Path(self._string(name)).expanduser()).resolve()
        if must_exist and not resolved.is_file():
            raise ConfigError(f"{self.key(name)}: file not found ({resolved})")
        return resolved

    def optional_path(self, name: str, *, required: bool) -> Path | None:
        self._asked.add(name)
        if required or name in self.doc:
            return self.path(name)
        return None
