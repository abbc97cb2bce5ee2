"""Messages where the eye is: cheap arguments are checked before anything loads, usage errors are one line, paths
are printed as a user would paste them here, and the setup guide for a broken index says how it was built."""

from __future__ import annotations

import json
import os
import time

import pytest

from mlsr.cli import main


def test_an_empty_query_is_refused_before_the_index_and_models_load(tmp_path, capsys):
    started = time.perf_counter()
    assert main(["search", "--index", str(tmp_path / "no-index"), "--head", "lsr42/not-cached", "  ... "]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: text is empty") and time.perf_counter() - started < 5


@pytest.mark.parametrize("args, says", [(["search", "--index", "x", "-k", "abc", "a dog"], "argument -k: invalid int"),
                                        (["search", "a dog"], "the following arguments are required: --index"),
                                        (["no-such-command"], "invalid choice")])
def test_usage_errors_are_one_line(args, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and len(error.strip().splitlines()) == 1 and says in error
    assert error.startswith("error: python -m mlsr") and "--help" in error


def test_search_prints_image_paths_from_the_current_folder(built, backbone_dir, head_dir, tokenizer_dir, image_folder,
                                                           monkeypatch, capsys):
    monkeypatch.chdir(image_folder.parent)
    args = ["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu"]
    assert main(["search", "--index", str(built), "--json", "-k", "3", *args, "a red bus"]) == 0
    for hit in json.loads(capsys.readouterr().out)["results"]:
        assert os.path.isfile(hit["image"]) and not os.path.isabs(hit["image"])  # pastes as it is, from here
        assert hit["image"].startswith(image_folder.name + os.sep)


def test_the_setup_guide_for_a_broken_custom_index_rebuilds_it_as_it_was_built(built, image_folder, tmp_path):
    from mlsr.app.startup import startup_guide

    (tmp_path / "blip").mkdir()
    models = dict(backbone=str(tmp_path / "blip"), head="lsr42/some-head", tokenizer="distilbert-base-uncased")
    assert "## Rebuild the index" not in startup_guide(built, **models)  # the index is fine: a model is missing
    guide = startup_guide(built, **models, broken_index=True)
    assert "## Rebuild the index" in guide and "mlsr prepare" not in guide
    assert (f"python -m mlsr build-index --images {os.path.relpath(image_folder.resolve())} --captions CAPTIONS_FILE"
            f" --doc image+caption --dense --out {built} --overwrite") in guide
    assert "hf download lsr42/some-head" in guide and "hf download /" not in guide  # a local folder is not downloaded
