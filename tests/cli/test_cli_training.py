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
                 "--batch-size", "4", "--hidden-size", "32", "--lr", "1e-2", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert "best epoch" in out.out and "random weights" in out.err and "epoch 2/2" in out.err
    trained = SparseHead.from_pretrained(head)
    assert trained.vocab_size == 30522 and trained.config.dense_size == 256
    card = (head / "README.md").read_text()
    assert str(backbone_dir) in card and "blip" in card  # the backbone recorded by encode-dense

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
                 "--batch-size", "4", "--hidden-size", "32", "--lr", "1e-2", "--device", "cpu", "--resume"]) == 0


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
