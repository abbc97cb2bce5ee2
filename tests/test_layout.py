"""The architecture holds: the torch-free core imports no torch, and modules and functions stay small."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.helpers.data import ROOT

TORCH_FREE = ["mlsr", "mlsr.settings", "mlsr.errors", "mlsr.text", "mlsr.vocab", "mlsr.images", "mlsr.index",
              "mlsr.index.folder", "mlsr.index.modes", "mlsr.index.hub", "mlsr.index.publish", "mlsr.backends",
              "mlsr.backends.local", "mlsr.backends.milvus",
              "mlsr.data.captions", "mlsr.data.lsr42", "mlsr.data.trec", "mlsr.data.atomic_trec",
              "mlsr.evaluation.metrics", "mlsr.evaluation.runs", "mlsr.evaluation.tables", "mlsr.models.record",
              "mlsr.training.config", "mlsr.retrieval", "mlsr.cli", "mlsr.threads",
              "mlsr.index.forward", "mlsr.allocator", "mlsr.articles.sections", "mlsr.articles.suggestions",
              "mlsr.articles.markdown", "mlsr.articles.exports", "mlsr.articles.cutoff", "mlsr.ingest.licences"]
HEAVY = ("torch", "transformers")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LONG_REASON = "# long:"  # a function may be longer with a comment saying why on the line above its def


def loaded_after(code: str) -> set[str]:
    """The top-level packages in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{name.split('.')[0] for name in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_core_imports_neither_torch_nor_transformers():
    loaded = loaded_after("\n".join(f"import {module}" for module in TORCH_FREE))
    assert not loaded & set(HEAVY)


def test_the_command_line_help_imports_neither():
    loaded = loaded_after("import runpy, sys\nsys.argv = ['mlsr', '--help']\n"
                          "try:\n    runpy.run_module('mlsr', run_name='__main__')\nexcept SystemExit:\n    pass")
    assert not loaded & set(HEAVY)


def test_the_torch_free_check_can_fail():
    assert "torch" in loaded_after("import mlsr.models.head")


def test_only_mlsr_models_st_imports_sentence_transformers():
    """sentence-transformers is an optional extra: the core, the models and the CLI parser never import it."""
    models = ["mlsr.models.encoder", "mlsr.models.backbone", "mlsr.models.head", "mlsr.models.tokenizer",
              "mlsr.models.st"]
    assert "sentence_transformers" not in loaded_after("\n".join(f"import {m}" for m in [*TORCH_FREE, *models]))
    assert "sentence_transformers" in loaded_after("import mlsr.models.st.input")


SOURCES = sorted((ROOT / "mlsr").rglob("*.py")) + [ROOT / "app.py"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.name} has {len(lines)} lines; split it by role"
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            size = node.end_lineno - node.lineno + 1
            reason = lines[first - 2].strip().startswith(LONG_REASON) if first >= 2 else False
            assert size <= MAX_FUNCTION_LINES or reason, (
                f"{path.name}:{node.lineno} {node.name} has {size} lines; split it, or say why above it ({LONG_REASON} ...)")
