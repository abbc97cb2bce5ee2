"""The app's first start: a Hub index id is downloaded (here: read from an offline cache), a missing folder is built
from published vectors when the app was told how, and the decision is the same rule as everywhere else."""

from __future__ import annotations

from urllib.parse import quote

from pathlib import Path

import pytest

from mlsr.app.startup import first_start, missing_index_hint
from mlsr.settings import DEFAULT_INDEX
from tests.helpers.hub import add_snapshot, offline_hub

COMMIT = "e" * 40


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "built").mkdir()
    return tmp_path


@pytest.mark.parametrize("index, dataset, step", [
    ("built", None, "load"),  # an existing folder is read as it is
    ("owner/gallery", None, "download"),  # a published index
    ("owner/gallery@v1", "lsr42/mscoco-blip-dense", "download"),  # an id is an id, whatever else is configured
    ("hf://datasets/owner/gallery", "lsr42/mscoco-blip-dense", "download"),
    (DEFAULT_INDEX, None, "build"),  # the default gallery is a folder, even where ./index does not exist
    ("/data/index/mscoco-test", "lsr42/mscoco-blip-dense", "build"),  # persistent storage, built once
    ("/data/index/mscoco-test", None, "load"),  # nobody said how to build it: loading it says what is missing
    ("built/missing", None, "load"),
])
def test_what_the_first_start_does(here, index, dataset, step):
    assert first_start(index, dataset) == step


def test_the_prepare_hint_is_only_for_folders_the_app_would_build(here):
    assert "python -m mlsr prepare --index /data/x --dataset d/s" in missing_index_hint("/data/x", "d/s")
    assert missing_index_hint("owner/gallery", "d/s") == ""
    assert missing_index_hint("hf://nonsense", None) == ""  # the error itself says what is wrong with the name


@pytest.fixture
def hub_gallery(app_index, tmp_path, monkeypatch):
    """The app's test gallery published as someone/gallery, in an offline cache; cwd has no ./someone."""
    add_snapshot(offline_hub(monkeypatch, tmp_path / "cache"), "someone/gallery", app_index, COMMIT)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return "someone/gallery"


def test_the_app_starts_from_a_hub_index(hub_gallery, app_args, capsys, monkeypatch):
    import app

    args = list(app_args)
    args[args.index("--index") + 1] = hub_gallery
    page = app.create_app(app.parse_args([*args, "--device", "cpu"]))
    err = capsys.readouterr().err
    assert "cannot start" not in err and "loading index someone/gallery from the Hugging Face Hub" in err
    assert "cannot start" not in str(page.config)
    assert not Path("someone").exists()  # nothing was built in its place


def test_a_hub_index_service_names_the_id_not_the_cache(hub_gallery, backbone_dir, app_head_dir, tokenizer_dir,
                                                        tmp_path):
    from mlsr.serving.service import Service

    service = Service.load(hub_gallery, backbone=str(backbone_dir), head=str(app_head_dir),
                           tokenizer=str(tokenizer_dir), device="cpu")
    about = service.about()
    assert about["index"] == f"someone/gallery@{COMMIT}" and str(tmp_path) not in str(about)
    hits = service.suggest("a buffalo in a market", k=5).hits
    # the photos are files beside the publisher's index, not in the repo; their pictures travel inside the index
    assert len(hits) == 5 and all(hit.image == f"thumbnails/{quote(hit.id, safe='')}" for hit in hits)
    assert all(service.pictures.picture(hit.row)[:4] == b"RIFF" for hit in hits)


def test_an_uncached_hub_index_offline_shows_one_line(app_args, tmp_path, monkeypatch, capsys):
    import app

    offline_hub(monkeypatch, tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    args = list(app_args)
    args[args.index("--index") + 1] = "someone/never-pushed"
    page = app.create_app(app.parse_args([*args, "--device", "cpu"]))
    loading, failed = capsys.readouterr().err.splitlines()
    assert loading.startswith("mlsr: loading index someone/never-pushed from the Hugging Face Hub")
    assert failed.startswith("mlsr: cannot start: index 'someone/never-pushed' is not a local folder, the Hugging"
                             " Face Hub could not be reached")
    assert "could not be reached" in str(page.config) and not (tmp_path / "someone").exists()


def test_the_offline_page_names_folders_without_their_server_paths(tmp_path):
    from mlsr.app.startup import public_text

    index = tmp_path / "deep" / "index"
    index.mkdir(parents=True)
    text = f"no index at {index}. Build one with --out {index}; head lsr42/d2s (a Hub id) stays"
    shown = public_text(text, [str(index), "lsr42/d2s"])
    assert str(tmp_path) not in shown and "no index at index." in shown and "lsr42/d2s" in shown


def test_a_service_over_an_index_built_in_memory_has_no_folder_to_read(app_encoder, app_index):
    """An index built in memory has no folder: `about` says it has no verdict and a hit has no local file (both
    read the folder as None before, a TypeError), while the same index loaded from its folder has both."""
    from mlsr.serving.service import Service
    from mlsr.index.sparse import SparseIndex

    loaded = SparseIndex.load(app_index)
    memory = SparseIndex.build(loaded.vectors, loaded.items, vocab=loaded.vocab, dense=loaded.dense, info=loaded.info)
    service = Service(app_encoder, memory, memory.path)
    assert memory.path is None and service.about()["verification"] is None
    hit = service.suggest("a boy leads a buffalo through the market", k=3).hits[0]
    assert service.local_image(hit) is None
    assert Service(app_encoder, loaded, app_index).local_image(hit) == (app_index / loaded.items[hit.row]["image"]
                                                                       ).resolve()
