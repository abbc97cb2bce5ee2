"""encode-dense -> train -> build-index -> search, end to end on generated images with tiny models and the real vocabulary."""

import json

import pytest

from mlsr.cli import main
from mlsr.models.head import SparseHead


def test_encode_train_index_search(backbone_dir, tokenizer_dir, image_folder, tmp_path, capsys):
    data, head = tmp_path / "data", tmp_path / "head"
    assert main(["encode-dense", "--backbone", str(backbone_dir), "--images", str(image_folder),
                 "--captions", str(image_folder / "captions.csv"), "--out", str(data), "--val-fraction", "0.34",
                 "--device", "cpu", "--batch-size", "4"]) == 0
    out = capsys.readouterr()
    assert "wrote 6 images and 6 captions (256-d, train 4, val 2)" in out.out
    assert "embedding images and captions" in out.err  # the progress bar

    assert main(["train", "--data", str(data), "--out", str(head), "--tokenizer", str(tokenizer_dir), "--epochs", "2",
                 "--batch-size", "4", "--hidden-size", "32", "--lr", "1e-2", "--device", "cpu", "--mlm", "none"]) == 0
    out = capsys.readouterr()
    assert "best epoch" in out.out and "random weights" in out.err and "epoch 2/2" in out.err
    trained = SparseHead.from_pretrained(head)
    assert trained.vocab_size == 30522 and trained.config.dense_size == 256
    card = (head / "README.md").read_text()
    assert f"`{backbone_dir.name}`" in card and str(backbone_dir) not in card  # recorded by name, no machine path
    assert "blip" in card

    models = ["--backbone", str(backbone_dir), "--head", str(head), "--tokenizer", str(head), "--device", "cpu"]
    assert main(["build-index", "--images", str(image_folder), "--out", str(tmp_path / "index"), *models]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "index"), "-k", "2", "--json", "two dogs", *models]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    assert len(hits) == 2 and hits[0]["score"] >= hits[1]["score"]

    # A second run into the same folder is refused; --resume of a finished run is a no-op that succeeds.
    assert main(["train", "--data", str(data), "--out", str(head), "--tokenizer", str(tokenizer_dir)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(head), "--tokenizer", str(tokenizer_dir), "--epochs", "2",
                 "--batch-size", "4", "--hidden-size", "32", "--lr", "1e-2", "--device", "cpu", "--resume",
                 "--mlm", "none"]) == 0


@pytest.fixture(scope="module")
def dense_data(backbone_dir, image_folder, tmp_path_factory):
    data = tmp_path_factory.mktemp("dense") / "data"
    assert main(["encode-dense", "--backbone", str(backbone_dir), "--images", str(image_folder),
                 "--captions", str(image_folder / "captions.csv"), "--out", str(data), "--val-fraction", "0.34",
                 "--device", "cpu"]) == 0
    return data


def test_the_default_masked_lm_is_the_papers_and_offline_it_is_one_line(dense_data, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert main(["train", "--data", str(dense_data), "--out", str(tmp_path / "head"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: masked-LM 'distilbert-base-uncased'") and "could not be reached" in err
    assert "--mlm none" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "head").exists()


def test_train_from_a_masked_lm_folder_with_the_cpu_preset(dense_data, tokenizer_dir, tmp_path, capsys):
    from tests.helpers.models import save_tiny_distilbert_mlm

    mlm = save_tiny_distilbert_mlm(tmp_path / "distilbert", tokenizer_dir)
    args = ["train", "--data", str(dense_data), "--mlm", str(mlm), "--batch-size", "4", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "cpu"), "--preset", "cpu"]) == 0
    summary = json.loads((tmp_path / "cpu" / "training.json").read_text())
    assert summary["config"]["epochs"] == 20 and summary["config"]["amp"] == "bf16" and summary["mlm"] == str(mlm)
    assert summary["epochs_done"] == 20 and "random weights" not in capsys.readouterr().err
    head = SparseHead.from_pretrained(tmp_path / "cpu")
    assert head.config.hidden_size == 32  # the masked-LM's own size: its LayerNorm and projector were copied
    assert "from `" + str(mlm) in (tmp_path / "cpu" / "README.md").read_text()
    assert main([*args, "--out", str(tmp_path / "short"), "--preset", "cpu", "--epochs", "1", "--amp", "off"]) == 0
    config = json.loads((tmp_path / "short" / "training.json").read_text())["config"]
    assert config["epochs"] == 1 and config["amp"] == "off"  # flags override the preset


def test_encode_dense_with_a_clip_backbone(clip_backbone_dir, image_folder, tmp_path, capsys):
    assert main(["encode-dense", "--backbone", str(clip_backbone_dir), "--images", str(image_folder),
                 "--captions", str(image_folder / "captions.csv"), "--out", str(tmp_path / "data"),
                 "--device", "cpu"]) == 0
    assert "(48-d, train 5, val 1)" in capsys.readouterr().out
    meta = json.loads((tmp_path / "data" / "dataset_meta.json").read_text())
    assert meta["mlsr"]["backbone"]["model_type"] == "clip"


def test_train_on_a_missing_dataset_is_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "head")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dense dataset") and "Traceback" not in err
    assert not (tmp_path / "head").exists()


@pytest.mark.parametrize("command", ["encode-dense", "train"])
def test_training_commands_have_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "--out" in capsys.readouterr().out
