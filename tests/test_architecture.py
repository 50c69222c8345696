"""The layout's rules, checked on the source: modules stay small, no import cycle, imports point down the
layers, Ray only in execution/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mgr_batch"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The mgr_batch modules ``name`` imports, at any depth of its code (lazy imports count too)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != name}


def _external(name: str) -> set[str]:
    tree = ast.parse(MODULES[name].read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            roots.add((node.module or "").split(".")[0])
    return roots


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_400_lines(name):
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES


def _cycle() -> list[str] | None:
    """One import cycle among the package's modules, or None. A package's ``__init__`` re-exporting its own
    modules is not an edge back (``mgr_batch.config`` importing ``mgr_batch.config.settings``)."""
    graph = {m: {d for d in _imports(m) if not d.startswith(m + ".")} for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_even_through_lazy_imports():
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_ray_is_imported_only_in_execution():
    users = sorted(m for m in MODULES if "ray" in _external(m) and not m.startswith("mgr_batch.execution"))
    assert users == []


#: The layers in pipeline order (docs/architecture.md); a layer imports nothing from those above it.
ABOVE = {
    "io": ("clips", "features", "models", "stages", "evaluation", "plots", "execution"),
    "stages": ("evaluation", "plots", "execution"),
}
#: Known exceptions, to move: the segment stage renders its figure itself.
UPWARD = {"mgr_batch.stages.segment -> mgr_batch.plots.segmentation"}


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_imports_point_down_the_layers(layer):
    up = tuple(f"mgr_batch.{a}" for a in ABOVE[layer])
    found = sorted(
        f"{m} -> {d}"
        for m in MODULES
        if m.startswith(f"mgr_batch.{layer}.")
        for d in _imports(m)
        if d in up or d.startswith(tuple(u + "." for u in up))
    )
    assert [f for f in found if f not in UPWARD] == []


def test_the_checks_see_the_package():
    """The rules above would pass on an empty listing: the package's stages are all there."""
    for folder in ("io", "clips", "features", "models", "stages", "evaluation", "plots", "execution", "cli", "config"):
        assert f"mgr_batch.{folder}" in MODULES
    assert "mgr_batch.io.storage" in _imports("mgr_batch.stages.decode")
    assert "mgr_batch.models.temperature" in _imports("mgr_batch.stages.predict")
