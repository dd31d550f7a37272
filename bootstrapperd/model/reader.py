"""Typed access to the parsed YAML tree that records every problem with its key path and line."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network
from typing import Any, TypeVar

from .errors import Problem, Severity
from .fields import parse_bool
from .yamlsrc import Path, SourceMap, format_path

T = TypeVar("T")
MISSING: Any = object()


def type_name(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Reader:
    """Collects errors and warnings while the loader reads values out of the tree."""

    def __init__(self, smap: SourceMap) -> None:
        self.smap = smap
        self.problems: list[Problem] = []

    # ---- reporting --------------------------------------------------------------------------
    def error(self, path: Path, message: str) -> None:
        self._add(Severity.ERROR, path, message)

    def warn(self, path: Path, message: str) -> None:
        self._add(Severity.WARNING, path, message)

    def _add(self, severity: Severity, path: Path, message: str) -> None:
        self.problems.append(Problem(severity, format_path(path), message, self.smap.line(path)))

    def failed(self) -> bool:
        return any(p.severity is Severity.ERROR for p in self.problems)

    def unknown_keys(self, mapping: dict[str, Any], path: Path, known: Iterable[str]) -> None:
        known_set = set(known)
        for key in mapping:
            if key not in known_set:
                self.warn((*path, key), "unknown key, ignored")

    def text(self, parent: dict[str, Any], path: Path, key: str) -> str | None:
        """A scalar as the person wrote it (``off`` stays "off", ``7.10`` stays "7.10")."""
        value = parent.get(key)
        if value is None or isinstance(value, (dict, list)):
            return None
        written = self.smap.texts.get((*path, key))
        return written if written is not None else str(value)

    # ---- typed getters ---------------------------------------------------------------------------
    def mapping(self, parent: dict[str, Any], path: Path, key: str) -> dict[str, Any]:
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error((*path, key), f"expected a mapping, got {type_name(value)}")
            return {}
        return value

    def sequence(self, parent: dict[str, Any], path: Path, key: str) -> list[Any]:
        value = parent.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error((*path, key), f"expected a list, got {type_name(value)}")
            return []
        return value

    def string(
        self, parent: dict[str, Any], path: Path, key: str, default: T | None = None
    ) -> str | T | None:
        value = parent.get(key)
        if value is None:
            return default
        if isinstance(value, (bool, int, float, str)):
            # Go's yaml.v2 read `off`, `7.10` or `3:00` into a string field as written; PyYAML
            # made them False, 7.1 and 180. Give back what the person wrote, as Sextant did.
            return self.text(parent, path, key)
        self.error((*path, key), f"expected a string, got {type_name(value)}")
        return default

    def boolean(self, parent: dict[str, Any], path: Path, key: str, default: bool) -> bool:
        value = parent.get(key)
        if value is None:
            return default
        parsed = parse_bool(value)
        if parsed is None:
            self.error((*path, key), f"{value!r} is not a boolean (use y/n, yes/no, true/false)")
            return default
        return parsed

    def integer(
        self, parent: dict[str, Any], path: Path, key: str, default: int, low: int, high: int
    ) -> int:
        value = parent.get(key)
        if value is None:
            return default
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
            number = int(value.strip())
        if number is None or not low <= number <= high:
            self.error((*path, key), f"{value!r} is not a whole number from {low} to {high}")
            return default
        return number

    def ipv4(self, parent: dict[str, Any], path: Path, key: str) -> IPv4Address | None:
        value = parent.get(key)
        if value is None:
            return None
        return self.ipv4_value(value, (*path, key))

    def ipv4_value(self, value: object, path: Path) -> IPv4Address | None:
        if isinstance(value, str):
            try:
                return IPv4Address(value.strip())
            except ValueError:
                pass
        self.error(path, f"{value!r} is not an IPv4 address")
        return None

    def ipv4_list(self, parent: dict[str, Any], path: Path, key: str) -> list[IPv4Address] | None:
        """A list of addresses; a single string (or ``a, b``) is accepted, as Sextant did."""
        value = parent.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            items: list[tuple[object, Path]] = [
                (part.strip(), (*path, key)) for part in value.split(",") if part.strip()
            ]
        elif isinstance(value, list):
            items = [(item, (*path, key, i)) for i, item in enumerate(value)]
        else:
            self.error((*path, key), f"expected a list of IPv4 addresses, got {type_name(value)}")
            return []
        out = []
        for item, item_path in items:
            address = self.ipv4_value(item, item_path)
            if address is not None:
                out.append(address)
        return out

    def network(self, parent: dict[str, Any], path: Path, key: str) -> IPv4Network | None:
        value = parent.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                net = IPv4Network(value.strip(), strict=False)
            except ValueError:
                pass
            else:
                if str(net.network_address) != value.strip().split("/")[0]:
                    self.warn((*path, key), f"{value!r} has host bits set; using {net}")
                return net
        self.error((*path, key), f"{value!r} is not an IPv4 network (like 10.100.0.0/24)")
        return None

    def choice(
        self,
        parent: dict[str, Any],
        path: Path,
        key: str,
        choices: Iterable[str],
        default: str,
        convert: Callable[[str], str] = str.lower,
    ) -> str:
        options = list(choices)
        raw = self.string(parent, path, key)
        if raw is None:
            return default
        value = convert(raw.strip())
        if value not in options:
            self.error((*path, key), f"{raw!r} is not one of: {', '.join(options)}")
            return default
        return value
