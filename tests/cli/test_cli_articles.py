"""`python -m mlsr suggest-article`: text, JSON and illustrated Markdown out, and clear errors."""

import json

import pytest

from mlsr.cli import main

ARTICLE = """# A day in the village

## Water buffalo in the fields

Children lead the water buffalo through the rice fields to the market.

## On the road to town

A man on a small motorbike rides along the dirt road.

## A wedding in the evening

A woman cuts a large white sheet cake with a knife.
"""


@pytest.fixture
def article_args(app_index, backbone_dir, app_head_dir, tokenizer_dir, tmp_path):
    (tmp_path / "village.md").write_text(ARTICLE, encoding="utf-8")
    return [str(tmp_path / "village.md"), "--index", str(app_index), "--backbone", str(backbone_dir), "--head",
            str(app_head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu"]


def test_json_has_one_group_per_section(article_args, capsys):
    assert main(["suggest-article", *article_args, "-k", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [s["title"] for s in result["sections"]] == ["Water buffalo in the fields", "On the road to town",
                                                        "A wedding in the evening"]
    ids = [hit["id"] for s in result["sections"] for hit in s["results"]]
    assert len(ids) == len(set(ids))
    assert main(["suggest-article", *article_args, "-k", "2", "--json", "--allow-repeats"]) == 0
    repeated = json.loads(capsys.readouterr().out)
    assert [len(s["results"]) for s in repeated["sections"]] == [2, 2, 2]


def test_markdown_out_puts_an_image_under_each_heading(article_args, tmp_path, capsys):
    out = tmp_path / "illustrated.md"
    assert main(["suggest-article", *article_args, "--markdown", str(out)]) == 0
    written = out.read_text(encoding="utf-8")
    assert written.count("![") == 3
    for heading in ("## Water buffalo in the fields", "## On the road to town", "## A wedding in the evening"):
        assert written.split(heading, 1)[1].lstrip().startswith("![")
    assert "wrote" in capsys.readouterr().err


def test_plain_output_lists_sections_and_shared_terms(article_args, capsys):
    assert main(["suggest-article", *article_args, "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. Water buffalo in the fields\n   query: A day in the village Water buffalo")
    assert "3. A wedding in the evening" in out and "    1. " in out


def test_errors_are_one_line(article_args, tmp_path, capsys):
    missing = [str(tmp_path / "nope.md"), *article_args[1:]]
    assert main(["suggest-article", *missing]) == 2
    assert capsys.readouterr().err.strip().endswith("nope.md does not exist.")  # mlsr.checks' words for a path
    assert main(["suggest-article", str(tmp_path), *article_args[1:]]) == 2
    assert capsys.readouterr().err.strip().endswith("is a folder, not a file.")
    assert main(["suggest-article", *article_args, "-k", "11"]) == 2
    assert "k must be between 1 and 10" in capsys.readouterr().err
    (tmp_path / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    assert main(["suggest-article", str(tmp_path / "latin1.md"), *article_args[1:]]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["suggest-article", *article_args, "--json", "--markdown", str(tmp_path / "x.md")])
    assert exit_.value.code == 2
