"""Building an index from a folder of images and captions."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from tests.helpers.data import CAPTIONS
from tests.helpers.models import make_head
from mlsr.data.captions import find_images, read_captions
from mlsr.ingest.images import build_index
from mlsr.errors import InputError
from mlsr.index.sparse import SparseIndex


def test_read_captions_csv_and_jsonl(image_folder, tmp_path):
    from_csv = read_captions(image_folder / "captions.csv")
    assert from_csv["more/cat.jpg"] == [CAPTIONS[4]]
    lines = [{"file": "a.jpg", "caption": "first"}, {"image": "a.jpg", "text": "second"}, {"file": "b.jpg", "caption": "x"}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert read_captions(tmp_path / "c.jsonl") == {"a.jpg": ["first", "second"], "b.jpg": ["x"]}
    (tmp_path / "bad.csv").write_text("name,words\na.jpg,hello\n")
    with pytest.raises(InputError, match="file name column"):
        read_captions(tmp_path / "bad.csv")
    (tmp_path / "bad.jsonl").write_text('{"file": "a.jpg"\n')
    with pytest.raises(InputError, match="bad.jsonl:1"):
        read_captions(tmp_path / "bad.jsonl")


def test_find_images_is_sorted_recursive_and_skips_other_files(image_folder):
    names = [p.relative_to(image_folder).as_posix() for p in find_images(image_folder)]
    assert names == ["boat.png", "bus.jpg", "dogs.png", "kites.jpg", "more/cat.jpg", "pasta.jpg"]


def test_three_document_representations(encoder, image_folder, tmp_path):
    # a head with bias 0 lights about half the vocabulary, so captions (masked to their tokens) are not empty
    head = make_head()
    with torch.no_grad():
        head.vocab_projector.bias.zero_()
    encoder = dataclasses.replace(encoder, head=head)
    captions = read_captions(image_folder / "captions.csv")
    image, _ = build_index(encoder, image_folder, out=tmp_path / "i", dense=True)
    caption, _ = build_index(encoder, image_folder, out=tmp_path / "c", captions=captions, documents="caption")
    both, _ = build_index(encoder, image_folder, out=tmp_path / "ic", captions=captions, documents="image+caption")
    assert len(image) == len(caption) == len(both) == 6
    assert caption.vectors.getnnz(axis=1).min() >= 1  # else "both = image + caption" would say nothing
    # the index stores float16 weights: each within a relative 2^-11 of its float32 value (README, Index format)
    half = 2.0**-11
    np.testing.assert_allclose(both.vectors.toarray(), image.vectors.toarray() + caption.vectors.toarray(), rtol=3 * half)
    paths = find_images(image_folder)
    np.testing.assert_allclose(image.vectors.toarray(), encoder.encode_images(paths).toarray(), rtol=half + 1e-4, atol=1e-6)
    first_caption = encoder.encode_captions([captions["boat.png"]]).toarray()[0]
    np.testing.assert_allclose(caption.vectors[0].toarray()[0], first_caption, rtol=half + 1e-5)
    assert image.dense.shape == (6, 256) and caption.dense is None
    assert image.items[4] == {"id": "more/cat.jpg", "image": os.path.relpath(image_folder / "more/cat.jpg", tmp_path / "i")}
    assert both.items[0]["captions"] == [CAPTIONS[3]]
    assert image.info["documents"] == "image" and image.info["models"] == encoder.models().to_json()


def test_caption_documents_need_a_caption_for_every_image(encoder, image_folder, tmp_path):
    (tmp_path / "few.csv").write_text("file,caption\nbus.jpg,a bus\n")
    few = read_captions(tmp_path / "few.csv")
    with pytest.raises(InputError, match="5 images have no caption"):
        build_index(encoder, image_folder, out=tmp_path / "x", captions=few, documents="caption")
    with pytest.raises(InputError, match="needs captions"):
        build_index(encoder, image_folder, out=tmp_path / "x", documents="caption")
    # image+caption: images without a caption are their image vector alone
    index, _ = build_index(encoder, image_folder, out=tmp_path / "x", captions=few, documents="image+caption")
    image_only, _ = build_index(encoder, image_folder, out=tmp_path / "y")
    np.testing.assert_allclose(index.vectors[0].toarray(), image_only.vectors[0].toarray())
    assert index.items[0]["captions"] == []


def test_unreadable_images_are_skipped_and_reported_unless_strict(encoder, image_folder, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in find_images(image_folder)[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    index, report = build_index(encoder, folder, out=tmp_path / "out")
    assert report.indexed == 3 == len(index) and [name for name, _ in report.skipped] == ["broken.jpg"]
    assert index.info["build"]["skipped"] == 1
    with pytest.raises(InputError, match="broken.jpg"):
        build_index(encoder, folder, out=tmp_path / "out", strict=True, overwrite=True)


def test_built_index_saves_loads_and_checks_models(encoder, image_folder, tmp_path):
    build_index(encoder, image_folder, out=tmp_path / "idx", dense=True)
    loaded = SparseIndex.load(tmp_path / "idx", models=encoder.models())
    assert (tmp_path / "idx" / loaded.items[0]["image"]).resolve() == find_images(image_folder)[0].resolve()
    assert loaded.vocab.terms == encoder.vocab.terms


def test_empty_folder_is_refused(encoder, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        build_index(encoder, tmp_path / "empty", out=tmp_path / "x")
