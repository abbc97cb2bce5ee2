"""import-dense, prepare and the app's first start, against dense datasets in the published lsr42 layout."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers.datasets import TEST_IMAGES, write_dense_dataset
from tests.helpers.data import make_image
from tests.helpers.models import make_head
from mlsr.cli import main
from mlsr.models.encoder import Encoder
from mlsr.errors import IndexMismatchError
from mlsr.index.sparse import SparseIndex


@pytest.fixture(scope="session")
def coco_dataset(tmp_path_factory):
    return write_dense_dataset(tmp_path_factory.mktemp("mscoco-blip-dense"), "mscoco")


@pytest.fixture(scope="session")
def flickr_dataset(tmp_path_factory):
    return write_dense_dataset(tmp_path_factory.mktemp("flickr30k-blip-dense"), "flickr30k", seed=1)


@pytest.fixture(scope="session")
def head_encoder(head_dir, tokenizer_dir):
    return Encoder.head_only(str(head_dir), str(tokenizer_dir), device="cpu")


@pytest.fixture(scope="session")
def coco_index(coco_dataset, head_dir, tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "mscoco-test"
    assert main(["import-dense", "--dataset", str(coco_dataset), "--split", "test", "--out", str(out),
                 "--head", str(head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu"]) == 0
    return out


def _published(dataset):
    meta = json.loads((dataset / "dataset_meta.json").read_text())
    table = pq.read_table(dataset / "img_embs.parquet").to_pydict()
    vectors = {str(i): np.asarray(v, dtype=np.float32) for i, v in zip(table["id"], table["emb"])}
    return meta, vectors


def test_import_keeps_the_split_with_urls_captions_and_vectors(coco_index, coco_dataset, head_encoder):
    index = SparseIndex.load(coco_index)
    meta, vectors = _published(coco_dataset)
    test = [image for image in meta["images"] if image["split"] == "test"]
    assert len(index) == len(test) == TEST_IMAGES
    assert [item["id"] for item in index.items] == [str(image["imgid"]) for image in test]
    for item, image in zip(index.items, test):
        assert item["image"] == f"http://images.cocodataset.org/val2014/{image['filename']}"
        assert item["captions"] == [s["raw"] for s in image["sentences"]]
        assert item["cocoid"] == image["cocoid"]
    dense = np.stack([vectors[str(image["imgid"])] for image in test])
    np.testing.assert_array_equal(index.dense, dense)  # rows follow the metadata, not the shuffled parquet
    expected = head_encoder.sparsify(dense)
    # the index stores float16 weights: each within a relative 2^-11 of the float32 head output
    np.testing.assert_allclose(index.vectors.toarray(), expected.toarray(), rtol=2**-11, atol=1e-6)
    assert index.info["documents"] == "image"
    assert index.info["build"]["source"]["split"] == "test"


def test_imported_index_is_accepted_by_the_apps_encoder_and_refused_with_another_head(
        coco_index, backbone_dir, head_dir, tokenizer_dir, tmp_path):
    manifest = json.loads((coco_index / "manifest.json").read_text())
    assert manifest["models"]["backbone"] == {"id": "Salesforce/blip-itm-base-coco", "revision": None,
                                              "fingerprint": None}
    full = Encoder.from_pretrained(str(backbone_dir), str(head_dir), str(tokenizer_dir), device="cpu")
    SparseIndex.load(coco_index, models=full.models())  # the app's check: head and vocabulary match
    other = tmp_path / "other-head"
    make_head(seed=5).save_pretrained(other)
    with pytest.raises(IndexMismatchError, match="head"):
        SparseIndex.load(coco_index, models=Encoder.head_only(str(other), str(tokenizer_dir), device="cpu").models())


def test_streaming_in_small_batches_gives_the_same_index(coco_dataset, head_encoder, coco_index, tmp_path, monkeypatch):
    import mlsr.data.lsr42 as lsr42
    import mlsr.ingest.published as published

    monkeypatch.setattr(lsr42, "READ_BATCH", 7)
    index, _ = published.import_dense(head_encoder, coco_dataset, tmp_path / "again", split="test")
    reference = SparseIndex.load(coco_index)
    assert abs(index.vectors - reference.vectors).max() == 0
    np.testing.assert_array_equal(index.dense, reference.dense)


def test_flickr_has_no_urls_but_can_point_at_a_local_folder(flickr_dataset, head_dir, tokenizer_dir, tmp_path, capsys):
    meta, _ = _published(flickr_dataset)
    test = [image for image in meta["images"] if image["split"] == "test"]
    common = ["--dataset", str(flickr_dataset), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir),
              "--device", "cpu"]
    assert main(["import-dense", *common, "--out", str(tmp_path / "plain")]) == 0
    assert all(item["image"] is None for item in SparseIndex.load(tmp_path / "plain").items)
    photos = tmp_path / "flickr30k-images"
    photos.mkdir()
    for image in test[:-1]:  # the last one is missing
        make_image(image["imgid"]).save(photos / image["filename"])
    assert main(["import-dense", *common, "--out", str(tmp_path / "local"), "--image-root", str(photos)]) == 0
    index = SparseIndex.load(tmp_path / "local")
    for item, image in zip(index.items[:-1], test[:-1]):
        assert (tmp_path / "local" / item["image"]).resolve() == (photos / image["filename"]).resolve()
    assert index.items[-1]["image"] is None
    assert "1 images not found under --image-root" in capsys.readouterr().err


def test_unknown_split_and_missing_files_are_one_line_errors(coco_dataset, head_dir, tokenizer_dir, tmp_path, capsys):
    common = ["--head", str(head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu", "--out", str(tmp_path / "x")]
    assert main(["import-dense", "--dataset", str(coco_dataset), "--split", "dev", *common]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no images in split 'dev'" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["import-dense", "--dataset", str(tmp_path / "empty"), *common]) == 2
    assert "lacks img_embs.parquet, dataset_meta.json" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_prepare_builds_once_then_reuses(coco_dataset, head_dir, tokenizer_dir, tmp_path, capsys):
    args = ["prepare", "--index", str(tmp_path / "gallery"), "--dataset", str(coco_dataset), "--head", str(head_dir),
            "--tokenizer", str(tokenizer_dir), "--device", "cpu"]
    assert main(args) == 0
    assert "built" in capsys.readouterr().out
    saved = (tmp_path / "gallery" / "manifest.json").stat().st_mtime_ns
    assert main(args) == 0
    assert "exists; reusing it" in capsys.readouterr().out
    assert (tmp_path / "gallery" / "manifest.json").stat().st_mtime_ns == saved
    assert len(SparseIndex.load(tmp_path / "gallery")) == TEST_IMAGES


def test_app_first_start_builds_the_gallery_from_a_local_dataset(coco_dataset, backbone_dir, head_dir, tokenizer_dir,
                                                                  tmp_path, monkeypatch, capsys):
    import app

    monkeypatch.setenv("MLSR_DATASET", str(coco_dataset))  # in place of the Hub id
    index = tmp_path / "index" / "mscoco-test"
    args = app.parse_args(["--index", str(index), "--backbone", str(backbone_dir), "--head", str(head_dir),
                           "--tokenizer", str(tokenizer_dir), "--device", "cpu"])
    page = app.create_app(args)
    assert "could not start" not in str(page.config)
    assert "first start: building" in capsys.readouterr().err
    assert len(SparseIndex.load(index)) == TEST_IMAGES
    saved = (index / "manifest.json").stat().st_mtime_ns
    app.create_app(args)  # second start: reused
    assert (index / "manifest.json").stat().st_mtime_ns == saved
    from mlsr.serving.service import Service

    service = Service.load(index, backbone=str(backbone_dir), head=str(head_dir), tokenizer=str(tokenizer_dir),
                           device="cpu")
    hits = service.suggest("a photo of a thing", k=3).hits
    assert len(hits) == 3 and all(hit.source.startswith("http://images.cocodataset.org/val2014/") for hit in hits)
    assert [hit.image for hit in hits] == [f"thumbnails/{hit.id}" for hit in hits]
    # every picture was fetched once at build time (through the loopback COCO host) and is kept in the index
    assert all(service.index.picture(hit.row)[:4] == b"RIFF" for hit in hits)
    assert SparseIndex.load(index).thumbnails.count == TEST_IMAGES
    assert service.compare("a photo", k=3).dense  # dense.npy came with the import: the FAISS screen works


def test_app_offline_says_what_to_run(backbone_dir, head_dir, tokenizer_dir, tmp_path, monkeypatch, capsys):
    import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # the default index/mscoco-test does not exist here
    monkeypatch.delenv("MLSR_DATASET", raising=False)
    monkeypatch.delenv("MLSR_INDEX", raising=False)
    args = app.parse_args(["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir),
                           "--device", "cpu"])
    page = app.create_app(args)
    text = str(page.config)
    assert "could not be reached" in text and "python -m mlsr prepare --index index/mscoco-test" in text
    err = capsys.readouterr().err
    assert "mlsr: cannot start: dense dataset 'lsr42/mscoco-blip-dense'" in err and "Traceback" not in err
    assert not (tmp_path / "index").exists()


def test_head_only_encoder_sparsifies_like_the_full_one_and_refuses_text(app_encoder, app_head_dir, tokenizer_dir):
    from mlsr.errors import ModelLoadError

    head_only = Encoder.head_only(str(app_head_dir), str(tokenizer_dir), device="cpu")
    captions = ["A boy leads a buffalo to the market.", "a cake on the road"]
    dense = app_encoder.encode_text_views(captions).dense
    for mode, masks in (("expand", None), ("no_expand", captions)):
        ours = head_only.sparsify(dense, mask_texts=masks)
        full = app_encoder.encode_text(captions, mode=mode)
        assert ours.nnz > 0 and abs(ours - full).max() < 1e-5, mode
    assert head_only.models().head == app_encoder.models().head
    assert head_only.models().backbone.fingerprint is None
    with pytest.raises(ModelLoadError, match="needs the dense backbone"):
        head_only.encode_text("a caption")
    with pytest.raises(ModelLoadError, match="needs the dense backbone"):
        head_only.encode_images([make_image(0)])
