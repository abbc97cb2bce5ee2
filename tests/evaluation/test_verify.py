"""`mlsr verify` offline: a dataset in the published layout whose vectors the tiny models made themselves passes
every check; perturbed vectors fail the checks they should, with a non-zero exit; the About screen shows the
saved verdict. With the Hub, the real thing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mlsr.cli import main
from mlsr.evaluation.verify import EXAMPLE_TERMS, load_verdict, verify
from mlsr.models.head import SparseHead
from tests.helpers.data import REAL_IMAGES
from tests.helpers.datasets import EXAMPLE_FILE, write_verify_dataset
from tests.helpers.models import save_example_head


@pytest.fixture(scope="module")
def published(encoder, tmp_path_factory):
    return write_verify_dataset(tmp_path_factory.mktemp("published") / "mscoco-blip-dense", encoder)


@pytest.fixture(scope="module")
def example_head(encoder, tokenizer_dir, tmp_path_factory):
    """Stands in for the published head: image id 2's vector decodes to the reference README's top terms."""
    vector = encoder.encode_images_with_dense([REAL_IMAGES / EXAMPLE_FILE])[1][0]
    return save_example_head(tmp_path_factory.mktemp("example-head"), vector, EXAMPLE_TERMS, tokenizer_dir)


@pytest.fixture(scope="module")
def expected_r1(published, example_head):
    """R@1 (%) of the head on the fixture's test split, computed here from the parquet files with torch alone."""
    head = SparseHead.from_pretrained(example_head)
    images = {str(i): v for i, v in zip(*pq.read_table(published / "img_embs.parquet").to_pydict().values())}
    texts = {str(i): v for i, v in zip(*pq.read_table(published / "text_embs.parquet").to_pydict().values())}
    meta = json.loads((published / "dataset_meta.json").read_text())
    image_ids = [str(image["imgid"]) for image in meta["images"]]
    pairs = [(str(s["sentid"]), image_ids.index(str(image["imgid"]))) for image in meta["images"]
             for s in image["sentences"]]
    with torch.no_grad():
        documents = head(torch.tensor(np.array([images[i] for i in image_ids], dtype=np.float32)))
        queries = head(torch.tensor(np.array([texts[sid] for sid, _ in pairs], dtype=np.float32)))
    best = (queries @ documents.T).argmax(dim=1).tolist()
    return 100 * float(np.mean([b == own for b, (_, own) in zip(best, pairs)]))


@pytest.fixture
def verify_args(backbone_dir, example_head, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLSR_INDEX", str(tmp_path / "index" / "gallery"))  # the verdict goes to index/verify.json
    return ["verify", "--backbone", str(backbone_dir), "--head", str(example_head), "--tokenizer", str(tokenizer_dir),
            "--device", "cpu"]


def perturbed(published, folder, *, texts: bool = False, photos: bool = False):
    """A copy of the fixture with noisy caption vectors and/or the asset photos' vectors replaced by random ones."""
    shutil.copytree(published, folder)
    rng = np.random.default_rng(0)
    for file, change in (("text_embs.parquet", texts), ("img_embs.parquet", photos)):
        if not change:
            continue
        table = pq.read_table(folder / file).to_pydict()
        vectors = np.array(table["emb"], dtype=np.float32)
        rows = range(len(vectors)) if file == "text_embs.parquet" else [1, 2, 3]  # the three COCO photos
        for row in rows:
            noisy = vectors[row] + (0.05 if file == "text_embs.parquet" else 10.0) * rng.normal(size=vectors.shape[1])
            vectors[row] = noisy / np.linalg.norm(noisy)
        emb = pa.array([row.tolist() for row in vectors], type=pa.list_(pa.float32()))
        pq.write_table(pa.table({"id": pa.array(table["id"]), "emb": emb}), folder / file)
    return folder


def lines(out: str) -> dict[str, str]:
    """The check lines by number: '1' -> 'PASS ...'."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in "1234" and ("PASS" in parts or "FAIL" in parts):
            found[parts[0]] = "PASS" if "PASS" in parts else "FAIL"
    return found


def test_every_check_passes_when_the_models_made_the_vectors(published, verify_args, expected_r1, tmp_path, capsys):
    assert main([*verify_args, "--dataset", str(published), "--captions", "12",
                 "--expect-r1", f"{expected_r1:.4f}"]) == 0
    out = capsys.readouterr().out
    assert lines(out) == {"1": "PASS", "2": "PASS", "3": "PASS", "4": "PASS"}
    assert "over 12 test captions" in out and "over 3 photos" in out and "verdict: PASS (4 of 4" in out
    verdict = load_verdict(tmp_path / "index" / "verify.json")
    assert verdict.passed and [c.name for c in verdict.checks] == ["text", "image", "example", "retrieval"]
    assert verdict.checks[0].value == pytest.approx(1.0, abs=1e-4)  # cosines of the same model's own vectors
    assert verdict.checks[2].value == 10  # all ten of the reference's terms
    assert verdict.checks[3].value == pytest.approx(expected_r1, abs=0.01)


def test_perturbed_vectors_fail_the_checks_they_touch(published, verify_args, tmp_path, capsys):
    only = ["--only", "text,image,example"]
    noisy_texts = perturbed(published, tmp_path / "texts", texts=True)
    assert main([*verify_args, "--dataset", str(noisy_texts), *only]) == 1
    assert lines(capsys.readouterr().out) == {"1": "FAIL", "2": "PASS", "3": "PASS"}
    other_photos = perturbed(published, tmp_path / "photos", photos=True)
    assert main([*verify_args, "--dataset", str(other_photos), *only, "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert [c["passed"] for c in verdict["checks"]] == [True, False, False] and verdict["passed"] is False
    assert not load_verdict(tmp_path / "index" / "verify.json").passed  # the last verdict is the one saved


def test_retrieval_fails_away_from_the_expected_r1(published, verify_args, expected_r1, capsys):
    assert main([*verify_args, "--dataset", str(published), "--only", "retrieval",
                 "--expect-r1", f"{min(expected_r1 + 5, 100) if expected_r1 < 95 else expected_r1 - 5:.1f}"]) == 1
    out = capsys.readouterr().out
    assert lines(out) == {"4": "FAIL"} and "needs" in out
    assert main([*verify_args, "--dataset", str(published), "--only", "example"]) == 0  # no backbone needed
    assert lines(capsys.readouterr().out) == {"3": "PASS"}


def test_bad_settings_are_one_line_errors_before_any_loading(published, verify_args, capsys):
    assert main([*verify_args, "--dataset", str(published), "--only", "text,speed"]) == 2
    assert "the checks to run (only) must be a comma-separated subset" in capsys.readouterr().err
    assert main([*verify_args, "--dataset", str(published), "--only", "retrieval"]) == 2  # not the published head
    assert "--expect-r1" in capsys.readouterr().err
    assert main([*verify_args, "--dataset", str(published), "--captions", "0", "--only", "text"]) == 2
    assert "captions must be a whole number" in capsys.readouterr().err


def test_a_dataset_without_the_photos_or_the_example_fails_those_checks(encoder, example_head, tokenizer_dir,
                                                                          published, tmp_path):
    meta = json.loads((published / "dataset_meta.json").read_text())
    shutil.copytree(published, tmp_path / "renamed")
    for image in meta["images"]:
        image["filename"] = f"other-{image['imgid']}.jpg"
    (tmp_path / "renamed" / "dataset_meta.json").write_text(json.dumps(meta))
    verdict = verify(backbone=str(encoder.backbone.source), head=str(example_head), tokenizer=str(tokenizer_dir),
                     dataset=tmp_path / "renamed", only=["image"], device="cpu")
    assert not verdict.passed and "none of the 3 photos" in verdict.checks[0].summary


def test_the_about_screen_shows_the_saved_verdict(app_encoder, app_index, tmp_path):
    from mlsr.serving.service import Service
    from mlsr.app.ui import _about_markdown
    from mlsr.evaluation.verify import CheckResult, Verdict, save_verdict, verdict_path
    from mlsr.index.sparse import SparseIndex

    index_dir = tmp_path / "index" / "gallery"
    shutil.copytree(app_index, index_dir)
    service = Service(app_encoder, SparseIndex.load(index_dir), index_dir)
    assert service.about()["verification"] is None and "Reproduction check" not in _about_markdown(service.about())
    verdict = Verdict([CheckResult(1, "text", True, 0.9991, "..."), CheckResult(3, "example", False, 6.0, "...")],
                      dict(service.loaded_sources()),  # as verify saves them: the names the models were given by
                      "lsr42/mscoco-blip-dense", "2026-01-02 03:04 UTC")
    save_verdict(verdict, verdict_path(index_dir))
    shown = _about_markdown(service.about())
    assert "Reproduction check" in shown and "**FAIL**" in shown and "2026-01-02 03:04 UTC" in shown
    assert "1 text agreement PASS (0.9991)" in shown and "3 published example FAIL (6)" in shown
    assert "other models" not in shown
    (tmp_path / "index" / "verify.json").write_text("{not json")  # a damaged file is ignored, never an error
    assert service.about()["verification"] is None


@pytest.mark.hub
def test_the_published_models_pass_verify(tmp_path, monkeypatch, capsys):
    """With the Hub: the default backbone, head and dataset reproduce the published vectors and R@1."""
    monkeypatch.setenv("MLSR_INDEX", str(tmp_path / "index" / "mscoco-test"))
    code = main(["verify"])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out


def test_the_int8_check_runs_only_when_asked_and_reports_its_agreement(published, verify_args, capsys):
    """`--only int8`: the 8-bit text path against float32 on the test captions (a number and a verdict either way:
    tiny random models need not agree to the real models' bar); the default checks never run it."""
    code = main([*verify_args, "--dataset", str(published), "--only", "int8", "--captions", "12", "--json"])
    verdict = json.loads(capsys.readouterr().out)
    (check,) = verdict["checks"]
    assert check["number"] == 5 and check["name"] == "int8" and 0.5 < check["value"] <= 1.0
    assert code == (0 if check["passed"] else 1)
