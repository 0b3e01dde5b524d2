"""The layers keep their rule (docs/ARCHITECTURE.md): ui imports mining and embed,
never jobs; the packages import each other without a cycle; no module name is
used in two packages. Read from the source, so a lazy import counts too."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mining", "embed", "jobs", "ui")
# Who may import whom: a package below may never import one above it.
ALLOWED = {
    "mining": set(),
    "embed": {"mining"},
    "ui": {"mining", "embed"},
    "jobs": {"mining", "embed", "ui"},  # ui only for `edgemine ui` (ui.launch)
}


def imports_of(path: Path) -> set[str]:
    """Top-level packages of this project that the module imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def modules() -> dict[str, list[Path]]:
    return {package: sorted((REPO / package).rglob("*.py")) for package in PACKAGES}


def test_every_package_imports_only_the_layers_below_it():
    wrong = []
    for package, paths in modules().items():
        for path in paths:
            for imported in imports_of(path) - ALLOWED[package] - {package}:
                wrong.append(f"{path.relative_to(REPO)} imports {imported}")
    assert wrong == []


def test_the_ui_imports_jobs_only_to_be_launched():
    assert all("jobs" not in imports_of(p) for p in modules()["ui"])
    launched = [p.relative_to(REPO).as_posix() for p in modules()["jobs"] if "ui" in imports_of(p)]
    assert launched == ["jobs/cli/lake_commands.py"]


def in_cycles(graph: dict[str, set[str]]) -> list[str]:
    """The nodes of ``graph`` (node -> the nodes it imports) that can reach themselves."""
    def reaches(start: str, goal: str, seen: frozenset = frozenset()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    return [node for node in graph if reaches(node, node)]


def test_no_import_cycle_between_packages():
    graph = defaultdict(set)
    for package, paths in modules().items():
        for path in paths:
            graph[package] |= imports_of(path) - {package}
    assert in_cycles(graph) == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, ["a", "b"]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, ["a", "b", "c"]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_check_finds_cycles(graph, expected):
    assert in_cycles(graph) == expected


def test_no_module_name_in_two_packages():
    names = defaultdict(list)
    for paths in modules().values():
        for path in paths:
            if path.name != "__init__.py":
                names[path.stem].append(path.relative_to(REPO).as_posix())
    twice = {name: where for name, where in names.items() if len(where) > 1}
    named_like_a_package = {name: where for name, where in names.items() if name in PACKAGES}
    assert twice == {} and named_like_a_package == {}
