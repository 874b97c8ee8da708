"""The layers of ARCHITECTURE.md, held: no module imports another that imports it back (directly or through others),
and the decisions (plan/, the models) import no platform, adapter or effect."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"flops_operator": ROOT / "operator" / "flops_operator",
            "flops_learner": ROOT / "learner_image" / "flops_learner",
            "flops_aggregator": ROOT / "aggregator_image" / "flops_aggregator",
            "flops_builder": ROOT / "builder_image" / "flops_builder"}


def module_name(package: str, path: Path) -> str:
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    return ".".join((package, *parts)).removesuffix(".__init__")


def imports(package: str) -> nx.DiGraph:
    """Every import in the package's modules, module level or inside a function (a lazy import still ties two
    modules), as edges between the package's own modules. TYPE_CHECKING imports count too."""
    graph = nx.DiGraph()
    for path in PACKAGES[package].rglob("*.py"):
        name = module_name(package, path)
        is_package = path.name == "__init__.py"
        graph.add_node(name)
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
            for target in targets:
                if target.startswith(package) and target != name:
                    graph.add_edge(name, target)
    known = set(graph.nodes)
    graph.remove_nodes_from([n for n in list(graph.nodes) if n not in known or not _is_module(package, n)])
    return graph


def _is_module(package: str, name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    base = PACKAGES[package]
    return (base / rel).with_suffix(".py").exists() or (base / rel / "__init__.py").exists() or name == package


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycles(package):
    graph = imports(package)
    # A package's __init__ re-exporting its own modules is not a cycle between layers.
    graph.remove_nodes_from([n for n in list(graph.nodes)
                             if (PACKAGES[package] / Path(*n.split(".")[1:]) / "__init__.py").exists()])
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert cycles == []


@pytest.mark.parametrize("layer, forbidden", [
    ("flops_operator.plan", ("flops_operator.platforms", "flops_operator.adapters", "flops_operator.reconcile",
                             "flops_operator.act", "flops_operator.gather", "flops_operator.progress_mlflow",
                             "flops_operator.control_mlflow")),
    ("flops_operator.models", ("flops_operator.plan", "flops_operator.platforms", "flops_operator.adapters")),
    ("flops_operator.decide", ("flops_operator.platforms", "flops_operator.adapters", "flops_operator.act",
                               "flops_operator.progress_mlflow", "flops_operator.control_mlflow",
                               "flops_operator.sources", "flops_operator.gather")),
    ("flops_operator.world", ("flops_operator.platforms", "flops_operator.adapters", "flops_operator.gather")),
    ("flops_operator.platforms", ("flops_operator.adapters", "flops_operator.reconcile", "flops_operator.decide")),
])
def test_nothing_imports_upwards(layer, forbidden):
    graph = imports("flops_operator")
    offending = sorted((a, b) for a, b in graph.edges
                       if (a == layer or a.startswith(layer + ".")) and b.startswith(forbidden))
    assert offending == []
