"""Guards that keep work safe: a build never replaces an existing output by accident, an encoder is never paired with
an index of other models without being told, and commands take their models from the index they search."""

from __future__ import annotations

import hashlib

import pytest

from mlsr.cli import main
from mlsr.errors import IndexMismatchError
from mlsr.index.sparse import SparseIndex
from mlsr.ingest.images import build_index
from mlsr.retrieval import search_texts


@pytest.fixture
def model_args(backbone_dir, head_dir, tokenizer_dir):
    return ["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu"]


def snapshot(folder) -> dict[str, str]:
    """Every file of a folder by name, with its sha256: byte for byte what is there."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_build_index_onto_an_index_is_refused_and_changes_nothing_unless_overwrite(built, image_folder, model_args,
                                                                                   tmp_path, capsys):
    before = snapshot(built)
    other = tmp_path / "fewer"
    other.mkdir()
    (other / "bus.jpg").write_bytes((image_folder / "bus.jpg").read_bytes())
    assert main(["build-index", "--images", str(other), "--out", str(built), *model_args]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {built} holds an index already (6 items, image+caption documents, dense vectors,")
    assert "--overwrite" in error and len(error.splitlines()) == 1
    assert snapshot(built) == before  # byte for byte
    assert main(["build-index", "--images", str(other), "--out", str(built), "--overwrite", *model_args]) == 0
    assert len(SparseIndex.load(built)) == 1


def test_import_dense_onto_an_index_is_refused_before_the_models_load(built, tmp_path, capsys):
    before = snapshot(built)
    # the head does not exist: the refusal comes first, so this says nothing about it
    assert main(["import-dense", "--dataset", str(tmp_path / "nowhere"), "--out", str(built),
                 "--head", str(tmp_path / "no-head"), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "holds an index already (6 items" in error and "no-head" not in error and snapshot(built) == before


def test_the_library_refuses_too_and_says_how_to_overwrite(encoder, built, image_folder):
    with pytest.raises(Exception, match=r"holds an index already .*overwrite=True"):
        build_index(encoder, image_folder, out=built)
    index, _ = build_index(encoder, image_folder, out=built, overwrite=True)
    assert index.info["documents"] == "image"


def test_encode_dense_onto_a_dataset_is_refused_unless_overwrite(backbone_dir, image_folder, tmp_path, capsys):
    args = ["encode-dense", "--backbone", str(backbone_dir), "--images", str(image_folder), "--captions",
            str(image_folder / "captions.csv"), "--out", str(tmp_path / "dense"), "--device", "cpu", "--batch-size", "4"]
    assert main(args) == 0
    before = snapshot(tmp_path / "dense")
    capsys.readouterr()
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "holds a dense dataset already (6 images" in error and "--overwrite" in error
    assert snapshot(tmp_path / "dense") == before
    assert main([*args, "--overwrite"]) == 0


def test_search_texts_refuses_an_encoder_with_another_head_naming_both(built, app_encoder, encoder):
    index = SparseIndex.load(built)  # no models= : the pairing is checked at the search
    with pytest.raises(IndexMismatchError, match="was built with the head .* but the loaded head .* other weights"):
        search_texts(app_encoder, index, "a dog", k=3)
    results, _ = search_texts(app_encoder, index, "a dog", k=3, check_models=False)  # the expert's opt-out
    assert results.indices.shape == (1, 3)
    assert search_texts(encoder, index, "a dog", k=3)[0].indices.shape == (1, 3)


def test_search_takes_the_index_models_by_default(built, backbone_dir, monkeypatch, tmp_path, capsys):
    """Without model flags `search` loads the models the index records (by folder name, beside them), not mlsr's
    default Hub head; elsewhere it asks for the folder in one line; a flag still wins."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--index", str(built), "a dog", "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "local backbone folder named" in error and "lsr42/" not in error
    monkeypatch.chdir(backbone_dir.parent)  # where the model folders are, by the names the index records
    assert main(["search", "--index", str(built), "a dog", "--device", "cpu", "--json"]) == 0
    assert '"results"' in capsys.readouterr().out
    assert main(["search", "--index", str(built), "a dog", "--device", "cpu", "--head", "lsr42/not-cached"]) == 2
    assert "lsr42/not-cached" in capsys.readouterr().err  # the flag overrides the index
