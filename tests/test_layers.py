"""The package's import graph: no cycle, and every import points down the layer table below.

Every module of `zoo` is parsed with `ast` (no import is executed). All imports count, those inside
functions included, except the ones under `if TYPE_CHECKING:` (annotations only). A module may import
its own layer and the layers below it; the foundation modules are importable from anywhere and import
only each other; the package facade `zoo/__init__.py` re-exports the public API and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import zoo

# Top first. A module belongs to the layer of the longest prefix that names it (the prefix itself or a
# module under it). A new module must be placed here, or the coverage test fails. Checkpoints sit below
# runs: a run writes its checkpoints and training state through zoo.checkpoint, which builds agents
# from the registry and never runs anything.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cli", ("zoo.cli",)),
    ("tune", ("zoo.tune",)),
    ("runs", ("zoo.runs", "zoo.resume")),
    ("hub/checkpoint", ("zoo.hub", "zoo.checkpoint")),
    ("config/registry", ("zoo.config", "zoo.registry", "zoo.hyperparams")),
    ("datagen", ("zoo.datagen",)),
    ("evaluation/plots", ("zoo.evaluation", "zoo.plots")),
    ("agents", ("zoo.agents", "zoo.validation")),  # validation reads agents' signatures and recipes
    ("nn", ("zoo.nn",)),
    ("data", ("zoo.data",)),
    ("envs", ("zoo.envs",)),
)
FOUNDATION: tuple[str, ...] = ("zoo.io", "zoo.errors", "zoo.threads", "zoo.allocator")
FACADE = "zoo"

ROOT = Path(zoo.__file__).parent


def module_name(path: Path) -> str:
    parts = ("zoo", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def where(module: str) -> str:
    return str(MODULES[module].relative_to(ROOT.parent))


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """(zoo module, line) for every import of `source`, skipping `if TYPE_CHECKING:` bodies.

    `from a.b import c` names the module a.b.c when that is a module, else a.b; relative imports are
    resolved against `module` (a package resolves `.` to itself).
    """
    found: list[tuple[str, int]] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((target if target in known else base, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return [(name, line) for name, line in found if name == "zoo" or name.startswith("zoo.")]


def graph() -> dict[str, list[tuple[str, int]]]:
    known = set(MODULES)
    edges = {}
    for name, path in MODULES.items():
        targets = imported_modules(path.read_text(), name, path.name == "__init__.py", known)
        edges[name] = sorted({(t, line) for t, line in targets if t != name}, key=lambda e: (e[1], e[0]))
    return edges


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, name): rank 0 is the top; the foundation ranks below every layer; None: not placed."""
    if module == FACADE:
        return -1, "facade"
    if any(module == p or module.startswith(p + ".") for p in FOUNDATION):
        return len(LAYERS), "foundation"
    best = None
    for rank, (layer, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), rank, layer)
    return None if best is None else (best[1], best[2])


def find_cycle(edges: dict[str, list[tuple[str, int]]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative DFS with white/grey/black marks)."""
    state: dict[str, int] = {}
    for start in sorted(edges):
        if state.get(start):
            continue
        stack = [(start, iter(sorted({t for t, _ in edges.get(start, [])})))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted({t for t, _ in edges.get(child, [])}))))
    return None


def strongly_connected(edges: dict[str, list[tuple[str, int]]]) -> list[set[str]]:
    """The groups of modules on an import cycle: each reaches every other (or itself) through imports."""
    reach = {}
    for start in edges:
        seen, todo = set(), [start]
        while todo:
            for target, _ in edges.get(todo.pop(), []):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        reach[start] = seen
    groups = {frozenset({m, *(n for n in reach[m] if m in reach.get(n, ()))}) for m in edges if m in reach[m]}
    return [set(g) for g in sorted(groups, key=sorted)]


# ---------------------------------------------------------------------------------------------------
# The checker itself, on sources written for it (so that the rules below can fail).


def test_parser_counts_function_imports_and_skips_type_checking_blocks():
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
import zoo.io
from zoo.data import tasks, Task
from . import dataset
if TYPE_CHECKING:
    from zoo.agents.base import OfflineAlgorithm
else:
    import zoo.errors
def f():
    from zoo.evaluation import evaluate_returns
    if typing.TYPE_CHECKING:
        import zoo.runs
"""
    known = {"zoo.io", "zoo.data", "zoo.data.tasks", "zoo.data.dataset", "zoo.errors", "zoo.evaluation"}
    found = imported_modules(source, "zoo.data.minari_io", False, known)
    assert found == [
        ("zoo.io", 4),
        ("zoo.data.tasks", 5),
        ("zoo.data", 5),
        ("zoo.data.dataset", 6),
        ("zoo.errors", 10),
        ("zoo.evaluation", 12),
    ]
    assert imported_modules("from .exorl import collect", "zoo.datagen", True, {"zoo.datagen.exorl"}) == [
        ("zoo.datagen.exorl", 1)
    ]


def test_cycle_finder_and_layer_lookup():
    assert find_cycle({"a": [("b", 1)], "b": [("c", 1)], "c": [("a", 1)]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": [("b", 1)], "b": [], "c": [("a", 1), ("b", 1)]}) is None
    assert layer_of("zoo.datagen.exorl.collect") == (5, "datagen")
    assert layer_of("zoo.data") == (9, "data")
    assert layer_of("zoo.io")[1] == "foundation" and layer_of("zoo") == (-1, "facade")
    assert layer_of("zoo.somewhere_new") is None
    edges = {"a": [("b", 1)], "b": [("a", 2), ("c", 3)], "c": [], "d": [("d", 4)]}
    assert strongly_connected(edges) == [{"a", "b"}, {"d"}]


# ---------------------------------------------------------------------------------------------------
# The package


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unplaced, f"Place these modules in LAYERS or FOUNDATION of tests/test_layers.py: {unplaced}"


def test_import_graph_has_no_cycle():
    edges = graph()
    cycles = []
    for component in strongly_connected(edges):
        cycle = find_cycle({m: [(t, n) for t, n in edges[m] if t in component] for m in component})
        lines = {(a, b): n for a in component for b, n in edges[a]}
        steps = " -> ".join(f"{a} (line {lines[a, b]})" for a, b in zip(cycle, cycle[1:]))
        cycles.append(f"{', '.join(sorted(component))} import each other, e.g. {steps} -> {cycle[-1]}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_imports_point_down_the_layers():
    violations = []
    for module, targets in sorted(graph().items()):
        source = layer_of(module)
        for target, line in targets:
            dest = layer_of(target)
            if source is None or dest is None or source[1] == "facade":
                continue  # unplaced modules fail test_every_module_has_a_layer
            if target == FACADE:
                violations.append(f"{where(module)}:{line}: {module} imports the package facade `zoo`")
            elif source[1] == "foundation" and dest[1] != "foundation":
                violations.append(
                    f"{where(module)}:{line}: foundation module {module} imports {target} ({dest[1]})"
                )
            elif dest[1] != "foundation" and dest[0] < source[0]:
                violations.append(
                    f"{where(module)}:{line}: {module} ({source[1]}) imports {target} ({dest[1]}, above)"
                )
    assert not violations, "imports pointing up:\n" + "\n".join(violations)


def test_the_graph_holds_the_imports_of_real_modules():
    edges = {m: {t for t, _ in targets} for m, targets in graph().items()}
    # Behaviour training evaluates its checkpoints: datagen sits above evaluation.
    assert {"zoo.data.tasks", "zoo.datagen.behavior", "zoo.evaluation", "zoo.io"} <= edges[
        "zoo.datagen.behavior_training"
    ]
    assert {"zoo.data.minari_io", "zoo.datagen.generate"} <= edges["zoo.datagen.d4rl"]
    assert "zoo.envs.dmc" in edges["zoo"]  # the facade registers the dm_control env ids
