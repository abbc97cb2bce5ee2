"""`python -m mlsr export-st` / `push-st`: the standard folder, loaded back by SparseEncoder, gives mlsr's vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mlsr.cli import main
from mlsr.errors import ModelLoadError
from mlsr.models.st.assemble import load_sparse_encoder
from tests.st.test_sparse_encoder import TEXTS, dense, images_of


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("st") / "mlsr-st"
    assert main(["export-st", "--out", str(out), "--query-mode", "no_expand", *models]) == 0
    return out


def test_the_folder_has_the_standard_layout(exported):
    modules = json.loads((exported / "modules.json").read_text())
    assert [(m["path"], m["type"]) for m in modules] == [("0_MlsrInput", "mlsr.models.st.input.MlsrInput"),
                                                         ("1_D2SHead", "mlsr.models.st.head.D2SHead")]
    config = json.loads((exported / "config_sentence_transformers.json").read_text())
    assert config["model_type"] == "SparseEncoder" and config["similarity_fn_name"] == "dot"
    head = json.loads((exported / "1_D2SHead" / "config.json").read_text())
    assert head["model_type"] == "d2s" and (exported / "1_D2SHead" / "model.safetensors").is_file()
    card = (exported / "README.md").read_text()
    assert "**Modalities**: text" in card and "image" in card and "library_name: sentence-transformers" in card
    assert "`encode_query` encodes them `no_expand`" in card


def test_loaded_back_it_gives_the_encoders_vectors_and_terms(exported, wide_encoder, image_folder):
    """Read back by mlsr (no code of the folder run) and, for a folder one wrote oneself, by sentence-transformers
    with remote code allowed: both give the Encoder's vectors and terms."""
    from sentence_transformers import SparseEncoder

    with pytest.raises(ValueError, match="trust_remote_code"):
        SparseEncoder(str(exported), device="cpu")  # mlsr's classes are code: sentence-transformers asks first
    for model in (load_sparse_encoder(exported, device="cpu"),
                  SparseEncoder(str(exported), trust_remote_code=True, device="cpu")):
        queries = dense(model.encode_query(TEXTS, batch_size=64))
        assert np.abs(queries - wide_encoder.encode_text(TEXTS, mode="no_expand").toarray()).max() <= 1e-6
        expanded = dense(model.encode(TEXTS, batch_size=64))
        assert np.abs(expanded - wide_encoder.encode_text(TEXTS).toarray()).max() <= 1e-6
        paths = images_of(image_folder)
        images = dense(model.encode_document([Image.open(p) for p in paths], batch_size=64))
        assert np.abs(images - wide_encoder.encode_images(paths).toarray()).max() <= 1e-6
        terms = model.decode(model.encode_document(Image.open(paths[0])), top_k=8)
        ours = wide_encoder.decode(wide_encoder.encode_images(paths[:1]), top_k=None, keep_punctuation=True)
        special = wide_encoder.vocab.special_mask
        theirs = [(term, weight) for term, weight in terms if not special[wide_encoder.vocab.ids[term]]]
        assert len(theirs) > 4 and [term for term, _ in theirs] == [term for term, _ in ours[: len(theirs)]]
        np.testing.assert_allclose([w for _, w in theirs], [w for _, w in ours[: len(theirs)]], atol=1e-6)


def test_a_folder_naming_other_classes_is_refused_and_none_of_its_code_runs(exported, tmp_path):
    import shutil
    import sys

    tampered = tmp_path / "tampered"
    shutil.copytree(exported, tampered)
    marker = tmp_path / "ran"
    (tampered / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil: pass\n")
    modules = json.loads((tampered / "modules.json").read_text())
    modules[0]["type"] = "evil_module.Evil"
    (tampered / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="not a model written by export-st"):
        load_sparse_encoder(tampered, device="cpu")
    assert not marker.exists() and "evil_module" not in sys.modules


def test_an_export_is_never_replaced_silently(exported, models, capsys):
    before = (exported / "modules.json").stat().st_mtime_ns
    assert main(["export-st", "--out", str(exported), *models]) == 2
    err = capsys.readouterr().err
    assert "holds a sentence-transformers model already" in err and "--overwrite" in err and "Traceback" not in err
    assert (exported / "modules.json").stat().st_mtime_ns == before


def test_a_folder_that_is_not_a_model_is_refused_even_with_overwrite(models, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["export-st", "--out", str(tmp_path), "--overwrite", *models]) == 2
    assert "not a sentence-transformers model folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_overwrite_replaces_an_earlier_export(models, tmp_path):
    out = tmp_path / "st"
    assert main(["export-st", "--out", str(out), *models]) == 0
    assert main(["export-st", "--out", str(out), "--overwrite", "--query-mode", "no_expand", *models]) == 0
    assert json.loads((out / "0_MlsrInput" / "mlsr_input.json").read_text())["query_mode"] == "no_expand"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


class FakeApi:
    """Records what a push would send to the Hub."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **options):
        self.calls.append(("create_repo", repo_id, options))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **options):
        self.calls.append(("create_commit", repo_id, operations, options))


def test_push_sends_every_file_in_one_commit_with_a_card_for_the_repo(exported):
    from mlsr.models.st.assemble import push_sparse_encoder

    api = FakeApi()
    url = push_sparse_encoder(exported, "someone/mlsr-st", api=api)
    assert url == "https://huggingface.co/someone/mlsr-st"
    (_, _, repo), (_, _, operations, options) = api.calls
    assert repo["repo_type"] == "model" and options["repo_type"] == "model"
    sent = {op.path_in_repo: op for op in operations}
    assert {"modules.json", "config_sentence_transformers.json", "1_D2SHead/model.safetensors",
            "0_MlsrInput/mlsr_input.json", "README.md"} <= set(sent)
    assert 'load_sparse_encoder("someone/mlsr-st")' in sent["README.md"].path_or_fileobj.decode()


def test_push_refuses_a_folder_that_is_no_export_and_a_bad_repo_id(tmp_path, exported, capsys):
    assert main(["push-st", str(tmp_path), "someone/model"]) == 2
    assert "not an exported model" in capsys.readouterr().err
    assert main(["push-st", str(exported), "not a repo"]) == 2
    assert "is not a Hub repo id" in capsys.readouterr().err


def test_a_clip_backbone_goes_through_the_export_too(clip_backbone_dir, tokenizer_dir, image_folder, tmp_path):
    """CLIP has its own tokenizer and 77 positions; the term tokenizer stays BERT-uncased for masks and decode."""
    import torch

    from mlsr.models.encoder import Encoder
    from mlsr.models.head import HeadConfig, SparseHead
    from tests.helpers.models import CLIP_DENSE_SIZE

    head = SparseHead(HeadConfig(dense_size=CLIP_DENSE_SIZE, hidden_size=32, vocab_size=30522))
    with torch.no_grad():
        head.vocab_projector.bias.zero_()
    head.save_pretrained(tmp_path / "head")
    models = ["--backbone", str(clip_backbone_dir), "--head", str(tmp_path / "head"), "--tokenizer",
              str(tokenizer_dir), "--device", "cpu"]
    assert main(["export-st", "--out", str(tmp_path / "st"), "--query-mode", "no_expand", *models]) == 0
    model = load_sparse_encoder(tmp_path / "st", device="cpu")
    encoder = Encoder.from_pretrained(str(clip_backbone_dir), str(tmp_path / "head"), str(tokenizer_dir),
                                      device="cpu", batch_size=64)
    assert model.max_seq_length == 77
    got = dense(model.encode_query(TEXTS, batch_size=64))
    assert np.abs(got - encoder.encode_text(TEXTS, mode="no_expand").toarray()).max() <= 1e-6 and got.any()
    paths = images_of(image_folder)
    got = dense(model.encode_document([Image.open(p) for p in paths], batch_size=64))
    assert np.abs(got - encoder.encode_images(paths).toarray()).max() <= 1e-6


@pytest.mark.parametrize("module", ["input", "head"])
def test_a_module_folder_that_is_missing_is_a_load_error(exported, module, tmp_path):
    from mlsr.models.st.head import D2SHead
    from mlsr.models.st.input import MlsrInput

    loader = MlsrInput if module == "input" else D2SHead
    with pytest.raises(ModelLoadError, match="no .* folder 'absent'"):
        loader.load(str(exported), subfolder="absent", local_files_only=True)
