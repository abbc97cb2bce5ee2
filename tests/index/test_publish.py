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
from mlsr.index.manifest import MANIFEST_FILE
from mlsr.checks import check_repo_id
from mlsr.index.publish import CARD_FILE, dataset_card, push_index, size_category
from mlsr.index.sparse import SparseIndex
from mlsr.settings import DEFAULT_BACKBONE, DEFAULT_TOKENIZER
from mlsr.vocab import Vocabulary

VOCAB = 80


def write_index(folder: Path, n: int = 12, local_images: int = 0, head: str = "lsr42/some-head") -> Path:
    vectors = sp.random(n, VOCAB, density=0.2, format="csr", random_state=0, dtype=np.float32)
    items = [{"id": f"i{i}", "image": f"photos/{i}.jpg" if i < local_images else f"https://example.org/{i}.jpg"}
             for i in range(n)]
    models = {"backbone": {"id": DEFAULT_BACKBONE, "revision": "c0ffee"}, "head": {"id": head, "revision": "beef" if head.count("/") == 1 and not head.startswith("/") else None},
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
