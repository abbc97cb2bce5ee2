"""The import graph of mlsr/, read from the source: each name imported from where it is defined, and no cycle at
all, within or between packages, counting the imports inside functions (a cycle hidden in a function is still a
cycle). Imports under `if TYPE_CHECKING:` are for type checkers only and never run, so they are left out.
`from package import submodule` is an edge to the submodule; `from package import name` is an edge to the package
(its `__init__`, which re-exports the name)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.data import ROOT


def module_names(root: Path) -> dict[str, Path]:
    """'mlsr.index.sparse' -> its file, for every module and package under root/mlsr."""
    names = {}
    for path in sorted((root / "mlsr").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` except those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for other in node.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield node
        yield from _runtime_nodes(node)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the mlsr modules it imports (at any depth of its code, TYPE_CHECKING blocks left out)."""
    names = module_names(root)

    def owner(name: str) -> str | None:  # the module a dotted name lives in: 'mlsr.index.sparse.X' -> its module
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in names}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in names else base
                           for alias in node.names]
            else:
                continue
            graph[name] |= {found for target in targets if target.startswith("mlsr")
                            and (found := owner(target)) not in (None, name)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_mlsr_has_no_import_cycle():
    graph = import_graph(ROOT)
    found = cycles(graph)
    detail = ["; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in found]
    assert not found, "import cycles:\n" + "\n".join(detail)


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between packages: 'mlsr.index.sparse' counts as 'mlsr.index'; a top-level module
    ('mlsr.text') is its own node."""
    def package(name: str) -> str:
        return ".".join(name.split(".")[:2])

    packages: dict[str, set[str]] = {package(name): set() for name in graph}
    for name, targets in graph.items():
        packages[package(name)] |= {package(target) for target in targets} - {package(name)}
    return packages


def test_no_package_imports_another_that_imports_it_back():
    graph = import_graph(ROOT)
    packages = package_graph(graph)
    found = cycles(packages)
    edges = [f"{m} -> {t}" for m, ts in graph.items() for t in ts
             if any(m.startswith(a + ".") and t.startswith(b + ".") for c in found for a in c for b in c if a != b)]
    assert not found, f"package cycles {found}:\n" + "\n".join(edges)


def test_the_cycle_check_finds_cycles_in_functions_and_not_in_type_checking(tmp_path):
    package = tmp_path / "mlsr"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mlsr.b\n")
    (package / "a.py").write_text("def f():\n    from mlsr.sub import c\n")
    (package / "b.py").write_text("from mlsr import a\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text("from . import d\n")
    (package / "sub" / "d.py").write_text("import mlsr.a\n")
    graph = import_graph(tmp_path)
    assert graph["mlsr"] == set() and graph["mlsr.b"] == {"mlsr.a"} and graph["mlsr.sub.c"] == {"mlsr.sub.d"}
    assert cycles(graph) == [["mlsr.a", "mlsr.sub.c", "mlsr.sub.d"]]
    assert cycles(package_graph(graph)) == [["mlsr.a", "mlsr.sub"]]


def top_level_names(path: Path) -> tuple[set[str], set[str]]:
    """(names a module defines at its top level, names it imports from elsewhere)."""
    defined, imported = set(), set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
    return defined, imported


def borrowed_names(root: Path) -> list[str]:
    """`from mlsr.X import name` (in mlsr/, tests/, bench/, app.py) where module X only imports `name` from
    elsewhere: each name is imported from the module that defines it (packages' __init__ aside)."""
    names = module_names(root)
    modules = {name: top_level_names(path) for name, path in names.items() if path.name != "__init__.py"}
    files = [root / "app.py", *[path for folder in ("mlsr", "tests", "bench")
                                for path in sorted((root / folder).rglob("*.py"))]]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                defined, imported = modules[node.module]
                found += [f"{path.relative_to(root)}:{node.lineno}: {alias.name} from {node.module}"
                          for alias in node.names if alias.name in imported and alias.name not in defined
                          and f"{node.module}.{alias.name}" not in names]
    return found


def test_each_name_is_imported_from_where_it_is_defined():
    assert borrowed_names(ROOT) == []


def test_the_borrowed_name_check_can_fail(tmp_path):
    for folder in ("mlsr", "tests", "bench"):
        (tmp_path / folder).mkdir()
    (tmp_path / "app.py").write_text("from mlsr.b import helper\n")
    (tmp_path / "mlsr" / "__init__.py").write_text("")
    (tmp_path / "mlsr" / "a.py").write_text("def helper():\n    pass\n")
    (tmp_path / "mlsr" / "b.py").write_text("from mlsr.a import helper\n\nLIMIT = 3\n")
    (tmp_path / "tests" / "t.py").write_text("from mlsr.b import LIMIT\nfrom mlsr.a import helper\n")
    assert borrowed_names(tmp_path) == ["app.py:1: helper from mlsr.b"]
