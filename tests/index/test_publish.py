"""push-index: the dataset card made from the manifest, the checks made before any request, the one commit it
sends (against a recording stand-in for HfApi, offline), and a real round trip through the Hub (`hub` test)."""

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.cli import main
from mlsr.errors import InputError
from mlsr.index.folder import read_manifest
from mlsr.index.manifest import MANIFEST_FILE, THUMBNAIL_FILES
from mlsr.checks import check_repo_id
from mlsr.index.publish import CARD_FILE, _count_local_images, dataset_card, local_models, push_index, size_category
from mlsr.index.sparse import SparseIndex
from mlsr.settings import DEFAULT_BACKBONE, DEFAULT_TOKENIZER
from mlsr.vocab import Vocabulary

VOCAB = 80


def write_index(folder: Path, n: int = 12, local_images: int = 0, head: str = "lsr42/some-head") -> Path:
    vectors = sp.random(n, VOCAB, density=0.2, format="csr", random_state=0, dtype=np.float32)
    items = [{"id": f"i{i}", "image": f"photos/{i}.jpg" if i < local_images else f"https://example.org/{i}.jpg"}
             for i in range(n)]
    hub_head = head.count("/") == 1 and not head.startswith("/")
    models = {"backbone": {"id": DEFAULT_BACKBONE, "revision": "c0ffee"},
              "head": {"id": head, "revision": "beef" if hub_head else None},
              "tokenizer": {"id": DEFAULT_TOKENIZER}, "vocab_size": VOCAB}
    info = {"documents": "image+caption", "models": models,
            "build": {"source": {"dataset": "lsr42/mscoco-blip-dense", "revision": "d00d", "split": "test"}}}
    SparseIndex.build(vectors, items, vocab=Vocabulary(tuple(f"t{i}" for i in range(VOCAB))),
                      dense=np.ones((n, 4), np.float32), info=info).save(folder)
    return folder


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records the calls push_index makes, touches no network."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/datasets/{repo_id}"

    def update_repo_settings(self, repo_id, **kwargs):
        self.calls.append(("update_repo_settings", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", repo_id, {"operations": list(operations), **kwargs}))
        return type("CommitInfo", (), {"oid": "f" * 40})()


def test_the_card_is_made_from_the_manifest(tmp_path):
    manifest = read_manifest(write_index(tmp_path / "idx", n=12))
    card = dataset_card(manifest, "me/coco-small")
    assert card.startswith("---\npretty_name: coco-small\n") and "size_categories: [n<1K]" in card
    assert "12 image+caption documents" in card and "80-term vocabulary" in card
    assert f"backbone: `{DEFAULT_BACKBONE}` (revision `c0ffee`)" in card and "head: `lsr42/some-head`" in card
    assert "**Dense vectors**: 4-d" in card and "`lsr42/mscoco-blip-dense` (revision `d00d`), split `test`" in card
    # the usage names the id and only the models that differ from mlsr's defaults
    assert 'python -m mlsr search --index me/coco-small --head lsr42/some-head "a dog' in card
    assert "--backbone" not in card and "--tokenizer" not in card and "MLSR_INDEX=me/coco-small" in card
    assert 'SparseIndex.load("me/coco-small")' in card
    for name, record in manifest["files"].items():
        assert f"| {name} | {record['bytes']:,} |" in card
    assert "placeholder" not in card and "local folder" not in card


def test_the_card_warns_about_what_was_not_published(tmp_path):
    folder = write_index(tmp_path / "idx", n=6, local_images=4, head="/home/me/heads/mine")
    card = dataset_card(read_manifest(folder), "me/x", local_images=4)
    assert "placeholder for 4 of them" in card
    assert "head: `/home/me/heads/mine` — a local folder where the index was built" in card


@pytest.mark.parametrize("count, label", [
    (0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (5_000, "1K<n<10K"), (9_999, "1K<n<10K"),
    (10_000, "10K<n<100K"), (100_000, "100K<n<1M"), (999_999, "100K<n<1M"), (1_000_000, "1M<n<10M"),
    (10_000_000, "10M<n<100M"), (99_999_999, "10M<n<100M"),
    # the Hub's categories go on past 100M (a 200M-row index was labelled "n>1T")
    (100_000_000, "100M<n<1B"), (200_000_000, "100M<n<1B"), (1_000_000_000, "1B<n<10B"),
    (10_000_000_000, "10B<n<100B"), (100_000_000_000, "100B<n<1T"), (1_000_000_000_000, "n>1T"),
])
def test_size_categories(count, label):
    assert size_category(count) == label


@pytest.mark.parametrize("repo_id", ["me/x", "hf://datasets/me/x", "Org-1/my_index.v2"])
def test_good_repo_ids(repo_id):
    assert check_repo_id(repo_id, "hf://datasets/") == repo_id.removeprefix("hf://datasets/")


@pytest.mark.parametrize("repo_id", ["x", "me/x/y", "me--x/y", "me/x..y", "me/x.git", "/abs/path", "me/" + "x" * 96,
                                     "me/-x", "me/x y"])
def test_bad_repo_ids_are_refused(repo_id):
    with pytest.raises(InputError, match="not a Hub repo id"):
        check_repo_id(repo_id, "hf://datasets/")


@pytest.fixture
def no_network(monkeypatch):
    """Any HfApi request fails the test: these checks must come before the first one."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("push-index touched the Hub")

    for method in ("create_repo", "create_commit", "update_repo_settings", "upload_folder", "whoami"):
        monkeypatch.setattr(huggingface_hub.HfApi, method, refuse)


def test_push_index_refuses_what_it_cannot_publish_before_any_request(no_network, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert main(["push-index", str(tmp_path / "photos"), "me/x"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'photos'} has no manifest.json: it is not an mlsr index" \
                                      " (or its build was interrupted).\n"
    assert main(["push-index", str(tmp_path / "nowhere"), "me/x"]) == 2
    assert "error: no index at" in capsys.readouterr().err
    folder = write_index(tmp_path / "idx")
    assert main(["push-index", str(folder), "not a repo"]) == 2
    assert capsys.readouterr().err.startswith("error: 'not a repo' is not a Hub repo id")
    with open(folder / "items.jsonl", "ab") as handle:
        handle.write(b" ")
    assert main(["push-index", str(folder), "me/x"]) == 2  # a damaged index is never published
    err = capsys.readouterr().err
    assert "items.jsonl has" in err and "manifest says" in err and err.count("\n") == 1


def test_push_sends_the_listed_files_the_manifest_and_the_card_in_one_commit(tmp_path):
    folder = write_index(tmp_path / "idx", n=5, local_images=2)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    api = RecordingApi()
    report = push_index(folder, "me/gallery", private=True, api=api)
    names = [call[0] for call in api.calls]
    assert names == ["create_repo", "update_repo_settings", "create_commit"]
    assert api.calls[0][2]["repo_type"] == "dataset" and api.calls[0][2]["private"] is True
    commit = api.calls[2][2]
    assert commit["repo_type"] == "dataset" and "5 image+caption documents" in commit["commit_message"]
    sent = {op.path_in_repo: op for op in commit["operations"]}
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert set(sent) == {*manifest["files"], MANIFEST_FILE, CARD_FILE}
    assert sent[CARD_FILE].path_or_fileobj == dataset_card(read_manifest(folder), "me/gallery", 2).encode()
    assert sent["items.jsonl"].path_or_fileobj == str(folder / "items.jsonl")
    assert report.commit == "f" * 40 and report.local_images == 2 and report.local_models == []
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the folder is not written to


def test_push_without_private_leaves_the_visibility_alone(tmp_path):
    api = RecordingApi()
    push_index(write_index(tmp_path / "idx"), "me/gallery", api=api)
    assert [call[0] for call in api.calls] == ["create_repo", "create_commit"]
    assert api.calls[0][2]["private"] is None


def test_push_offline_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert main(["push-index", str(write_index(tmp_path / "idx")), "me/gallery"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: push to dataset me/gallery failed: the Hugging Face Hub could not be reached")
    assert err.count("\n") == 1


@pytest.mark.hub
def test_push_then_load_by_id_round_trips(tmp_path, monkeypatch):
    """Needs a token with write access (HF_TOKEN or `hf auth login`); creates a private repo and deletes it."""
    from huggingface_hub import HfApi, get_token

    if not get_token():
        pytest.skip("no Hugging Face token to push with")
    api = HfApi()
    repo_id = f"{api.whoami()['name']}/mlsr-test-{uuid.uuid4().hex[:8]}"
    local = write_index(tmp_path / "idx", n=20)
    try:
        assert main(["push-index", str(local), repo_id, "--private"]) == 0
        assert api.repo_info(repo_id, repo_type="dataset").private
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
        loaded = SparseIndex.load(repo_id)
        want = SparseIndex.load(local)
        queries = sp.random(3, VOCAB, density=0.3, format="csr", random_state=1, dtype=np.float32)
        for got, expected in zip(loaded.search(queries, 5), want.search(queries, 5)):
            np.testing.assert_array_equal(got, expected)
        assert loaded.source.startswith(f"{repo_id}@") and str(tmp_path / "cache") in str(loaded.path)
        card = api.hf_hub_download(repo_id, CARD_FILE, repo_type="dataset", cache_dir=str(tmp_path / "c2"))
        assert f"--index {repo_id}" in Path(card).read_text()
        assert main(["push-index", str(local), repo_id]) == 0  # unchanged: nothing new is sent
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
        assert len(SparseIndex.load(repo_id)) == 20  # offline: the cached copy
    finally:
        api.delete_repo(repo_id, repo_type="dataset", missing_ok=True)


def test_push_index_command_says_how_to_use_and_pin_it(tmp_path, monkeypatch, capsys):
    api = RecordingApi()
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: api)
    folder = write_index(tmp_path / "idx", n=4, local_images=1, head="my-head")  # a local folder, by name
    assert main(["push-index", str(folder), "me/gallery"]) == 0
    captured = capsys.readouterr()
    assert f"use it with --index me/gallery, or --index me/gallery@{'f' * 40} for exactly" in captured.out
    assert "1 items point at image files on this machine and have no thumbnail" in captured.err
    assert "the index names a local folder as its head; publish that model too" in captured.err


@pytest.mark.parametrize("field, value, named", [
    ("head", "/home/me/heads/mine", "manifest.json: models.head.id"),
    ("image_root", "/srv/photos", "manifest.json: build.source.image_root"),
    ("image", "/home/me/photos/0.jpg", "items.jsonl row 0: image"),
    ("image", "C:\\Users\\me\\0.jpg", "items.jsonl row 0: image"),
    ("image", "file:///home/me/0.jpg", "items.jsonl row 0: image"),
])
def test_push_refuses_a_machine_path_naming_the_field(tmp_path, monkeypatch, capsys, field, value, named):
    """An index that still records a path of the machine that built it is never published (older mlsr wrote them)."""
    api = RecordingApi()
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: api)
    folder = write_index(tmp_path / "idx", n=3, head=value if field == "head" else "lsr42/some-head")
    if field != "head":
        index = SparseIndex.load(folder)
        if field == "image":
            index.items[0]["image"] = value
        else:
            index.info["build"]["source"]["image_root"] = value
        index.save(folder)
    assert main(["push-index", str(folder), "me/gallery"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: idx names a path of this machine (") and named in error and value not in error
    assert api.calls == []  # nothing was sent


def bare_index(folder: Path, n: int = 3) -> Path:
    """An index saved with nothing but its vectors and ids (no info, no dense vectors, no thumbnails)."""
    vectors = sp.random(n, VOCAB, density=0.2, format="csr", random_state=0, dtype=np.float32)
    SparseIndex.build(vectors, [{"id": f"i{i}"} for i in range(n)]).save(folder)
    return folder


def test_the_card_of_a_bare_index_says_what_is_not_recorded(tmp_path):
    manifest = read_manifest(bare_index(tmp_path / "idx"))
    card = dataset_card(manifest, "me/bare")
    assert "- **Items**: 3 (image documents; images by URL or none).\n" in card
    assert "\n  - backbone: not recorded\n  - head: not recorded\n  - tokenizer: not recorded\n" in card
    assert "- **Dense vectors**: none (for" in card and "Built from" not in card
    assert f"- **Stored weights**: float16; index format 3; saved {manifest['saved']}.\n" in card
    assert 'python -m mlsr search --index me/bare "a dog' in card and "--index me/bare      #" in card
    table = "\n".join(f"| {name} | {manifest['files'][name]['bytes']:,} |" for name in sorted(manifest["files"]))
    assert card.endswith("|---|---|\n" + table + "\n")


def test_the_card_of_an_older_format_falls_back_to_what_it_meant(tmp_path):
    """Format 1 manifests had no precision (they stored float32), and some no date."""
    manifest = read_manifest(bare_index(tmp_path / "idx"))
    manifest = {key: value for key, value in manifest.items() if key not in ("precision", "saved")}
    assert "- **Stored weights**: float32; index format 3; saved unknown.\n" in dataset_card(manifest, "me/old")


def test_the_card_writes_large_numbers_and_every_thumbnail_with_thousands_separators(tmp_path):
    manifest = read_manifest(bare_index(tmp_path / "idx"))
    manifest.update(count=1_234_567, vocab_size=30_522, thumbnails=1_000)
    manifest["files"] = {**manifest["files"], "items.jsonl": {"bytes": 9_876_543, "sha256": "0" * 64}}
    card = dataset_card(manifest, "me/big", local_images=7)  # a thumbnail count says more than local images
    assert "size_categories: [1M<n<10M]" in card and "1,234,567 image documents" in card
    assert "over a\n30,522-term vocabulary" in card and "| items.jsonl | 9,876,543 |" in card
    assert ("- **Items**: 1,234,567 (image documents; each item's picture travels with the index: a 512-px WebP"
            " thumbnail of 1,000 of the 1,234,567 items (`thumbnails.*.npy`), which the app serves itself).") in card
    assert "placeholder" not in card


def test_the_card_names_a_placeholder_count_and_the_command_that_fills_it(tmp_path):
    card = dataset_card(read_manifest(bare_index(tmp_path / "idx")), "me/x", local_images=1_500)
    assert ("(image documents; their images are files of the machine that built it, not published here: the app"
            " shows a placeholder for 1,500 of them (`python -m mlsr thumbnails --index DIR` adds the pictures"
            " before a push)).") in card


@pytest.mark.parametrize("build, line", [
    ({"source": {"dataset": "lsr42/x", "split": "val"}}, "- **Built from**: `lsr42/x`, split `val`.\n"),
    ({"source": {"dataset": "lsr42/x", "revision": "abc", "split": "val"}},
     "- **Built from**: `lsr42/x` (revision `abc`), split `val`.\n"),
    ({"source": {"image_root": "photos"}}, None),  # built from a folder: no dataset to name
    ({"source": "lsr42/x"}, None), ({}, None), ("lsr42/x", None), (None, None),
])
def test_the_card_names_the_source_dataset_only_when_the_build_recorded_one(tmp_path, build, line):
    manifest = {**read_manifest(bare_index(tmp_path / "idx")), "build": build}
    card = dataset_card(manifest, "me/x")
    assert (line in card) if line else ("Built from" not in card and "None" not in card)


def test_the_card_lists_every_model_and_the_flags_for_the_ones_that_differ(tmp_path):
    models = {"backbone": {"id": "me/blip", "revision": "1"}, "head": {"id": "/srv/heads/h", "revision": "2"},
              "tokenizer": {"id": DEFAULT_TOKENIZER}}
    card = dataset_card({**read_manifest(bare_index(tmp_path / "idx")), "models": models}, "me/x")
    local = " — a local folder where the index was built: publish it too, or nobody else can search this index"
    assert (f"\n  - backbone: `me/blip` (revision `1`)\n  - head: `/srv/heads/h` (revision `2`){local}\n"
            f"  - tokenizer: `{DEFAULT_TOKENIZER}`\n- **Dense") in card
    assert 'search --index me/x --backbone me/blip --head /srv/heads/h "a dog' in card


@pytest.mark.parametrize("models, local", [
    ({"head": {"id": "/srv/heads/h", "revision": "2"}}, ["head"]),  # a path, even with a revision
    ({"head": {"id": "me/h", "revision": "2"}}, []),
    ({"head": {"id": "me/h"}}, ["head"]),  # a Hub-shaped name without the commit it was loaded at: a folder
    ({"tokenizer": {"id": "bert-base-uncased"}}, []),  # tokenizers record no revision
    ({"tokenizer": {"id": "C:\\tok"}}, ["tokenizer"]),
    ({"backbone": {"id": None}, "head": {}}, []),
])
def test_local_models_are_paths_or_hub_names_without_a_revision(models, local):
    assert local_models({"models": models}) == local


def test_a_machine_path_deep_in_an_item_is_named_and_more_are_counted(tmp_path):
    api = RecordingApi()
    folder = write_index(tmp_path / "idx", n=3)
    index = SparseIndex.load(folder)
    index.items[1]["XMP"] = {"sidecars": ["notes.txt", "/home/me/1.xmp"]}
    index.save(folder)
    with pytest.raises(InputError) as raised:
        push_index(folder, "me/x", api=api)
    assert str(raised.value).startswith("idx names a path of this machine (items.jsonl row 1: XMP.sidecars[1]);"
                                        " nothing was published. Rebuild the index with this mlsr (it records"
                                        " folders by name and images relative to the index), or edit that field.")
    index.items[1]["XMP"] = ["/home/me/1.xmp", "~/2.xmp"]
    index.items[2]["image"] = "/home/me/2.jpg"  # a later row is not read once one is found
    index.save(folder)
    with pytest.raises(InputError, match=r"\(items.jsonl row 1: XMP\[0\] and more\); nothing"):
        push_index(folder, "me/x", api=api)
    assert api.calls == []


def test_local_images_count_the_rows_whose_local_file_has_no_thumbnail(tmp_path):
    """A thumbnail of any length (one byte too) covers its row; URLs of either scheme never count."""
    folder = write_index(tmp_path / "idx", n=5)
    index = SparseIndex.load(folder)
    for row, image in enumerate(["a.jpg", "b.jpg", "http://example.org/c.jpg", "d.jpg", None]):
        index.items[row]["image"] = image
    index.save(folder)
    assert _count_local_images(folder) == 3
    np.save(folder / THUMBNAIL_FILES["offsets"], np.array([0, 1, 1, 1, 4, 4], np.int64))  # rows 0 and 3 pictured
    assert _count_local_images(folder) == 1
    np.save(folder / THUMBNAIL_FILES["offsets"], np.array([0, 1, 2, 3, 4, 5], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):  # never unpickled, even from the index's own folder
        _count_local_images(folder)


def test_push_takes_a_prefixed_id_and_reports_what_it_sent(tmp_path, monkeypatch):
    made = []

    class NoOidApi(RecordingApi):
        def __init__(self, token=None):
            super().__init__()
            made.append(token)

        def create_commit(self, repo_id, operations, **kwargs):
            super().create_commit(repo_id, operations, **kwargs)
            return None  # a commit record without an id

    monkeypatch.setattr("huggingface_hub.HfApi", NoOidApi)
    folder = bare_index(tmp_path / "idx")
    report = push_index(folder, "hf://datasets/me/x", private=True, token="hf_secret")
    assert made == ["hf_secret"] and report.repo_id == "me/x" and report.commit is None
    manifest = read_manifest(folder)
    assert report.url == "https://huggingface.co/datasets/me/x" and report.files == len(manifest["files"]) + 2
    assert report.bytes == sum(record["bytes"] for record in manifest["files"].values())


def test_push_calls_name_the_repo_its_type_and_the_commit(tmp_path):
    api = RecordingApi()
    push_index(bare_index(tmp_path / "idx"), "me/x", private=True, api=api)
    assert api.calls[0] == ("create_repo", "me/x", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert api.calls[1] == ("update_repo_settings", "me/x", {"private": True, "repo_type": "dataset"})
    assert api.calls[2][1] == "me/x" and api.calls[2][2]["commit_message"] == "mlsr index: 3 image documents"


def test_a_push_that_cannot_connect_says_a_rerun_resends_nothing_twice(tmp_path):
    from mlsr.errors import ModelLoadError

    class Offline(RecordingApi):
        def create_repo(self, repo_id, **kwargs):
            raise ConnectionError("no route")

    with pytest.raises(ModelLoadError) as raised:
        push_index(bare_index(tmp_path / "idx"), "me/x", api=Offline())
    assert str(raised.value) == ("push to dataset me/x failed: the Hugging Face Hub could not be reached"
                                 " (ConnectionError). Nothing was published; run it again once online (files already"
                                 " uploaded are not sent twice).")
