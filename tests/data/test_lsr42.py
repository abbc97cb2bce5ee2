"""encode-dense: tiny BLIP and CLIP backbones on generated images; the written dataset read back and checked."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers.data import CAPTIONS, make_image
from tests.helpers.models import CLIP_DENSE_SIZE, DENSE_SIZE
from mlsr.models.backbone import load_backbone
from mlsr.data.lsr42 import load_dense_dataset
from mlsr.ingest.encode_dense import encode_dense, _random_splits
from mlsr.errors import InputError, ModelLoadError
from mlsr.images import load_image
from mlsr.text import clean_caption

NAMES = ["bus.jpg", "dogs.png", "pasta.jpg", "boat.png", "more/cat.jpg", "kites.jpg"]


@pytest.fixture(scope="module")
def blip(backbone_dir):
    return load_backbone(str(backbone_dir))


@pytest.fixture(scope="module")
def clip(clip_backbone_dir):
    return load_backbone(str(clip_backbone_dir))


def two_captions_each(folder, with_split=False):
    """A CSV with two captions per image (the second one a variant), optionally with a split column."""
    rows = ["file,caption" + (",split" if with_split else "")]
    for i, (name, caption) in enumerate(zip(NAMES, CAPTIONS)):
        split = ",val" if i % 3 == 0 else ",train"
        for text in (caption, f"A photo: {caption.upper()}!"):
            rows.append(f'{name},"{text}"' + (split if with_split else ""))
    path = folder / ("splits.csv" if with_split else "two.csv")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("kind", ["blip", "clip"])
def test_encode_dense_writes_the_published_layout(kind, blip, clip, image_folder, tmp_path):
    backbone = blip if kind == "blip" else clip
    out = tmp_path / "data"
    report = encode_dense(backbone, image_folder, two_captions_each(tmp_path), out, val_fraction=0.34, batch_size=4)
    assert (report.images, report.captions, report.splits) == (6, 12, {"train": 4, "val": 2})

    # Read back with pyarrow alone, as another reader of the lsr42 datasets would.
    images, texts = pq.read_table(out / "img_embs.parquet"), pq.read_table(out / "text_embs.parquet")
    assert images.column_names == ["id", "emb"] and str(images.schema.field("id").type) == "string"
    meta = json.loads((out / "dataset_meta.json").read_text())
    assert [image["filepath"] + "/" * bool(image["filepath"]) + image["filename"] for image in meta["images"]] \
        == sorted(NAMES)
    size = DENSE_SIZE if kind == "blip" else CLIP_DENSE_SIZE
    image_vectors = np.array(images.column("emb").to_pylist(), dtype=np.float32)
    text_vectors = np.array(texts.column("emb").to_pylist(), dtype=np.float32)
    assert image_vectors.shape == (6, size) and text_vectors.shape == (12, size)
    row_of_text = {item: row for row, item in enumerate(texts.column("id").to_pylist())}
    for row, image in enumerate(meta["images"]):
        assert images.column("id")[row].as_py() == str(image["imgid"])
        assert set(image) >= {"imgid", "filename", "filepath", "split", "sentences", "sentids"}
        path = image_folder / image["filepath"] / image["filename"]
        expected = backbone.embed_images([load_image(path)]).numpy()[0]
        np.testing.assert_allclose(image_vectors[row], expected, atol=1e-5)
        raws = [sentence["raw"] for sentence in image["sentences"]]
        assert len(raws) == 2 and raws[1] == f"A photo: {raws[0].upper()}!"
        for sentence in image["sentences"]:
            # Captions are embedded cleaned (lower-case, BLIP's punctuation dropped): both variants match.
            expected = backbone.embed_texts([clean_caption(sentence["raw"])]).numpy()[0]
            np.testing.assert_allclose(text_vectors[row_of_text[str(sentence["sentid"])]], expected, atol=1e-5)
    assert meta["mlsr"]["backbone"]["model_type"] == kind and meta["mlsr"]["backbone"]["dense_size"] == size

    # ... and through the loader the trainer uses.
    data = load_dense_dataset(out)
    assert data.dense_size == size and data.split_counts() == {"train": 4, "val": 2}
    val = data.pairs(["val"])
    assert len(val) == 4 and len(data.pairs(["train"])) == 8
    np.testing.assert_array_equal(data.image_vectors[val.image_rows[0]], image_vectors[val.image_rows[0]])
    assert not (out / ".encode-dense-cache").exists()


def test_splits_from_a_column_and_their_errors(blip, image_folder, tmp_path):
    captions = two_captions_each(tmp_path, with_split=True)
    encode_dense(blip, image_folder, captions, tmp_path / "data")
    meta = json.loads((tmp_path / "data" / "dataset_meta.json").read_text())
    expected = {name.split("/")[-1]: ("val" if i % 3 == 0 else "train") for i, name in enumerate(NAMES)}
    assert {image["filename"]: image["split"] for image in meta["images"]} == expected
    with pytest.raises(InputError, match="split column"):
        encode_dense(blip, image_folder, captions, tmp_path / "other", val_fraction=0.2)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,caption,split\nbus.jpg,a bus,train\nbus.jpg,a red bus,val\n")
    with pytest.raises(InputError, match="one split per image"):
        encode_dense(blip, image_folder, bad, tmp_path / "other")
    bad.write_text("file,caption,split\nbus.jpg,a bus,holdout\n")
    with pytest.raises(InputError, match="train, val, test, restval"):
        encode_dense(blip, image_folder, bad, tmp_path / "other")
    assert not (tmp_path / "other").exists()  # bad input changes nothing


def test_random_splits_are_seeded_and_sized():
    a = _random_splits(100, 0.1, 0.05, seed=3)
    assert a == _random_splits(100, 0.1, 0.05, seed=3) and a != _random_splits(100, 0.1, 0.05, seed=4)
    assert (a.count("val"), a.count("test"), a.count("train")) == (10, 5, 85)
    assert _random_splits(3, 0.1, 0.0, seed=0).count("val") == 1  # at least one when asked for
    with pytest.raises(InputError):
        _random_splits(10, 0.6, 0.5, seed=0)


def test_unreadable_images_are_skipped_with_their_captions(blip, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed, name in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        make_image(seed).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    make_image(9).save(folder / "lonely.jpg")  # no caption: nothing to pair it with
    captions = tmp_path / "c.jsonl"
    lines = [{"file": n, "caption": f"picture {n[0]}"} for n in ["a.jpg", "b.jpg", "broken.jpg", "c.jpg", "gone.jpg"]]
    captions.write_text("\n".join(json.dumps(line) for line in lines))
    report = encode_dense(blip, folder, captions, tmp_path / "data", val_fraction=0.0)
    assert (report.images, report.captions) == (3, 3)
    assert [name for name, _ in report.skipped] == ["broken.jpg"]
    assert report.uncaptioned == ["lonely.jpg"] and report.unmatched == ["gone.jpg"]
    data = load_dense_dataset(tmp_path / "data")
    assert [s["raw"] for image in data.images for s in image["sentences"]] == ["picture a", "picture b", "picture c"]
    with pytest.raises(InputError, match="broken.jpg"):
        encode_dense(blip, folder, captions, tmp_path / "strict", strict=True)


def test_an_interrupted_run_resumes_from_its_finished_chunks(blip, image_folder, tmp_path, monkeypatch):
    captions = two_captions_each(tmp_path)
    clean = tmp_path / "clean"
    encode_dense(blip, image_folder, captions, clean, batch_size=2, chunk_size=2)

    calls = []
    real = blip.embed_images

    def failing(images):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run during the second chunk
        return real(images)

    out = tmp_path / "resumed"
    monkeypatch.setattr(blip, "embed_images", failing)
    with pytest.raises(KeyboardInterrupt):
        encode_dense(blip, image_folder, captions, out, batch_size=2, chunk_size=2)
    assert not (out / "dataset_meta.json").exists() and (out / ".encode-dense-cache" / "images-000000.json").exists()

    calls.clear()
    monkeypatch.setattr(blip, "embed_images", lambda images: calls.append(len(images)) or real(images))
    report = encode_dense(blip, image_folder, captions, out, batch_size=2, chunk_size=2)
    assert report.reused_chunks == 1 and sum(calls) == 4  # only the 4 images not yet done were embedded
    for name in ("img_embs.parquet", "text_embs.parquet"):
        assert pq.read_table(out / name).equals(pq.read_table(clean / name))
    # A re-run over a finished folder is refused (nothing changes); asked to overwrite, it rewrites the same dataset.
    with pytest.raises(InputError, match="holds a dense dataset already"):
        encode_dense(blip, image_folder, captions, out, batch_size=2, chunk_size=2)
    encode_dense(blip, image_folder, captions, out, batch_size=2, chunk_size=2, overwrite=True)
    assert pq.read_table(out / "img_embs.parquet").equals(pq.read_table(clean / "img_embs.parquet"))


def test_loader_errors_say_what_is_wrong(blip, image_folder, tmp_path):
    out = tmp_path / "data"
    encode_dense(blip, image_folder, two_captions_each(tmp_path), out)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    meta = json.loads((broken / "dataset_meta.json").read_text())
    meta["images"][0]["sentences"][0]["sentid"] = 999
    (broken / "dataset_meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="sentence 999 has no row"):
        load_dense_dataset(broken)
    (broken / "text_embs.parquet").unlink()
    with pytest.raises(ModelLoadError, match="lacks text_embs.parquet"):
        load_dense_dataset(broken)


def test_pairs_gallery_positions():
    from mlsr.data.lsr42 import Pairs

    pairs = Pairs(np.arange(5), np.array([7, 7, 3, 9, 3]), ["a"] * 5)
    gallery, position = pairs.gallery()
    assert gallery.tolist() == [7, 3, 9] and position.tolist() == [0, 0, 1, 2, 1]


def test_a_caption_over_blips_length_is_truncated_as_blip_does_not_windowed(blip, image_folder, tmp_path):
    """BLIP reads a caption's first 35 tokens (its max_words=50 cut never binds before that); encode-dense does
    the same, while search-time text (an article) is windowed. Published vectors must be made like BLIP's."""
    long = "A long caption (with words): " + " ".join(f"word{i} and more." for i in range(40))
    rows = ["file,caption"] + [f'{name},"{long if i == 0 else caption}"' for i, (name, caption)
                               in enumerate(zip(NAMES, CAPTIONS))]
    (tmp_path / "long.csv").write_text("\n".join(rows) + "\n")
    encode_dense(blip, image_folder, tmp_path / "long.csv", tmp_path / "data", val_fraction=0.34)
    meta = json.loads((tmp_path / "data" / "dataset_meta.json").read_text())
    sentid = next(s["sentid"] for image in meta["images"] for s in image["sentences"] if s["raw"] == long)
    texts = pq.read_table(tmp_path / "data" / "text_embs.parquet").to_pydict()
    vector = np.asarray(texts["emb"][texts["id"].index(str(sentid))], dtype=np.float32)
    assert len(blip.tokenizer(clean_caption(long))["input_ids"]) > 3 * blip.max_text_tokens
    first = blip.tokenizer.decode(blip.tokenizer(clean_caption(long), add_special_tokens=False)["input_ids"]
                                  [: blip.max_text_tokens - 2])
    same = np.abs(vector - blip.embed_texts([first]).numpy()[0]).max()  # the first 33 word pieces
    later = np.abs(vector - blip.embed_texts([" ".join(clean_caption(long).split()[20:])]).numpy()[0]).max()
    assert same < 1e-6 and later > 100 * same  # (the tiny model's vectors of any two texts are close)
