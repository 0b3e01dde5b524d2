"""The layers keep their rule (docs/ARCHITECTURE.md): ui imports mining and embed,
never jobs; the packages import each other without a cycle; no module name is
used in two packages; the UI's pages hold no SQL (the library reads the lake for
them). Read from the source, so a lazy import counts too."""

from __future__ import annotations

import ast
import re
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


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_between_modules_of_the_library():
    """mining's modules import each other without a cycle (a lazy import counts), so a
    plug-in (a format, a sampler) never imports what uses it. A package's own modules
    may read the names its __init__ shares (mining/search/backends/)."""
    paths = {module_name(p): p for p in modules()["mining"]}
    graph = defaultdict(set)
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = {f"{node.module}.{a.name}" for a in node.names} & set(paths) or {node.module}
            elif isinstance(node, ast.Import):
                found = {a.name for a in node.names}
            else:
                continue
            graph[name] |= {m for m in found & set(paths) if m != "mining" and not name.startswith(m + ".")}
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


# SQL that a page would run: a statement's first word at the start of a string, or a call
# that runs SQL. A ``placeholder=`` (the grey hint of an empty box) is never run, so it may show SQL.
SQL_START = re.compile(r"\s*(SELECT|WITH|FROM|INSERT|UPDATE|DELETE|CREATE|DROP|COPY|ATTACH|PRAGMA)\b")
RUNS_SQL = {"query", "sql", "execute", "executemany"}


def sql_in(source: str) -> list[str]:
    """Where ``source`` writes or runs SQL: ``line N: ...`` for each place."""
    tree = ast.parse(source)
    hints = {id(part) for node in ast.walk(tree) if isinstance(node, ast.Call)
             for k in node.keywords if k.arg == "placeholder" for part in ast.walk(k.value)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in RUNS_SQL:
            found.append(f"line {node.lineno}: .{node.func.attr}(...)")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_START.match(node.value)
              and id(node) not in hints):
            found.append(f"line {node.lineno}: {node.value[:40]!r}")
    return found


def test_no_sql_in_the_uis_pages():
    found = {p.name: sql_in(p.read_text()) for p in sorted((REPO / "ui" / "views").glob("*.py"))}
    assert {name: places for name, places in found.items() if places} == {}


@pytest.mark.parametrize("source, expected", [
    ('rows = db.query("SELECT * FROM metrics")', ["line 1: .query(...)", "line 1: 'SELECT * FROM metrics'"]),
    ('q = f"WITH t AS (SELECT {x}) SELECT 1"', ["line 1: 'WITH t AS (SELECT '"]),
    ('con.sql(text)', ["line 1: .sql(...)"]),
    ('st.text_area("Query", placeholder="SELECT image_id FROM images")', []),
    ('st.caption("Select a set; its images FROM the lake")', []),
])
def test_the_sql_check_finds_sql(source, expected):
    assert sql_in(source) == expected


# mining/'s rooms (docs/ARCHITECTURE.md), each importing only those below it.
ROOMS = {
    "core": set(),
    "search": {"core"},
    "evaluation": {"core"},
    "review": {"core", "search", "evaluation"},
    "labelling": {"core", "search", "review"},
}


def rooms_imported_by(path: Path) -> set[str]:
    """The rooms of mining/ that the module imports, anywhere in it (the facade counts as one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mining":
                found.add(parts[1] if len(parts) > 1 else "the facade")
    return found


def test_mining_is_in_rooms_and_each_imports_only_the_rooms_below_it():
    loose = [p.name for p in (REPO / "mining").glob("*.py") if p.name != "__init__.py"]
    assert loose == [], "every module of mining/ lives in a room"
    assert {p.name for p in (REPO / "mining").iterdir() if p.is_dir() and p.name != "__pycache__"} == set(ROOMS)
    wrong = []
    for room, allowed in ROOMS.items():
        for path in sorted((REPO / "mining" / room).rglob("*.py")):
            for imported in rooms_imported_by(path) - allowed - {room}:
                wrong.append(f"{path.relative_to(REPO)} imports {imported}")
    assert wrong == []
