"""The commands the guides give (docs/getting-started.md, docs/migrating-from-sextant.md), for
the tests that run them: a fenced block right after ``<!-- tested: NAME -->`` is run as written
by a test, and every ``bootstrapperd``/``bootstrapperd-pack`` line of any block must parse with
the real command line parser."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GETTING_STARTED = REPO / "docs" / "getting-started.md"
MIGRATING = REPO / "docs" / "migrating-from-sextant.md"
GUIDES = (GETTING_STARTED, MIGRATING)

_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_TESTED = re.compile(r"<!-- tested: ([a-z-]+) -->\n```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _lines(block: str) -> list[str]:
    """Command lines: comments and blank lines dropped, backslash continuations joined."""
    text = block.replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def marked_block(guide: Path, name: str) -> list[str]:
    """The command lines of the block marked ``<!-- tested: name -->``."""
    found = {m.group(1): m.group(2) for m in _TESTED.finditer(guide.read_text())}
    assert name in found, f"{guide.name} has no block marked <!-- tested: {name} -->"
    return _lines(found[name])


def commands(guide: Path, *programs: str) -> list[list[str]]:
    """Every line of every fenced block of ``guide`` that runs one of ``programs``, split as
    the shell would (the parts of ``a && b`` separately)."""
    found = []
    for block in _FENCE.finditer(guide.read_text()):
        for line in _lines(block.group(1)):
            for part in re.split(r"\s*(?:&&|\|\||;)\s*", line):
                try:
                    argv = shlex.split(part, comments=True)
                except ValueError:
                    continue
                if argv and argv[0] == "sudo":
                    argv = argv[1:]
                if argv and Path(argv[0]).name in programs:
                    found.append(argv)
    return found
