"""Rules of the suite that a linter does not check: every skip goes through the strict-mode
guard (so CI, which sets BOOTSTRAPPERD_TEST_STRICT=1, can never pass by skipping)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import need_tools

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
DIRECT_SKIP = re.compile(r"pytest\.(skip|importorskip)\(|pytest\.mark\.(skip|skipif)\b")


def test_every_skip_goes_through_the_strict_mode_guard() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name != "conftest.py" and path != Path(__file__)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if DIRECT_SKIP.search(line)
    ]
    assert offenders == [], "use tests.conftest.need()/unavailable():\n" + "\n".join(offenders)


def test_the_guard_fails_in_strict_mode() -> None:
    text = (TESTS / "conftest.py").read_text()
    guard = text[text.index("def unavailable") : text.index("def need(")]
    assert 'os.environ.get("BOOTSTRAPPERD_TEST_STRICT") == "1"' in guard
    assert guard.index("pytest.fail") < guard.index("pytest.skip")


def _documented_layout() -> set[str]:
    """The top-level entries of bootstrapperd/ that docs/architecture.md's layout names."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text[text.index("## Layout") :].split("```")[1]
    lines = block.splitlines()
    start = lines.index("bootstrapperd/") + 1
    names: set[str] = set()
    for line in lines[start:]:
        if not line.startswith("  "):
            break  # the next top-level directory
        first = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0] if line[2] != " " else ""
        names.update(re.findall(r"[\w.]+/|[\w]+\.py", first))
    return names


def test_the_architecture_layout_matches_the_tree() -> None:
    package = ROOT / "bootstrapperd"
    actual = {
        f"{path.name}/" if path.is_dir() else path.name
        for path in package.iterdir()
        if path.name not in ("__init__.py", "__pycache__", "_config")
        if path.is_dir() or path.suffix == ".py"
    }
    assert _documented_layout() == actual


def test_the_readme_links_the_architecture_not_a_path_outside() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/architecture.md" in readme
    assert "../shared" not in readme


def test_the_site_install_script_passes_shellcheck() -> None:
    need_tools("shellcheck")
    script = ROOT / "config" / "site" / "install-bootstrapper.sh"
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
