"""The house rules of ``shipkit/``: layers import only downward, and no module imports itself back.

Every import counts: top-level ones, those under ``if TYPE_CHECKING:`` and those inside
functions, since an import hidden in a function is still a dependency the reader has to know
about. The layers, lowest first (``docs/architecture.md`` draws them):

    base        shipkit/*.py modules: errors, config, models, connection, server, _jetstream ...
    primitives  shipkit/primitives/
    jobs        shipkit/jobs/
    service     shipkit/service/
    agents      shipkit/agents/  (the agent protocol's caller, over the service layer's wire helpers)
    dashboard   shipkit/dashboard/ (the web dashboard; reads NATS through the layers below)
    edge        shipkit/cli/, shipkit/testing.py, the shipkit package itself
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "shipkit"

LAYERS = ("base", "primitives", "jobs", "service", "agents", "dashboard", "edge")

ALLOWED_UPWARD = {
    # Service.run() is the one documented convenience call up the layer: a script can call
    # service.run() without importing the runner. It is imported inside the method.
    ("shipkit.service.app", "shipkit.service.runner"),
}


def module_name(path: Path) -> str:
    """``shipkit/service/app.py`` -> ``shipkit.service.app``; a package's ``__init__`` -> the package."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    """The layer a shipkit module belongs to."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("cli", "testing"):
        return "edge"
    if parts[1] in ("primitives", "jobs", "service", "agents", "dashboard"):
        return parts[1]
    return "base"


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every shipkit module ``path`` imports, anywhere in the file (resolved to known modules)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from shipkit.service import consumers` names a submodule: that is the dependency
            # (the package's own __init__ runs for any submodule import, so it is not counted)
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            found.update(submodules or {target})
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    """Module -> the shipkit modules it imports."""
    paths = sorted(PACKAGE_DIR.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) for p in paths}


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """``a (layer) -> b (higher layer)`` for every import that goes up a layer."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    found = []
    for module, targets in graph.items():
        for target in targets:
            if (module, target) in ALLOWED_UPWARD:
                continue
            if rank[layer_of(target)] > rank[layer_of(module)]:
                found.append(f"{module} ({layer_of(module)}) -> {target} ({layer_of(target)})")
    return sorted(found)


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def _without_allowed(graph: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    return {m: {t for t in targets if (m, t) not in ALLOWED_UPWARD} for m, targets in graph.items()}


def test_no_import_goes_up_a_layer() -> None:
    """No shipkit module imports one of a higher layer (TYPE_CHECKING and in-function imports included)."""
    assert upward_imports(import_graph()) == []


def test_no_import_cycles() -> None:
    """The module graph of shipkit has no cycle (TYPE_CHECKING and in-function imports included)."""
    assert find_cycles(_without_allowed(import_graph())) == []


def test_every_module_has_a_layer_and_the_graph_is_complete() -> None:
    """The checker sees the modules it must: each layer has modules, and known edges are found."""
    graph = import_graph()
    assert {layer_of(m) for m in graph} == set(LAYERS)
    assert "shipkit.errors" in graph["shipkit.connection"]
    assert "shipkit.service.host" in graph["shipkit.service.context"]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set(), "c": {"b"}}, []),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_find_cycles_reports_each_cycle(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    """The cycle finder reports every cycle, and nothing for an acyclic graph."""
    assert find_cycles(graph) == expected


def test_upward_imports_are_reported_with_their_layers() -> None:
    """An import from a primitive into the service layer is reported, naming both layers."""
    graph = {"shipkit.primitives.kv": {"shipkit.service.app", "shipkit.errors"}}
    assert upward_imports(graph) == ["shipkit.primitives.kv (primitives) -> shipkit.service.app (service)"]


PUBLIC_PACKAGES = ("shipkit", "shipkit.primitives", "shipkit.jobs", "shipkit.service", "shipkit.cli")


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_public_packages_have_a_curated_sorted_all(package: str) -> None:
    """Each public package lists its names in a sorted ``__all__``, and every listed name exists."""
    module = importlib.import_module(package)
    names = list(module.__all__)
    assert names == sorted(names), f"{package}.__all__ is not sorted"
    assert len(names) == len(set(names)), f"{package}.__all__ lists a name twice"
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == []
