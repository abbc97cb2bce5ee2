"""Index builds survive interruption: the old index stays intact and a re-run resumes to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import mlsr.ingest.images
from tests.helpers.data import ROOT, make_image
from mlsr._files import KILL_AT_ENV
from mlsr.ingest.images import build_index
from mlsr.index.sparse import SparseIndex


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    for i in range(24):
        make_image(100 + i).save(folder / f"img{i:02d}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return folder


def assert_same_index(a: SparseIndex, b: SparseIndex):
    assert a.items == b.items
    assert (a.vectors != b.vectors).nnz == 0
    np.testing.assert_array_equal(a.dense, b.dense)


def test_a_failed_build_keeps_the_old_index_and_resumes(encoder, many_images, image_folder, tmp_path, monkeypatch):
    out = tmp_path / "index"
    old, _ = build_index(encoder, image_folder, out=out)
    reference, _ = build_index(encoder, many_images, out=tmp_path / "reference", dense=True)

    real_encode = mlsr.ingest.images._encode_batch
    calls = []

    def failing_encode(*args, **kwargs):
        if len(calls) == 3:
            raise RuntimeError("power cut")
        calls.append(1)
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(mlsr.ingest.images, "_encode_batch", failing_encode)
    with pytest.raises(RuntimeError, match="power cut"):
        build_index(encoder, many_images, out=out, dense=True, overwrite=True)
    assert_same_index(SparseIndex.load(out), old)  # the previous index is untouched
    assert len(list((tmp_path / ".index.partial").glob("batch-*.json"))) == 3

    monkeypatch.setattr(mlsr.ingest.images, "_encode_batch", real_encode)
    resumed, report = build_index(encoder, many_images, out=out, dense=True, overwrite=True)
    assert report.resumed == 3 and [name for name, _ in report.skipped] == ["broken.jpg"]
    assert_same_index(resumed, reference)
    assert_same_index(SparseIndex.load(out), reference)
    assert not (tmp_path / ".index.partial").exists()


def test_changed_inputs_do_not_reuse_stale_batches(encoder, many_images, tmp_path, monkeypatch):
    out = tmp_path / "index"
    real_encode = mlsr.ingest.images._encode_batch
    calls = []

    def failing_encode(*args, **kwargs):
        if len(calls) == 2:
            raise RuntimeError("stop")
        calls.append(1)
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(mlsr.ingest.images, "_encode_batch", failing_encode)
    with pytest.raises(RuntimeError):
        build_index(encoder, many_images, out=out)
    monkeypatch.setattr(mlsr.ingest.images, "_encode_batch", real_encode)
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in sorted(many_images.glob("*.png"))[:6]:
        (changed / path.name).write_bytes(path.read_bytes())
    os.utime(changed / "img00.png", ns=(0, 0))  # same names, another file
    _, report = build_index(encoder, changed, out=out)
    assert report.resumed == 0


def run_build(args: list[str], kill_at: str | None = None) -> int:
    """`mlsr build-index ARGS` in a subprocess; with `kill_at` ("STEP:N"), it SIGKILLs itself at that step."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "mlsr", "build-index", *args], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300).returncode


def test_sigkill_at_random_points(encoder, backbone_dir, head_dir, tokenizer_dir, many_images, image_folder, tmp_path):
    """Killed at fixed points (mlsr._files.kill_point), not after a sleep: each cut leaves a loadable index.

    (The points were once random fractions of a measured run; a kill landing after the swap failed the test.)
    """
    models = ["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir),
              "--device", "cpu", "--batch-size", "2", "--dense"]
    out = tmp_path / "index"
    build_index(encoder, image_folder, out=out)
    old_manifest = (out / "manifest.json").read_bytes()
    # The reference is what the command builds uninterrupted, in its own process: the command sets torch's threads
    # and the allocator (mlsr.threads, mlsr.allocator), and another setting in this process can move a float by an
    # ulp and so a uint8 weight by one step (seen in the full suite: 29 of 7,203 weights).
    reference = tmp_path / "reference"
    assert run_build(["--images", str(many_images), "--out", str(reference), *models]) == 0
    build = ["--images", str(many_images), "--out", str(out), "--overwrite", *models]
    partial = tmp_path / ".index.partial"
    # 25 files in batches of 2: 13 batches. Killed after the 3rd kept batch, then (resuming from them) with every
    # batch done and the new folder staged beside the old one: the old index stays intact.
    for kill_at, batches_kept in (("batch-saved:3", 3), ("folder-staged:1", 13)):
        assert run_build(build, kill_at) == -signal.SIGKILL, kill_at  # the hook fired: the kill came at that step
        assert (out / "manifest.json").read_bytes() == old_manifest, kill_at
        SparseIndex.load(out)  # ... and still passes every checksum
        assert len(list(partial.glob("batch-*.json"))) == batches_kept, kill_at
    # Killed just after the swap: the new index is in place, only the finished batches and the old folder remain.
    assert run_build(build, "folder-swapped:1") == -signal.SIGKILL
    assert_same_index(SparseIndex.load(out), SparseIndex.load(reference))
    assert partial.is_dir() and any(p.name.startswith(".index.tmp-") for p in tmp_path.iterdir())
    # A re-run finishes from the kept batches and clears everything the killed runs left.
    assert run_build(build) == 0
    assert_same_index(SparseIndex.load(out), SparseIndex.load(reference))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 24 and manifest["build"]["skipped"] == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
