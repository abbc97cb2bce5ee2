"""Indexes by Hub dataset id: resolved through the Hugging Face cache (laid out as huggingface_hub lays it out,
blobs and symbolic links), offline, and verified like a local folder. Also the rule that tells an id from a folder.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.errors import IndexFormatError, InputError, ModelLoadError
from mlsr.index.manifest import ITEMS_FILE, MANIFEST_FILE
from mlsr.index.hub import HubIndexId, parse_hub_id
from mlsr.index.sparse import SparseIndex
from mlsr.vocab import Vocabulary
from tests.helpers.hub import add_snapshot, offline_hub, repo_folder

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
VOCAB = 120


def make_index(folder: Path, n: int, seed: int) -> SparseIndex:
    rng = np.random.default_rng(seed)
    vectors = sp.random(n, VOCAB, density=0.1, format="csr", random_state=rng, dtype=np.float32)
    items = [{"id": f"s{seed}-{i}", "image": f"https://example.org/{i}.jpg"} for i in range(n)]
    vocab = Vocabulary(tuple(f"t{i}" for i in range(VOCAB)))
    models = {"backbone": {"id": "b"}, "head": {"id": "h"}, "tokenizer": {"id": "t"}, "vocab_size": VOCAB,
              "vocab_sha256": vocab.sha256, "dense_size": 256}
    index = SparseIndex.build(vectors, items, vocab=vocab, info={"documents": "image", "models": models})
    index.save(folder)
    return index


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline cache holding owner/gallery at two commits (main -> A, tag v2 -> B); cwd is an empty folder."""
    cache = offline_hub(monkeypatch, tmp_path / "cache")
    first, second = make_index(tmp_path / "v1", 30, seed=1), make_index(tmp_path / "v2", 12, seed=2)
    add_snapshot(cache, "owner/gallery", tmp_path / "v1", COMMIT_A, refs=("main",))
    add_snapshot(cache, "owner/gallery", tmp_path / "v2", COMMIT_B, refs=("v2",))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return cache, first, second


def same_results(got: SparseIndex, want: SparseIndex) -> None:
    queries = sp.random(4, VOCAB, density=0.2, format="csr", random_state=3, dtype=np.float32)
    for a, b in zip(got.search(queries, 5), want.search(queries, 5)):
        np.testing.assert_array_equal(a, b)
    assert got.items == want.items


def test_an_index_by_hub_id_loads_from_the_cache_and_names_its_commit(hub):
    cache, first, _ = hub
    loaded = SparseIndex.load("owner/gallery")
    same_results(loaded, first)
    assert loaded.source == f"owner/gallery@{COMMIT_A}"
    assert loaded.path == repo_folder(cache, "owner/gallery") / "snapshots" / COMMIT_A
    assert (loaded.path / ITEMS_FILE).is_symlink()  # the layout huggingface_hub makes: links into blobs/
    same_results(SparseIndex.load(loaded.source), first)  # the name it reports loads exactly that version again


@pytest.mark.parametrize("name", ["owner/gallery@v2", f"owner/gallery@{COMMIT_B}", "hf://datasets/owner/gallery@v2"])
def test_a_revision_picks_that_version(hub, name):
    _, _, second = hub
    loaded = SparseIndex.load(name)
    same_results(loaded, second)
    assert loaded.source == f"owner/gallery@{COMMIT_B}"


def test_files_copied_into_the_cache_load_too(tmp_path, monkeypatch):
    cache = offline_hub(monkeypatch, tmp_path / "cache")
    index = make_index(tmp_path / "v1", 9, seed=4)
    add_snapshot(cache, "owner/copied", tmp_path / "v1", COMMIT_A, links=False)
    monkeypatch.chdir(tmp_path)
    same_results(SparseIndex.load("owner/copied"), index)


def test_an_uncached_id_offline_is_one_line_saying_what_to_do(hub):
    with pytest.raises(ModelLoadError) as caught:
        SparseIndex.load("owner/never-downloaded")
    message = str(caught.value)
    assert message.startswith("index 'owner/never-downloaded' is not a local folder, the Hugging Face Hub could not")
    assert "could not be reached" in message and "not in the local cache" in message and "\n" not in message
    assert message.endswith(" (If 'owner/never-downloaded' is meant as a local folder: there is none; build it with"
                            " `python -m mlsr build-index --images DIR --out owner/never-downloaded`.)")
    for name in ("owner/gallery@v9", "hf://datasets/owner/never-downloaded"):  # an unknown tag; an explicit Hub id
        with pytest.raises(ModelLoadError) as caught:
            SparseIndex.load(name)
        assert "could not be reached" in str(caught.value) and "meant as a local folder" not in str(caught.value)


def test_an_index_found_on_the_hub_keeps_the_name_it_was_asked_by(hub):
    from mlsr.index.hub import locate_index

    for name in ("owner/gallery", "hf://datasets/owner/gallery", "owner/gallery@v2"):
        location = locate_index(name)
        assert location.name == name and location.repo_id == "owner/gallery"


@pytest.mark.parametrize("damage", ["altered", "truncated"])
def test_a_tampered_cached_file_is_refused_by_its_checksum(hub, damage):
    cache, _, _ = hub
    link = repo_folder(cache, "owner/gallery") / "snapshots" / COMMIT_A / "postings.weights.npy"
    blob = link.resolve()
    data = bytearray(blob.read_bytes())
    if damage == "altered":
        data[-1] ^= 0xFF
    else:
        del data[-2:]
    blob.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="postings.weights.npy .*rebuild.*cached copy of Hub dataset"
                                               " owner/gallery.*hf cache rm dataset/owner/gallery"):
        SparseIndex.load("owner/gallery")
    SparseIndex.load("owner/gallery@v2")  # the other commit's blobs are untouched


def test_a_link_in_a_snapshot_that_leaves_the_blobs_is_refused(hub, tmp_path):
    cache, _, _ = hub
    link = repo_folder(cache, "owner/gallery") / "snapshots" / COMMIT_A / ITEMS_FILE
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(link.read_bytes())  # same bytes: only where the link points is wrong
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(IndexFormatError, match="items.jsonl is missing .or not a regular file"):
        SparseIndex.load("owner/gallery")


def test_a_repo_without_a_manifest_is_not_an_index(tmp_path, monkeypatch):
    cache = offline_hub(monkeypatch, tmp_path / "cache")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("a,b\n")
    add_snapshot(cache, "owner/other", tmp_path / "other", COMMIT_A)
    (repo_folder(cache, "owner/other") / "snapshots" / COMMIT_A / MANIFEST_FILE).unlink(missing_ok=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(IndexFormatError, match="holds no manifest.json: it is not an mlsr index.*push-index"):
        SparseIndex.load("owner/other")


def test_a_manifest_naming_a_pattern_is_refused_before_any_download(hub, tmp_path):
    cache, _, _ = hub
    folder = tmp_path / "bad"
    make_index(folder, 5, seed=5)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"]["*"] = {"bytes": 1, "sha256": "0"}  # would match every file of the repo as a pattern
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    add_snapshot(cache, "owner/bad", folder, COMMIT_A)
    with pytest.raises(IndexFormatError, match="does not list the index's files"):
        SparseIndex.load("owner/bad")


def test_a_local_folder_wins_over_an_id(hub):
    _, _, _ = hub
    local = make_index(Path("owner") / "gallery", 7, seed=7)  # ./owner/gallery exists now
    loaded = SparseIndex.load("owner/gallery")
    same_results(loaded, local)
    assert loaded.source == "owner/gallery" and not loaded.path.is_absolute()


def test_how_a_name_is_told_from_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "index").mkdir()
    (tmp_path / "existing" / "idx").mkdir(parents=True)
    assert parse_hub_id("owner/name") == HubIndexId("owner/name")
    assert parse_hub_id("owner/name@v1.0") == HubIndexId("owner/name", "v1.0")
    assert parse_hub_id("owner/name@refs/pr/3") == HubIndexId("owner/name", "refs/pr/3")
    assert parse_hub_id("hf://datasets/owner/name") == HubIndexId("owner/name")
    assert parse_hub_id("hf://datasets/index/x@main") == HubIndexId("index/x", "main")  # explicit: always the Hub
    for folder in ["existing/idx", "index/mscoco-test", "index/other@v1", "./owner/name", "/abs/owner", "a/b/c",
                   "owner/name/", "~/idx", "name", "owner/.hidden", Path("owner/name")]:
        assert parse_hub_id(folder) is None, folder  # an existing path, a missing one under an existing folder, ...
    for bad in ["hf://owner/name", "hf://models/owner/name", "hf://datasets/owner", "hf://datasets/a/b/c"]:
        with pytest.raises(InputError, match="hf://datasets/OWNER/NAME"):
            parse_hub_id(bad)


def test_a_missing_folder_under_an_existing_one_still_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "index").mkdir()
    with pytest.raises(IndexFormatError, match="no index at index/mscoco-test. Build one"):
        SparseIndex.load("index/mscoco-test")


def test_a_local_index_loads_without_importing_huggingface_hub(tmp_path):
    from tests.test_layout import loaded_after

    make_index(tmp_path / "idx", 5, seed=6)
    loaded = loaded_after(f"from mlsr.index.sparse import SparseIndex\nSparseIndex.load({str(tmp_path / 'idx')!r})\n"
                          "import mlsr.index.publish")
    assert "mlsr" in loaded and "huggingface_hub" not in loaded


def test_an_id_reads_back_as_written():
    assert str(HubIndexId("me/x")) == "me/x" and str(HubIndexId("me/x", "v1")) == "me/x@v1"


@pytest.mark.parametrize("asked, first_commit, second_revision", [
    (None, COMMIT_A, COMMIT_A),  # main: the commit main pointed at when the manifest came
    ("v2", COMMIT_B, COMMIT_B),
    ("v2", None, "v2"),  # a download that names no commit: the revision asked for
])
def test_the_files_come_from_the_commit_the_manifest_came_from(tmp_path, monkeypatch, asked, first_commit,
                                                               second_revision):
    """Two requests (the manifest, then the files it lists): the second pinned, so a push between cannot mix two
    versions."""
    from mlsr.index.hub import _download_index
    from mlsr.models.hub import Source

    make_index(tmp_path / "idx", 4, seed=8)
    calls = []

    def download(repo_id, patterns, *, revision=None, repo_type="model", what="model"):
        calls.append((repo_id, list(patterns), revision, repo_type, what))
        return Source(repo_id, tmp_path / "idx", first_commit if len(calls) == 1 else COMMIT_B)

    monkeypatch.setattr("mlsr.models.hub.download", download)
    location = _download_index(HubIndexId("me/x", asked))
    listed = sorted(json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())["files"])
    assert calls == [("me/x", [MANIFEST_FILE], asked, "dataset", "index"),
                     ("me/x", [MANIFEST_FILE, *listed], second_revision, "dataset", "index")]
    assert location.name == str(HubIndexId("me/x", asked)) and location.commit == COMMIT_B
    assert location.repo_id == "me/x" and location.folder == tmp_path / "idx"
    assert _download_index(HubIndexId("me/x", asked), "hf://datasets/me/x").name == "hf://datasets/me/x"
    (tmp_path / "idx" / MANIFEST_FILE).unlink()  # a repo that is not an index: named as asked for
    with pytest.raises(IndexFormatError, match=f"^Hub dataset {HubIndexId('me/x', asked)} holds no manifest.json"):
        _download_index(HubIndexId("me/x", asked))


@pytest.mark.parametrize("content, problem", [
    (b"\xff\xfe not text", "me/x@v1: manifest.json cannot be read ("),
    (b"{not json", "me/x@v1: manifest.json cannot be read (Expecting property name"),
    (b"[1, 2]", "me/x@v1: manifest.json does not list the index's files as mlsr writes them."),
    (b'{"files": ["items.jsonl"]}', "me/x@v1: manifest.json does not list the index's files as mlsr writes them."),
])
def test_a_hub_manifest_that_cannot_be_read_names_the_repo_and_revision(tmp_path, content, problem):
    from mlsr.index.hub import _listed_files

    (tmp_path / MANIFEST_FILE).write_bytes(content)
    with pytest.raises(IndexFormatError) as raised:
        _listed_files(tmp_path, HubIndexId("me/x", "v1"))
    assert str(raised.value).startswith("Hub dataset " + problem) and "\n" not in str(raised.value)


def test_a_repo_without_a_manifest_says_how_to_publish_one(tmp_path):
    from mlsr.index.hub import _listed_files

    with pytest.raises(IndexFormatError) as raised:
        _listed_files(tmp_path, HubIndexId("me/x"))
    assert str(raised.value) == ("Hub dataset me/x holds no manifest.json: it is not an mlsr index (publish one with"
                                 " `python -m mlsr push-index DIR OWNER/NAME`).")


def test_is_hub_index_follows_the_rule(tmp_path, monkeypatch):
    from mlsr.index.hub import is_hub_index

    monkeypatch.chdir(tmp_path)
    assert is_hub_index("owner/name") and is_hub_index("hf://datasets/owner/name@v1")
    assert not is_hub_index(Path("owner/name")) and not is_hub_index("./owner/name")


@pytest.mark.parametrize("url", ["https://huggingface.co/datasets/me/x", "http://example.org/idx", "s3://bucket/idx"])
def test_a_url_where_an_index_is_expected_is_refused_before_any_request(url):
    from mlsr.index.hub import locate_index

    with pytest.raises(IndexFormatError) as raised:
        locate_index(url)
    assert str(raised.value) == (f"index {url!r} is a URL: mlsr does not fetch URLs here; download it and give its"
                                 " local path.")  # a folder or a file alike
