"""Problems found in a cluster description, and the error that carries them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding, named by key path (``nodes[3].mac``) and source line."""

    severity: Severity
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        prefix = f"{self.path}: " if self.path else ""
        return f"{prefix}{self.message}{where}"


def by_line(problems: list[Problem]) -> list[Problem]:
    """The problems in the order of the file: by line, those without a line (about the whole
    file, or found before any line could be known) last; ties keep the order they were found."""
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


class ConfigError(Exception):
    """A cluster description that cannot be loaded; carries every error found, not just one,
    in the order of the file (``by_line``), so that one run of ``check`` shows them all."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = by_line([p for p in problems if p.severity is Severity.ERROR])
        self.warnings = by_line([p for p in problems if p.severity is Severity.WARNING])
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {count} error{'s' if count != 1 else ''}\n{lines}")

    def report(self) -> str:
        """Every error, then every warning: what ``check`` and ``pack`` print."""
        lines = [f"{self.source}: {len(self.problems)} error(s):"]
        lines += [f"  {p}" for p in self.problems]
        if self.warnings:
            lines.append(f"and {len(self.warnings)} warning(s):")
            lines += [f"  {w}" for w in self.warnings]
        return "\n".join(lines)
