"""The house in numbers: public top-level names per package of mlsr/, and the largest functions.

`python tools/house.py [ROOT] [--top N]` (ROOT: a checkout, default this one). A name is public when it does not
start with `_`; what may stay public is what other modules import or the docs show (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import ast
import collections
from pathlib import Path


def public_names(root: Path) -> dict[str, collections.Counter]:
    """{package: Counter(functions=, classes=, constants=)} of the public top-level names of mlsr/."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in sorted((root / "mlsr").rglob("*.py")):
        parts = path.relative_to(root).parts
        package = parts[1] if len(parts) > 2 else "(top)"
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                named = [("functions", node.name)]
            elif isinstance(node, ast.ClassDef):
                named = [("classes", node.name)]
            elif isinstance(node, ast.Assign):
                named = [("constants", target.id) for target in node.targets if isinstance(target, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                named = [("constants", node.target.id)]
            else:
                named = []
            for kind, name in named:
                if not name.startswith("_") and name != "logger":
                    counts[package][kind] += 1
    return counts


def largest_functions(root: Path, top: int) -> list[tuple[int, str, str]]:
    """The `top` longest functions and methods of mlsr/ and app.py: (lines, name, where)."""
    found = []
    for path in [*sorted((root / "mlsr").rglob("*.py")), root / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                found.append((node.end_lineno - node.lineno + 1, node.name, f"{path.relative_to(root)}:{node.lineno}"))
    return sorted(found, key=lambda row: (-row[0], row[2]))[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--top", type=int, default=10, help="how many of the largest functions (default 10)")
    args = parser.parse_args()
    counts = public_names(args.root)
    total: collections.Counter = sum(counts.values(), collections.Counter())
    print("| package | functions | classes | constants | public names |\n|---|---|---|---|---|")
    for package, kinds in sorted(counts.items()):
        print(f"| {package} | {kinds['functions']} | {kinds['classes']} | {kinds['constants']} | {kinds.total()} |")
    print(f"| all | {total['functions']} | {total['classes']} | {total['constants']} | {total.total()} |\n")
    print("| function | where | lines |\n|---|---|---|")
    for lines, name, where in largest_functions(args.root, args.top):
        print(f"| `{name}` | {where} | {lines} |")


if __name__ == "__main__":
    main()
