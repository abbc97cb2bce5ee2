"""docs/architecture.md names every module of mlsr/, under its package's heading: the map a newcomer reads first
cannot fall behind the code without a test failing."""

from __future__ import annotations

import re

from tests.helpers.data import ROOT


def documented_modules() -> set[str]:
    """'index/sparse.py', 'settings.py', ...: each file name the doc lists, with the package block it is listed in."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    found, package = set(), ""
    for line in text.splitlines():
        heading = re.match(r"^(\w+)/\s", line)
        if heading:
            package = heading.group(1)
        elif line.startswith("foundations"):
            package = ""
        for name in re.findall(r"\b([a-z_0-9]+\.py)\b", line):
            found.add(f"{package}/{name}" if package else name)
            if package == "models":  # models/st/'s modules are listed inside the models block
                found.add(f"models/st/{name}")
    return found


def test_every_module_is_on_the_map():
    modules = {str(path.relative_to(ROOT / "mlsr")) for path in (ROOT / "mlsr").rglob("*.py")
               if path.name != "__init__.py" or path.parent == ROOT / "mlsr"}
    missing = sorted(modules - documented_modules())
    assert not missing, f"docs/architecture.md does not list {missing}"
