"""`mlsr add` and `mlsr remove` end to end with tiny models: equal to a fresh build, refusals on one line that change
nothing, and a SIGKILL at any point leaves the old index or the new one."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mlsr._files import KILL_AT_ENV
from mlsr.cli import main
from mlsr.index.sparse import SparseIndex
from tests.helpers.data import ROOT


@pytest.fixture
def model_args(backbone_dir, head_dir, tokenizer_dir):
    return ["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu"]


@pytest.fixture
def halves(image_folder, tmp_path):
    """The six test images split into two folders (old: 4, new: 2), and one folder with all six."""
    names = sorted(path.name for path in image_folder.rglob("*") if path.suffix in (".jpg", ".png"))
    folders = {key: tmp_path / key for key in ("old", "new", "all")}
    for folder in folders.values():
        folder.mkdir()
    for i, name in enumerate(names):
        source = next(image_folder.rglob(name))
        shutil.copy(source, folders["old" if i < 4 else "new"] / name)
        shutil.copy(source, folders["all"] / name)
    return folders


def ranked(index: SparseIndex, encoder, texts=("two dogs playing", "a red boat", "mountains at dusk")):
    """(ids, scores) of every document for some queries: what search shows, independent of row order."""
    found = index.search(encoder.encode_text(list(texts)), len(index))
    return [[index.items[row]["id"] for row in rows] for rows in found.indices], found.scores


def test_add_equals_a_build_of_the_union_and_takes_the_index_models(encoder, model_args, halves, tmp_path, capsys,
                                                                     monkeypatch, backbone_dir):
    out = tmp_path / "index"
    assert main(["build-index", "--images", str(halves["old"]), "--out", str(out), "--dense", *model_args]) == 0
    # local model folders are recorded by name only: elsewhere, add asks for them in one line...
    assert main(["add", "--index", str(out), "--images", str(halves["new"]), "--device", "cpu"]) == 2
    assert f"built with a local backbone folder named {backbone_dir.name!r}" in capsys.readouterr().err
    # ...and beside them it finds them by that name (their weights checked against the recorded fingerprints)
    monkeypatch.chdir(backbone_dir.parent)
    assert main(["add", "--index", str(out), "--images", str(halves["new"]), "--device", "cpu"]) == 0  # no model flags
    assert "added 2 images" in capsys.readouterr().out
    assert main(["build-index", "--images", str(halves["all"]), "--out", str(tmp_path / "fresh"), "--dense",
                 *model_args]) == 0
    added, fresh = SparseIndex.load(out), SparseIndex.load(tmp_path / "fresh")
    assert sorted(item["id"] for item in added.items) == sorted(item["id"] for item in fresh.items)
    got, want = ranked(added, encoder), ranked(fresh, encoder)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    assert added.dense.shape == (6, 256)
    assert (out / added.items[-1]["image"]).resolve().parent == halves["new"].resolve()  # relative to the index


def test_add_refuses_duplicates_another_head_and_another_document_kind(model_args, halves, tmp_path, capsys,
                                                                       app_head_dir):
    out = tmp_path / "index"
    assert main(["build-index", "--images", str(halves["old"]), "--out", str(out), *model_args]) == 0
    manifest = (out / "manifest.json").read_bytes()
    capsys.readouterr()
    refusals = {
        "in the index already": ["--images", str(halves["old"]), *model_args],
        "was built with the head": ["--images", str(halves["new"]), *model_args[:2], "--head", str(app_head_dir),
                                    *model_args[4:]],
        "holds 'image' documents": ["--images", str(halves["new"]), "--doc", "caption", *model_args],
        "does not exist": ["--images", str(tmp_path / "missing"), *model_args],
    }
    for message, args in refusals.items():
        assert main(["add", "--index", str(out), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
        assert (out / "manifest.json").read_bytes() == manifest
    assert main(["add", "--index", str(out), "--images", str(halves["old"]), "--replace", *model_args]) == 0
    assert "(4 replaced): 4 items now" in capsys.readouterr().out


def test_remove_by_ids_and_ids_file_and_refusals(encoder, model_args, halves, tmp_path, capsys):
    out = tmp_path / "index"
    assert main(["build-index", "--images", str(halves["all"]), "--out", str(out), *model_args]) == 0
    ids = [item["id"] for item in SparseIndex.load(out).items]
    manifest = (out / "manifest.json").read_bytes()
    capsys.readouterr()
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    for args, message in ([["--ids", ids[0], "nope"], "not in the index"], [["--ids-file", str(tmp_path / "x")],
                          "does not exist"], [["--ids-file", str(tmp_path / "bad.txt")], "not UTF-8"]):
        assert main(["remove", "--index", str(out), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert (out / "manifest.json").read_bytes() == manifest
    assert main(["remove", "--index", "someone/gallery", "--ids", ids[0]]) == 2  # a Hub id: not changed in place
    assert "change a local index folder" in capsys.readouterr().err
    (tmp_path / "ids.txt").write_text(f"{ids[1]}\n\n{ids[4]}\n")
    assert main(["remove", "--index", str(out), "--ids", ids[0]]) == 0
    assert main(["remove", "--index", str(out), "--ids-file", str(tmp_path / "ids.txt")]) == 0
    rest = SparseIndex.load(out)
    assert [item["id"] for item in rest.items] == [ids[2], ids[3], ids[5]]
    assert set(ranked(rest, encoder)[0][0]) == {ids[2], ids[3], ids[5]}


def run_mlsr(args: list[str], kill_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.Popen([sys.executable, "-m", "mlsr", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def snapshot(folder):
    index = SparseIndex.load(folder)  # loads: every checksum verified
    return [item["id"] for item in index.items], index.vectors.toarray()


def test_sigkill_during_add_or_remove_leaves_the_old_or_the_new_index(model_args, halves, tmp_path):
    """Killed at the save's steps (kill points) and at random moments: always a loadable old or new index."""
    out = tmp_path / "index"
    assert main(["build-index", "--images", str(halves["old"]), "--out", str(out), *model_args]) == 0
    old = snapshot(out)
    shutil.copytree(out, tmp_path / "pristine")
    for step in ("folder-staged", "folder-swapped"):
        run_mlsr(["add", "--index", str(out), "--images", str(halves["new"]), *model_args], f"{step}:1").wait(300)
        ids_now, vectors_now = snapshot(out)
        if step == "folder-staged":  # the new folder was complete but not yet in place: the old index
            assert ids_now == old[0] and (vectors_now == old[1]).all()
        else:  # swapped: the new one
            assert len(ids_now) == 6 and (vectors_now[:4] == old[1]).all()
        shutil.rmtree(out)
        shutil.copytree(tmp_path / "pristine", out)
    ids = old[0]
    new = None
    rng = random.Random(0)
    for trial in range(6):
        process = run_mlsr(["remove", "--index", str(out), "--ids", ids[0]])
        time.sleep(rng.uniform(0.2, 2.5))  # import, load, rewrite: anywhere in a run of about a second or two
        process.send_signal(signal.SIGKILL)
        process.wait(60)
        now = snapshot(out)
        assert now[0] in (ids, ids[1:]), f"trial {trial}: a mix"
        if now[0] == ids[1:]:
            new = now
            shutil.rmtree(out)
            shutil.copytree(tmp_path / "pristine", out)
        else:
            assert (now[1] == old[1]).all()
    assert new is None or (new[1] == old[1][1:]).all()


def test_images_added_inside_the_indexed_folder_get_the_ids_a_build_of_it_would(model_args, halves, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(halves["old"], root)
    out = tmp_path / "index"
    assert main(["build-index", "--images", str(root), "--out", str(out), *model_args]) == 0
    shutil.copytree(halves["new"], root / "2026")  # a new subfolder of the indexed folder
    assert main(["add", "--index", str(out), "--images", str(root / "2026"), *model_args]) == 0
    assert main(["build-index", "--images", str(root), "--out", str(tmp_path / "fresh"), *model_args]) == 0
    added = [item["id"] for item in SparseIndex.load(out).items]
    assert sorted(added) == sorted(item["id"] for item in SparseIndex.load(tmp_path / "fresh").items)
    assert sum(name.startswith("2026/") for name in added) == 2
    assert main(["add", "--index", str(out), "--images", str(root / "2026"), *model_args]) == 2  # now held
