"""Each item's picture kept inside the index: the packed Thumbnails rows, the thumbnails a build makes, add and remove
keeping them in step, their files verified on load, no machine path in any file, and `thumbnails` filling an older
index."""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mlsr._files import sha256_file
from mlsr.cli import main
from mlsr.errors import IndexFormatError, InputError
from mlsr.index.manifest import MANIFEST_FILE, THUMBNAIL_FILES, sealed
from mlsr.index.sparse import SparseIndex
from mlsr.index.thumbnails import THUMBNAIL_SIDE, Thumbnails
from mlsr.ingest.images import add_images, build_index
from tests.helpers.data import REAL_IMAGES, make_image
from tests.helpers.datasets import write_dense_dataset

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PICTURES = st.lists(st.one_of(st.none(), st.just(b""), st.binary(min_size=1, max_size=6)), max_size=10)
LARGE = {"wide.jpg": (1200, 500), "tall.png": (300, 900), "square.jpg": (700, 700)}  # beyond THUMBNAIL_SIDE


def pictures_of(thumbnails: Thumbnails) -> list[bytes | None]:
    return [thumbnails.picture(row) for row in range(len(thumbnails))]


def frozen(thumbnails: Thumbnails) -> tuple[np.ndarray, np.ndarray]:
    return np.array(thumbnails.offsets, copy=True), np.array(thumbnails.data, copy=True)


def unchanged(thumbnails: Thumbnails, before: tuple[np.ndarray, np.ndarray]) -> bool:
    return np.array_equal(thumbnails.offsets, before[0]) and np.array_equal(thumbnails.data, before[1])


def shares_memory(first: Thumbnails, second: Thumbnails) -> bool:
    return any(np.shares_memory(a, b) for a in (first.offsets, first.data) for b in (second.offsets, second.data))


# --- the packed rows ----------------------------------------------------------------------------------------


@FAST
@given(pictures=PICTURES)
def test_packed_rows_give_back_each_picture(pictures):
    """Row i holds picture i; None and b"" both mean none; missing() and count agree; the caller's list is kept."""
    given_list = list(pictures)
    thumbnails = Thumbnails.from_pictures(pictures)
    assert pictures == given_list
    thumbnails.check(len(pictures))
    assert len(thumbnails) == len(pictures)
    assert pictures_of(thumbnails) == [p or None for p in pictures]
    assert thumbnails.missing().tolist() == [row for row, p in enumerate(pictures) if not p]
    assert thumbnails.count == sum(bool(p) for p in pictures) == len(pictures) - len(thumbnails.missing())
    assert thumbnails.offsets.dtype == np.int64 and thumbnails.data.dtype == np.uint8


@FAST
@given(data=st.data(), pictures=PICTURES.filter(bool))
def test_take_of_any_rows_equals_their_pictures(data, pictures):
    """Any sequence of rows (repeated, reversed, runs, none) gives those rows' pictures in that order."""
    thumbnails = Thumbnails.from_pictures(pictures)
    before = frozen(thumbnails)
    rows = data.draw(st.lists(st.integers(0, len(pictures) - 1), max_size=15))
    as_array = np.array(rows, dtype=np.int64)
    for given_rows in (rows, as_array, tuple(rows)):
        taken = thumbnails.take(given_rows)
        taken.check(len(rows))
        assert pictures_of(taken) == [pictures[row] or None for row in rows]
        assert not shares_memory(taken, thumbnails)
    assert unchanged(thumbnails, before) and as_array.tolist() == rows


@FAST
@given(first=PICTURES, second=PICTURES)
def test_then_appends_the_other_rows(first, second):
    a, b = Thumbnails.from_pictures(first), Thumbnails.from_pictures(second)
    before_a, before_b = frozen(a), frozen(b)
    both = a.then(b)
    both.check(len(first) + len(second))
    assert pictures_of(both) == [p or None for p in first + second]
    assert both.count == a.count + b.count
    assert unchanged(a, before_a) and unchanged(b, before_b) and not shares_memory(both, a)


@FAST
@given(data=st.data(), pictures=PICTURES.filter(bool))
def test_filled_sets_only_the_given_rows(data, pictures):
    thumbnails = Thumbnails.from_pictures(pictures)
    before = frozen(thumbnails)
    new = data.draw(st.dictionaries(st.integers(0, len(pictures) - 1), st.binary(min_size=1, max_size=6), max_size=5))
    given_dict = dict(new)
    filled = thumbnails.filled(new)
    filled.check(len(pictures))
    assert pictures_of(filled) == [new.get(row) or pictures[row] or None for row in range(len(pictures))]
    assert new == given_dict and unchanged(thumbnails, before)


def test_none_has_rows_without_pictures():
    none = Thumbnails.none(4)
    none.check(4)
    assert pictures_of(none) == [None] * 4 and none.count == 0 and none.missing().tolist() == [0, 1, 2, 3]
    assert len(Thumbnails.none(0)) == 0 and Thumbnails.none(0).missing().size == 0


GOOD_OFFSETS = np.array([0, 2, 2, 5], dtype=np.int64)
BAD = {  # (offsets, data, rows): each breaks one rule of the packing
    "fewer rows than items": (GOOD_OFFSETS, np.zeros(5, np.uint8), 4),
    "more rows than items": (GOOD_OFFSETS, np.zeros(5, np.uint8), 2),
    "offsets going back": (np.array([0, 3, 2, 5], np.int64), np.zeros(5, np.uint8), 3),
    "last offset short of the data": (GOOD_OFFSETS, np.zeros(6, np.uint8), 3),
    "last offset past the data": (GOOD_OFFSETS, np.zeros(4, np.uint8), 3),
    "first offset not 0": (np.array([1, 2, 2, 5], np.int64), np.zeros(5, np.uint8), 3),
    "int32 offsets": (GOOD_OFFSETS.astype(np.int32), np.zeros(5, np.uint8), 3),
    "float offsets": (GOOD_OFFSETS.astype(np.float64), np.zeros(5, np.uint8), 3),
    "2-D offsets": (GOOD_OFFSETS.reshape(1, 4), np.zeros(5, np.uint8), 3),
    "int8 data": (GOOD_OFFSETS, np.zeros(5, np.int8), 3),
    "2-D data": (GOOD_OFFSETS, np.zeros((5, 1), np.uint8), 3),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_refuses_offsets_that_do_not_cut_the_data_into_rows(case):
    offsets, data, rows = BAD[case]
    Thumbnails(GOOD_OFFSETS, np.zeros(5, np.uint8)).check(3)  # the same rows, well packed, pass
    with pytest.raises(InputError, match="thumbnails"):
        Thumbnails(offsets, data).check(rows)
    with pytest.raises(InputError):  # and an index is never built with them
        SparseIndex.build(np.eye(rows, 4, dtype=np.float32), thumbnails=Thumbnails(offsets, data))


# --- what a build keeps ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(image_folder, tmp_path_factory) -> Path:
    """The six small generated images, three larger than a thumbnail (wide, tall, square) and the COCO photos."""
    folder = tmp_path_factory.mktemp("thumbs") / "photos"
    shutil.copytree(image_folder, folder)
    for seed, (name, size) in enumerate(LARGE.items()):
        make_image(40 + seed, size).save(folder / name)
    for path in sorted(REAL_IMAGES.glob("*.jpg")):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def built(encoder, photos) -> Path:
    out = photos.parent / "index"
    build_index(encoder, photos, out=out)
    return out


def by_id(index: SparseIndex) -> dict[str, bytes | None]:
    return {str(item["id"]): index.picture(row) for row, item in enumerate(index.items)}


def test_a_build_keeps_one_verified_thumbnail_per_item(built, photos):
    """Each item's picture is a WebP of its image, at most 512 px on the long side (smaller ones kept at their size),
    of the same shape."""
    index = SparseIndex.load(built)
    manifest = json.loads((built / MANIFEST_FILE).read_text())
    assert len(index) == 6 + len(LARGE) + 3
    assert index.thumbnails.count == len(index) == manifest["thumbnails"]
    assert set(THUMBNAIL_FILES.values()) <= set(manifest["files"])
    sides = set()
    for row, item in enumerate(index.items):
        picture = Image.open(io.BytesIO(index.picture(row)))
        original = Image.open(photos / item["id"]).size
        assert picture.format == "WEBP", item["id"]
        long_side = min(THUMBNAIL_SIDE, max(original))
        assert max(picture.size) == long_side, item["id"]
        scale = long_side / max(original)
        assert all(abs(got - side * scale) <= 1 for got, side in zip(picture.size, original)), item["id"]
        sides.add(max(picture.size))
    assert THUMBNAIL_SIDE in sides and min(sides) < THUMBNAIL_SIDE  # both cases were seen


def test_add_then_remove_keeps_each_items_picture(encoder, photos, tmp_path):
    """Pictures follow their items by id through add (library), remove, save and load: as a fresh build of the
    same images; a removed item's picture leaves the index."""
    library = tmp_path / "library"
    library.mkdir()
    names = sorted(path.name for path in photos.iterdir() if path.is_file() and path.suffix != ".csv")
    first, second = names[: len(names) // 2], names[len(names) // 2 :]
    for name in first:
        shutil.copy(photos / name, library / name)
    out = tmp_path / "index"
    build_index(encoder, library, out=out)
    (library / "new").mkdir()
    for name in second:
        shutil.copy(photos / name, library / "new" / name)
    added, _ = add_images(encoder, out, library / "new")
    fresh, _ = build_index(encoder, library, out=tmp_path / "fresh")
    expected = by_id(fresh)
    assert len(set(expected.values())) == len(expected) and None not in expected.values()  # all differ
    assert by_id(added) == expected
    assert by_id(SparseIndex.load(out)) == expected
    assert json.loads((out / MANIFEST_FILE).read_text())["thumbnails"] == len(expected)

    gone = [first[0], f"new/{second[-1]}"]
    SparseIndex.load(out).remove(gone).save(out)
    after = SparseIndex.load(out)
    kept = {name: picture for name, picture in expected.items() if name not in gone}
    assert by_id(after) == kept
    data = bytes(after.thumbnails.data)
    assert len(data) == sum(len(picture) for picture in kept.values())
    assert not any(expected[name] in data for name in gone)


# --- the files, verified on load --------------------------------------------------------------------------------


def flip_last_bit(file: Path) -> None:
    raw = bytearray(file.read_bytes())
    raw[-1] ^= 1
    file.write_bytes(bytes(raw))


def edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    change(manifest)
    (folder / MANIFEST_FILE).write_text(json.dumps(sealed(manifest)))


@pytest.mark.parametrize("name", sorted(THUMBNAIL_FILES.values()))
def test_a_flipped_bit_in_a_thumbnail_file_is_refused(built, tmp_path, name):
    copy = shutil.copytree(built, tmp_path / "copy")
    SparseIndex.load(copy)
    flip_last_bit(copy / name)
    with pytest.raises(IndexFormatError, match=f"{name} does not match its checksum"):
        SparseIndex.load(copy)


def without(name: str):
    return lambda manifest: manifest["files"].pop(name)


def set_count(delta: int):
    return lambda manifest: manifest.update(thumbnails=manifest["thumbnails"] + delta)


MANIFEST_EDITS = {  # (edit, what the refusal names)
    "only the data file listed": (without(THUMBNAIL_FILES["offsets"]), "'files'"),
    "only the offsets file listed": (without(THUMBNAIL_FILES["data"]), "'files'"),
    "count field missing": (lambda manifest: manifest.pop("thumbnails"), "'thumbnails'"),
    "count above the items": (set_count(+1), "'thumbnails'"),
    "count below the pictures": (set_count(-1), "thumbnails"),
    "count not a number": (lambda manifest: manifest.update(thumbnails="13"), "'thumbnails'"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_EDITS))
def test_a_resealed_manifest_that_misdescribes_the_thumbnails_is_refused(built, tmp_path, case):
    change, named = MANIFEST_EDITS[case]
    copy = shutil.copytree(built, tmp_path / "copy")
    edit_manifest(copy, change)
    with pytest.raises(IndexFormatError, match=named) as refused:
        SparseIndex.load(copy)
    assert "checksum" not in str(refused.value)  # the seal holds: the refusal is about the field


@pytest.mark.parametrize("offsets", [lambda o: o[::-1].copy(), lambda o: o.astype(np.int32), lambda o: o[:-1]],
                         ids=["backwards", "int32", "one row short"])
def test_hostile_offsets_under_a_consistent_manifest_are_refused(built, tmp_path, offsets):
    """Offsets that do not cut the data into one slice per item are refused even with matching checksums."""
    copy = shutil.copytree(built, tmp_path / "copy")
    file = copy / THUMBNAIL_FILES["offsets"]
    np.save(file, offsets(np.load(file)), allow_pickle=False)

    def rerecord(manifest):
        manifest["files"][file.name] = {"bytes": file.stat().st_size, "sha256": sha256_file(file)}

    edit_manifest(copy, rerecord)
    with pytest.raises(IndexFormatError, match="thumbnails"):
        SparseIndex.load(copy)


# --- no machine path -------------------------------------------------------------------------------------------


def files_naming(folder: Path, token: str) -> list[str]:
    """The files under `folder` whose bytes contain `token`."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")
                  if path.is_file() and token.encode() in path.read_bytes())


def test_no_file_of_a_built_index_names_the_folder_it_was_built_in(photos, backbone_dir, head_dir, tokenizer_dir,
                                                                     tmp_path):
    """Images and models inside a uniquely named folder, built with the command line: the name is in no index file,
    nor anything else of the machine's paths (models are recorded by folder name, images relative to the index)."""
    token = f"machine-{uuid.uuid4().hex}"
    root = tmp_path / token
    shutil.copytree(photos, root / "photos")
    models = {role: shutil.copytree(source, root / role)
              for role, source in (("backbone", backbone_dir), ("head", head_dir), ("tokenizer", tokenizer_dir))}
    out = root / "index"
    assert main(["build-index", "--images", str(root / "photos"), "--captions", str(root / "photos" / "captions.csv"),
                 "--doc", "image+caption", "--dense", "--out", str(out), "--device", "cpu",
                 *(f"--{role}={path}" for role, path in models.items())]) == 0
    assert files_naming(out, token) == []
    assert files_naming(out, str(tmp_path)) == []
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert [manifest["models"][role]["id"] for role in models] == list(models)  # by name only
    assert SparseIndex.load(out).thumbnails.count == len(SparseIndex.load(out))
    shutil.copytree(root, tmp_path / "moved")  # the folder moves as a whole: the images are still found
    moved = SparseIndex.load(tmp_path / "moved" / "index")
    assert all((moved.path / item["image"]).is_file() for item in moved.items)


@pytest.mark.parametrize("dataset_inside", [False, True], ids=["dataset elsewhere", "dataset inside too"])
def test_no_file_of_an_imported_index_names_the_image_root(head_dir, tokenizer_dir, tmp_path, dataset_inside):
    """import-dense with --image-root inside a uniquely named folder: every item gets its picture from the files,
    items point at them relative to the index, and no file of the index holds the folder's name."""
    token = f"machine-{uuid.uuid4().hex}"
    root = tmp_path / token
    dataset = write_dense_dataset((root if dataset_inside else tmp_path) / "flickr30k-blip-dense", "flickr30k", seed=3)
    images = root / "flickr30k-images"
    images.mkdir(parents=True)
    meta = json.loads((dataset / "dataset_meta.json").read_text())
    test = [image for image in meta["images"] if image["split"] == "test"]
    for image in test:
        make_image(image["imgid"]).save(images / image["filename"])
    out = root / "index"
    assert main(["import-dense", "--dataset", str(dataset), "--split", "test", "--out", str(out),
                 "--image-root", str(images), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir),
                 "--device", "cpu"]) == 0
    assert files_naming(out, token) == []
    index = SparseIndex.load(out)
    assert index.thumbnails.count == len(index) == len(test)
    assert [item["image"] for item in index.items] == [f"../flickr30k-images/{image['filename']}" for image in test]
    assert index.info["build"]["source"]["image_root"] == "../flickr30k-images"


# --- an index from before pictures were kept -------------------------------------------------------------------


def test_thumbnails_command_fills_an_older_index_once(built, tmp_path, capsys):
    """An index saved without thumbnails loads; `thumbnails` gives every item one (as a build would: same size),
    exit 0; a second run makes none and changes no picture."""
    reference = SparseIndex.load(built)
    older = SparseIndex.load(built)
    older.thumbnails = None
    older.items = [{**item, "image": os.path.relpath(built / item["image"], tmp_path / "older")}
                   for item in older.items]
    older.save(tmp_path / "older")
    manifest = json.loads((tmp_path / "older" / MANIFEST_FILE).read_text())
    assert "thumbnails" not in manifest and not set(THUMBNAIL_FILES.values()) & set(manifest["files"])
    loaded = SparseIndex.load(tmp_path / "older")
    assert loaded.thumbnails is None and loaded.picture(0) is None

    assert main(["thumbnails", "--index", str(tmp_path / "older")]) == 0
    out = capsys.readouterr()
    assert f"{len(reference)} of {len(reference)} items have a thumbnail" in out.out
    assert f"thumbnails: {len(reference)} made" in out.err and "Traceback" not in out.err
    filled = SparseIndex.load(tmp_path / "older")
    assert filled.thumbnails.count == len(filled)
    for row in range(len(filled)):
        picture = Image.open(io.BytesIO(filled.picture(row)))
        assert picture.format == "WEBP"
        assert picture.size == Image.open(io.BytesIO(reference.picture(row))).size, filled.items[row]["id"]
    assert not (tmp_path / ".older.pictures").exists()

    assert main(["thumbnails", "--index", str(tmp_path / "older")]) == 0
    assert "thumbnails: 0 made" in capsys.readouterr().err
    again = SparseIndex.load(tmp_path / "older")
    assert pictures_of(again.thumbnails) == pictures_of(filled.thumbnails)


def test_a_row_has_a_picture_only_when_it_holds_bytes_and_one_row_can_be_taken():
    thumbnails = Thumbnails.from_pictures([b"ab", None, b"c", b""])
    assert [thumbnails.has(row) for row in range(4)] == [True, False, True, False]
    one = thumbnails.take(np.int64(2))  # a single row number, not a list
    assert len(one) == 1 and one.picture(0) == b"c"
    assert pictures_of(thumbnails.take(2)) == [b"c"]


@pytest.mark.parametrize("kind", ["file", "bytes"])
def test_a_jpeg_thumbnail_is_decoded_at_reduced_scale(tmp_path, monkeypatch, kind):
    """The JPEG decoder is asked for the thumbnail's size (DCT scaling: 1/2, 1/4, 1/8 of the pixels decoded)."""
    from PIL import JpegImagePlugin

    from mlsr.index.thumbnails import thumbnail_of

    path = tmp_path / "big.jpg"
    Image.new("RGB", (2400, 1800), (40, 90, 160)).save(path, quality=80)
    asked, draft = [], JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        asked.append((mode, size))
        return draft(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    picture = thumbnail_of(path if kind == "file" else path.read_bytes())
    assert asked == [("RGB", (512, 512))]
    with Image.open(io.BytesIO(picture)) as small:
        assert small.format == "WEBP" and small.size == (512, 384)


@pytest.mark.parametrize("picture, kind", [
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), (b"\xff\xd8\xff\xe0", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF89a", "application/octet-stream"), (b"", "application/octet-stream"),
])
def test_the_media_type_of_a_picture_comes_from_its_first_bytes(picture, kind):
    from mlsr.index.thumbnails import media_type

    assert media_type(picture) == kind


CUT = "thumbnails: the offsets do not cut the pictures' bytes into rows."


@pytest.mark.parametrize("offsets, data, message", [
    (np.array([0, 2, 3]), np.frombuffer(b"abc", np.uint8), None),
    (np.array([0, 3]), np.frombuffer(b"abc", np.uint8), "thumbnails: 1 rows of offsets (int64) for 2 items."),
    (np.array([0, 1, 2, 3]), np.frombuffer(b"abc", np.uint8), "thumbnails: 3 rows of offsets (int64) for 2 items."),
    (np.array([0, 2, 3], np.int32), np.frombuffer(b"abc", np.uint8),
     "thumbnails: 2 rows of offsets (int32) for 2 items."),
    (np.array([[0, 2, 3]]), np.frombuffer(b"abc", np.uint8), "thumbnails: 0 rows of offsets (int64) for 2 items."),
    (np.array([0, 2, 3]), np.frombuffer(b"abc", np.int8), "thumbnails: the pictures must be bytes (uint8), got int8."),
    (np.array([1, 2, 3]), np.frombuffer(b"abc", np.uint8), CUT),
    (np.array([0, 2, 4]), np.frombuffer(b"abc", np.uint8), CUT),
    (np.array([0, 2, 2]), np.frombuffer(b"abc", np.uint8), CUT),
    (np.array([0, 3, 2]), np.frombuffer(b"ab", np.uint8), CUT),
])
def test_packed_thumbnails_are_checked_against_the_item_count_exactly(offsets, data, message):
    thumbnails = Thumbnails(offsets, data)
    if message is None:
        thumbnails.check(2)
        return
    with pytest.raises(InputError) as raised:
        thumbnails.check(2)
    assert str(raised.value) == message


def test_a_thumbnail_is_a_webp_at_quality_75_made_with_encoder_method_2():
    """The settings docs/index-format.md measured and documents (WebP, quality 75, method 2), as literals."""
    from mlsr.index.thumbnails import make_thumbnail

    image = Image.linear_gradient("L").convert("RGB").resize((1024, 600))
    small = image.resize((512, 300))
    want = io.BytesIO()
    small.save(want, "WEBP", quality=75, method=2)
    assert make_thumbnail(image) == want.getvalue()
