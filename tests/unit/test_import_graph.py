"""The package's import graph, read with ``ast`` from every module (function-level imports
included): no cycle between streamjobs modules, and the flat core never reaches into a
subsystem package. Two files at the top are not core and are exempt, each for exactly one
edge: the package root re-exporting ``Worker`` (the public facade) and ``__main__`` running the
command line (``python -m streamjobs``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "streamjobs"
SUBSYSTEMS = (
    "worker",
    "ops",
    "cli",
    "dev",
    "scheduler",
    "metrics",
    "dashboard",
    "index",
    "testing",
)
FACADE_EDGE = ("streamjobs", "streamjobs.worker", frozenset({"Worker"}))
ENTRY_EDGE = ("streamjobs.__main__", "streamjobs.cli", frozenset({"app"}))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _targets(node: ast.AST, module: str) -> list[tuple[str, frozenset[str]]]:
    """The streamjobs modules an import statement loads, with the names it takes from each."""
    if isinstance(node, ast.Import):
        return [(a.name, frozenset()) for a in node.names if a.name.split(".")[0] == "streamjobs"]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: resolve against this module's package
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    if base.split(".")[0] != "streamjobs":
        return []
    found: list[tuple[str, frozenset[str]]] = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        # `from streamjobs import status` loads the module streamjobs.status
        found.append((submodule, frozenset()) if submodule in MODULES else (base, {alias.name}))
    return [(target, frozenset(names)) for target, names in found]


def _edges() -> dict[str, dict[str, set[str]]]:
    """module -> imported module -> names taken from it (empty for a whole-module import)."""
    graph: dict[str, dict[str, set[str]]] = {name: {} for name in MODULES}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target, names in _targets(node, module):
                if target != module:
                    graph[module].setdefault(target, set()).update(names)
    return graph


def _is_core(module: str) -> bool:
    parts = module.split(".")
    return len(parts) == 2 and parts[1] not in SUBSYSTEMS and module in MODULES


def _subsystem(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBSYSTEMS else None


def test_every_import_names_an_existing_streamjobs_module() -> None:
    unknown = {
        (module, target)
        for module, out in _edges().items()
        for target in out
        if target not in MODULES
    }

    assert unknown == set()


def test_no_core_module_imports_a_subsystem() -> None:
    top_level = [m for m in MODULES if _is_core(m)] + ["streamjobs"]
    offending = []
    for module in top_level:
        for target, taken in _edges()[module].items():
            if _subsystem(target) is not None and not _exempt(module, target, taken):
                offending.append(f"{module} -> {target}")

    assert offending == []


def _exempt(module: str, target: str, taken: set[str]) -> bool:
    return any(
        module == source
        and (target == allowed or target.startswith(f"{allowed}."))
        and taken == names
        for source, allowed, names in (FACADE_EDGE, ENTRY_EDGE)
    )


def test_the_import_graph_has_no_cycle() -> None:
    graph = {m: set(out) & set(MODULES) for m, out in _edges().items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)

    assert cycles == []


def test_the_graph_reader_sees_function_level_and_facade_imports() -> None:
    """Guards the test itself: imports inside functions and the facade edge are both found."""
    graph = _edges()

    assert "streamjobs.dev.demo" in graph["streamjobs.cli.app"]  # imported inside `demo`
    assert "streamjobs.dev.kafka" in graph["streamjobs.cli.dev"]  # imported inside commands
    assert any(t.startswith(FACADE_EDGE[1]) for t in graph["streamjobs"])
