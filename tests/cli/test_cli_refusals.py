"""Files the operating system refuses, symbolic links and wrong kinds of paths, through the command line: a
skip-and-list where the command promises one, otherwise exit code 2 and one `error:` line, never a traceback.

Symlink policy (mlsr.data.captions.scan_images): a link to a file inside the images folder is followed; a link
leaving the folder, a broken or looping link and a link to a folder are skipped and listed, like a subfolder or
an image that cannot be read.
"""

from __future__ import annotations

import json
import shutil

import pytest

from mlsr.cli import main
from tests.helpers.refusals import make_unreadable, run_mlsr


@pytest.fixture(scope="module")
def models(backbone_dir, head_dir, tokenizer_dir) -> list[str]:
    return ["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir),
            "--device", "cpu"]


@pytest.fixture(scope="module")
def tree(image_folder, tmp_path_factory):
    """Two images, one unreadable, an unreadable subfolder, and links of every kind."""
    root = tmp_path_factory.mktemp("refusals")
    photos, outside = root / "photos", root / "elsewhere"
    (photos / "locked").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(image_folder / "bus.jpg", photos / "bus.jpg")
    shutil.copy(image_folder / "dogs.png", photos / "dogs.png")
    shutil.copy(image_folder / "pasta.jpg", photos / "private.jpg")
    shutil.copy(image_folder / "boat.png", photos / "locked" / "boat.png")
    shutil.copy(image_folder / "kites.jpg", outside / "kites.jpg")
    (photos / "bus-link.jpg").symlink_to(photos / "bus.jpg")  # inside the folder: followed
    (photos / "escape.jpg").symlink_to(outside / "kites.jpg")  # leaves the folder
    (photos / "broken.jpg").symlink_to(photos / "gone.jpg")
    (photos / "loop-a.jpg").symlink_to(photos / "loop-b.jpg")
    (photos / "loop-b.jpg").symlink_to(photos / "loop-a.jpg")
    (photos / "more").symlink_to(outside, target_is_directory=True)
    make_unreadable(photos / "private.jpg", photos / "locked")
    (root / "captions.csv").write_text("file,caption\nbus.jpg,a bus\n")
    make_unreadable(root / "captions.csv")
    yield photos
    for path in (photos / "private.jpg", photos / "locked", root / "captions.csv"):
        path.chmod(0o755)


def test_build_index_skips_and_lists_what_it_cannot_take(tree, models, tmp_path):
    built = run_mlsr("build-index", "--images", str(tree), "--out", str(tmp_path / "idx"), *models)
    assert built.returncode == 0, built.stderr
    assert "indexed 3 images" in built.stdout  # bus, dogs and the link to bus inside the folder
    assert "Traceback" not in built.stderr
    listed = {line.split(":")[0].strip(): line for line in built.stderr.splitlines() if line.startswith("  ")}
    assert set(listed) == {"private.jpg", "locked/", "escape.jpg", "broken.jpg", "loop-a.jpg", "loop-b.jpg", "more"}
    assert "permission denied" in listed["private.jpg"] and "permission denied" in listed["locked/"]
    assert "outside the images folder" in listed["escape.jpg"] and "broken link" in listed["broken.jpg"]
    assert "loops" in listed["loop-a.jpg"] and "link to a folder" in listed["more"]
    items = [json.loads(line) for line in (tmp_path / "idx" / "items.jsonl").read_text().splitlines()]
    assert [item["id"] for item in items] == ["bus-link.jpg", "bus.jpg", "dogs.png"]


def test_strict_build_stops_with_one_line(tree, models, tmp_path):
    built = run_mlsr("build-index", "--images", str(tree), "--out", str(tmp_path / "idx"), "--strict", *models)
    assert built.returncode == 2 and built.stderr.startswith("error: ")
    assert len(built.stderr.strip().splitlines()) == 1 and "--strict" in built.stderr
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("command, message", [
    (lambda tree, tmp: ["terms", str(tree / "private.jpg")], "image .*private.jpg cannot be read .permission denied"),
    (lambda tree, tmp: ["build-index", "--images", str(tree), "--captions", str(tree.parent / "captions.csv"),
                        "--out", str(tmp / "x")], "captions file .*captions.csv cannot be read .permission denied"),
])
def test_unreadable_inputs_give_one_line(tree, models, tmp_path, command, message):
    import re

    result = run_mlsr(*command(tree, tmp_path), *models)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert re.search(message, result.stderr), result.stderr


@pytest.mark.parametrize("locked", ["manifest.json", "items.jsonl", "postings.docs.npy"])
def test_an_index_with_an_unreadable_file_gives_one_line(models, encoder, image_folder, tmp_path, locked):
    from mlsr.ingest.images import build_index

    build_index(encoder, image_folder, out=tmp_path / "idx")
    make_unreadable(tmp_path / "idx" / locked)
    try:
        result = run_mlsr("search", "--index", str(tmp_path / "idx"), "a bus", *models)
    finally:
        (tmp_path / "idx" / locked).chmod(0o644)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: index {tmp_path / 'idx'}: {locked} cannot be read (permission denied)."


def test_files_and_folders_in_each_others_place(models, image_folder, tmp_path, capsys):
    cases = [
        (["build-index", "--images", str(image_folder / "bus.jpg"), "--out", str(tmp_path / "x")],
         "images folder .*bus.jpg is a file, not a folder"),
        (["build-index", "--images", str(image_folder), "--captions", str(image_folder), "--out", str(tmp_path / "x")],
         "captions file .* is a folder, not a file"),
        (["terms", str(image_folder)], "image .* is a folder, not a file"),
        (["search", "--index", str(image_folder / "bus.jpg"), "a bus"], "bus.jpg is a file, not an index folder"),
        (["build-index", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")], "does not exist"),
        (["build-index", "--images", str(image_folder), "--out", str(image_folder / "captions.csv")],
         "captions.csv is a file, not an index folder; refusing to overwrite it"),
    ]
    import re

    for args, message in cases:
        assert main([*args, *models]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), (args, err)


def test_strict_build_stops_at_an_unreadable_image_with_its_reason(image_folder, models, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(image_folder / "bus.jpg", folder / "bus.jpg")
    shutil.copy(image_folder / "dogs.png", folder / "private.png")
    make_unreadable(folder / "private.png")
    built = run_mlsr("build-index", "--images", str(folder), "--out", str(tmp_path / "idx"), "--strict", *models)
    assert built.returncode == 2 and "Traceback" not in built.stderr
    assert built.stderr.strip().splitlines()[-1] == f"error: image {folder / 'private.png'} cannot be read (permission denied)."


@pytest.mark.parametrize("args, message", [
    (["-k", "0"], "error: k must be at least 1, got 0."),
    (["-k", "-3"], "error: k must be at least 1, got -3."),
    (["--terms", "0"], "error: top_k must be at least 1, got 0."),
    (["--top-k", "-1"], "error: top_k must be at least 1, got -1."),
])
def test_search_counts_follow_the_librarys_rule(models, tmp_path, capsys, args, message):
    # refused before the index or the models are read: the index need not even exist
    assert main(["search", "--index", str(tmp_path / "none"), *args, "a bus", *models]) == 2
    out = capsys.readouterr()
    assert out.err == message + "\n" and out.out == ""


def test_terms_top_k_follows_the_librarys_rule(models, image_folder, capsys):
    assert main(["terms", str(image_folder / "bus.jpg"), "--top-k", "0", *models]) == 2
    assert capsys.readouterr().err == "error: top_k must be at least 1, got 0.\n"
