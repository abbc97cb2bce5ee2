"""Library errors speak of parameters, not command-line flags: a Python caller who passed `limit=0` reads "limit must
be at least 1", never "--limit". The command line translates the `name=True` hints into its flags."""

from __future__ import annotations

import ast
import re

import pytest

from tests.helpers.data import ROOT

FLAG = re.compile(r"(?<![\w-])--[a-z]")
COMMAND = re.compile(r"`(?:python -m mlsr|python app\.py|hf |huggingface-cli )[^`]*`")  # a command to run, quoted


def raised_texts(tree: ast.AST):
    """(line, text) of every string literal inside each `raise ...(...)` of a module (f-string parts included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            parts = [value.value for arg in node.exc.args for value in ast.walk(arg)
                     if isinstance(value, ast.Constant) and isinstance(value.value, str)]
            yield node.lineno, "".join(parts)


def test_no_library_error_names_a_command_line_flag():
    found = []
    for path in sorted((ROOT / "mlsr").rglob("*.py")):
        if "cli" in path.relative_to(ROOT / "mlsr").parts:
            continue
        for line, text in raised_texts(ast.parse(path.read_text(encoding="utf-8"))):
            if FLAG.search(COMMAND.sub("", text)):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text[:100]}")
    assert found == []


def test_the_scan_sees_a_flag_where_there_is_one():
    tree = ast.parse('def f(limit):\n    raise ValueError(f"--limit must be at least 1, got {limit}.")\n')
    assert [FLAG.search(text) is not None for _, text in raised_texts(tree)] == [True]
    assert not FLAG.search(COMMAND.sub("", "build it with `python -m mlsr build-index --images DIR`."))


@pytest.mark.parametrize("message, shown", [
    ("replace=True updates them, or remove them first.", "--replace updates them, or remove them first."),
    ("use amp='bf16' on a CPU.", "use --amp bf16 on a CPU."),
    ("start the head from random weights (mlm=None).", "start the head from random weights (--mlm none)."),
    ("distractor_rate must be in (0, 1].", "distractor_rate must be in (0, 1]."),
    ("give expect_r1=PERCENT, or (only='text,image')", "give --expect-r1 PERCENT, or (--only text,image)"),
])
def test_the_command_line_says_the_hints_as_its_flags(message, shown):
    from mlsr.cli import _as_flags

    assert _as_flags(message) == shown


def test_texts_that_are_not_texts_are_named(encoder):
    from mlsr.errors import InputError

    for bad in (None, 3, b"bytes", {"text": "a dog"}):
        with pytest.raises(InputError, match=f"must be a text .* got {type(bad).__name__}"):
            encoder.encode_text(bad)


def test_a_url_where_a_file_or_an_index_is_expected_says_urls_are_not_fetched(encoder, tmp_path):
    from mlsr.errors import IndexFormatError, InputError
    from mlsr.index.sparse import SparseIndex

    with pytest.raises(InputError, match=r"'http://127.0.0.1:9/x.jpg' is a URL: mlsr does not fetch URLs here"):
        encoder.encode_images(["http://127.0.0.1:9/x.jpg"])
    with pytest.raises(IndexFormatError, match=r"index 'https://example.org/idx' is a URL") as refused:
        SparseIndex.load("https://example.org/idx")
    assert "--out" not in str(refused.value) and "http:/e" not in str(refused.value)


def test_a_manifest_count_that_disagrees_with_the_items_names_both(tmp_path):
    import json

    import numpy as np
    import scipy.sparse as sp

    from mlsr.errors import IndexFormatError
    from mlsr.index.sparse import SparseIndex
    from tests.helpers.data import write_manifest

    SparseIndex.build(sp.random(5, 30, density=0.3, format="csr", dtype=np.float32, random_state=0)).save(tmp_path / "i")
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    manifest["count"] = 10 ** 12
    write_manifest(tmp_path / "i", manifest)
    with pytest.raises(IndexFormatError) as refused:
        SparseIndex.load(tmp_path / "i")
    assert "1,000,000,000,000 items" in str(refused.value) and "holds 5" in str(refused.value)


def test_the_markdown_credit_links_its_licence():
    from mlsr.articles.markdown import linked

    shown = linked("MS-COCO image 5: a Flickr photo under its own license (https://cocodataset.org/#termsofuse)")
    assert "<https://cocodataset.org/#termsofuse>" in shown and "https\\:" not in shown
    assert linked("a *b* [c](d)") == "a \\*b\\* \\[c\\](d)"
