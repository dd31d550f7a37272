"""Dependencies point one way.

Read off the source (every import statement of the package's own modules, at any depth, also
under ``TYPE_CHECKING``): no import cycle exists; no import of the package's own modules hides
inside a function (the one deferred import allowed is named below, with its reason); each layer
imports only layers below it; ``protocols/`` never imports ``bootstrapperd/``; the daemon never
imports the lab. And, in fresh interpreters, every module imports first, alone, in any order.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bootstrapperd", "protocols")

# Deferred on purpose, and not hiding a cycle (the graph below includes them).
ALLOWED_DEFERRED = {
    # `bootstrapperd demo` only: `check`, `serve` and `render` start without the VM lab.
    ("bootstrapperd.cli", "bootstrapperd.lab.demo"),
}

# Layers, lowest first: a module may import its own layer and the layers below, never above.
# (docs/architecture.md describes the same table.)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("protocols",),
    ("bootstrapperd.runtime", "bootstrapperd.routes", "bootstrapperd.oci.reference"),
    ("bootstrapperd.model",),
    (
        "bootstrapperd.bsroot",
        "bootstrapperd.machines",
        "bootstrapperd.download",
        "bootstrapperd.options",
    ),
    ("bootstrapperd.render", "bootstrapperd.oci"),
    (
        "bootstrapperd.dhcp",
        "bootstrapperd.ra",
        "bootstrapperd.tftp",
        "bootstrapperd.dns",
        "bootstrapperd.registry",
        "bootstrapperd.http",
        "bootstrapperd.pack",
        "bootstrapperd.power",
    ),
    ("bootstrapperd.daemon",),
    ("bootstrapperd.preflight", "bootstrapperd.operator"),
    ("bootstrapperd.lab",),
    ("bootstrapperd.cli", "bootstrapperd.__main__"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _own(name: str) -> str | None:
    """The package module ``name`` is, or is inside of (a name imported from a module)."""
    known = modules()
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str) -> Iterator[tuple[str, bool]]:
    """(imported package module, deferred?) for every import statement in module ``name``."""
    path = modules()[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = set(map(id, tree.body))
    for stmt in tree.body:  # TYPE_CHECKING blocks count as top level
        if isinstance(stmt, ast.If):
            top_level.update(map(id, stmt.body))
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = []
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # A submodule imported by name needs only itself; any other name comes
                # from the module (or package __init__) ``base``.
                targets.append(submodule if submodule in modules() else base)
        for target in targets:
            own = _own(target)
            if own is not None and own != name:
                yield own, id(node) not in top_level


def graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in imports_of(name)} for name in modules()}


def test_the_graph_sees_the_whole_package() -> None:
    names = modules()
    assert "bootstrapperd.machines.resolver" in names
    assert "protocols.dhcp.server" in names
    assert len(names) > 100
    edges = graph()
    assert "bootstrapperd.machines.resolver" in edges["bootstrapperd.daemon"]
    assert "bootstrapperd.machines.leases" in edges["bootstrapperd.machines.resolver"]


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "\n".join(" → ".join(cycle) for cycle in cycles)


def test_no_deferred_import_of_the_package() -> None:
    deferred = {
        (name, target)
        for name in modules()
        for target, is_deferred in imports_of(name)
        if is_deferred
    }
    assert deferred == ALLOWED_DEFERRED


def layer_of(name: str) -> int:
    best, index = "", -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, i
    return index


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in modules() if name != "bootstrapperd" and layer_of(name) < 0]
    assert unplaced == []


def test_layers_import_only_downwards() -> None:
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in graph().items()
        for target in targets
        if name != "bootstrapperd" and target != "bootstrapperd"
        if layer_of(target) > layer_of(name)
    ]
    assert upward == [], "\n".join(upward)


SERVICES = (
    "bootstrapperd.dhcp",
    "bootstrapperd.ra",
    "bootstrapperd.tftp",
    "bootstrapperd.dns",
    "bootstrapperd.http",
    "bootstrapperd.registry",
    "bootstrapperd.pack",
)
# The one exception: the HTTP app shows the registry's state (API, status page, metrics).
SERVICE_EXCEPTIONS = {("bootstrapperd.http", "bootstrapperd.registry")}


def _service(name: str) -> str | None:
    return next((s for s in SERVICES if name == s or name.startswith(s + ".")), None)


def test_services_do_not_import_one_another() -> None:
    crossings = {
        (_service(name), _service(target))
        for name, targets in graph().items()
        for target in targets
        if _service(name) and _service(target) and _service(name) != _service(target)
    }
    assert crossings == SERVICE_EXCEPTIONS


def test_only_the_cli_uses_the_lab() -> None:
    users = {
        name
        for name, targets in graph().items()
        if not name.startswith("bootstrapperd.lab")
        for target in targets
        if target.startswith("bootstrapperd.lab")
    }
    assert users == {"bootstrapperd.cli"}


def test_protocols_never_import_bootstrapperd() -> None:
    offenders = [
        (name, target)
        for name, targets in graph().items()
        if name.startswith("protocols")
        for target in targets
        if target.startswith("bootstrapperd")
    ]
    assert offenders == []


IMPORT_EACH = """
import importlib, sys
names = sys.argv[1:]
for name in names:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("bootstrapperd", "protocols")]:
        del sys.modules[loaded]
    importlib.import_module(name)
print("ok", len(names))
"""


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_first_in_a_fresh_package(order: str) -> None:
    """Each module is imported with none of the package loaded before it (third-party modules
    stay loaded, so the run is quick), in both orders."""
    names = sorted(modules())
    if order == "reversed":
        names.reverse()
    names = [name for name in names if not name.endswith("__main__")]
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, *names],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ok", str(len(names))]
