"""Index builds survive interruption: the old index stays intact and a re-run resumes to the same result."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import mlsr.ingest.images
from tests.helpers.data import ROOT, make_image
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
        build_index(encoder, many_images, out=out, dense=True)
    assert_same_index(SparseIndex.load(out), old)  # the previous index is untouched
    assert len(list((tmp_path / ".index.partial").glob("batch-*.json"))) == 3

    monkeypatch.setattr(mlsr.ingest.images, "_encode_batch", real_encode)
    resumed, report = build_index(encoder, many_images, out=out, dense=True)
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


def run_build(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "mlsr", "build-index", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_sigkill_at_random_points(backbone_dir, head_dir, tokenizer_dir, many_images, image_folder, tmp_path):
    models = ["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir),
              "--device", "cpu", "--batch-size", "2", "--dense"]
    out = tmp_path / "index"
    assert run_build(["--images", str(image_folder), "--out", str(out), *models]).wait(timeout=300) == 0
    old_manifest = (out / "manifest.json").read_bytes()
    reference = tmp_path / "reference"
    started = time.perf_counter()
    assert run_build(["--images", str(many_images), "--out", str(reference), *models]).wait(timeout=300) == 0
    full_run = time.perf_counter() - started

    rng = random.Random(7)
    finished = False
    for _ in range(3):
        process = run_build(["--images", str(many_images), "--out", str(out), *models])
        time.sleep(rng.uniform(0.3, 0.9) * full_run)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            assert (out / "manifest.json").read_bytes() == old_manifest  # killed: the old index is intact
            SparseIndex.load(out)  # ... and still passes every checksum
        else:
            finished = process.returncode == 0
            break
    if not finished:
        assert run_build(["--images", str(many_images), "--out", str(out), *models]).wait(timeout=300) == 0
    assert_same_index(SparseIndex.load(out), SparseIndex.load(reference))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 24 and manifest["build"]["skipped"] == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
