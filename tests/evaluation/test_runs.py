"""`python -m mlsr evaluate` end to end: published-vector queries, text queries, the mscoco-test recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.datasets import CAPTIONS_PER_IMAGE, PLANTED_CORRECT, TEST_IMAGES, write_dense_dataset
from tests.helpers.trec import trec_eval
from mlsr.cli import main
from mlsr.models.encoder import Encoder
from mlsr.index.sparse import SparseIndex
from mlsr.data.trec import read_qrels

MEASURES = "R@1,R@5,R@10,MRR@10,NDCG@5,NDCG@10,NDCG@100,MAP@5,MAP@10,MAP@100"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dense_dataset(tmp_path_factory.mktemp("mscoco-blip-dense"), "mscoco")


@pytest.fixture(scope="module")
def models(head_dir, tokenizer_dir):
    return ["--head", str(head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu"]


@pytest.fixture(scope="module")
def imported(dataset, models, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "mscoco-test"
    assert main(["import-dense", "--dataset", str(dataset), "--out", str(out), *models]) == 0
    return out


def test_published_vectors_evaluation_matches_trec_eval_and_the_planted_answer(
        imported, dataset, models, head_dir, tokenizer_dir, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    assert main(["evaluate", "--index", str(imported), "--dataset", str(dataset), "--split", "test",
                 "--measures", MEASURES, "--runs-dir", str(runs_dir), *models]) == 0
    table = capsys.readouterr().out
    assert "sparse expand" in table and "dense (FAISS)" in table and "FLOPs" in table
    result = json.loads((runs_dir / "metrics.json").read_text())
    assert result["queries"] == TEST_IMAGES * CAPTIONS_PER_IMAGE and result["documents"] == TEST_IMAGES
    by_run = {run["run"]: run for run in result["runs"]}
    assert set(by_run) == {"expand", "no_expand", "hybrid@10", "hybrid", "dense"}
    assert by_run["hybrid@10"]["depth"] == 10 and by_run["hybrid"]["depth"] == 1000
    # planted: 3 of 5 captions carry exactly their image's vector, 2 the next image's
    assert by_run["dense"]["metrics"]["R@1"] == pytest.approx(PLANTED_CORRECT / CAPTIONS_PER_IMAGE)
    for run, values in by_run.items():
        reference = trec_eval(runs_dir / f"{run}.trec", read_qrels(runs_dir / "qrels.trec"), MEASURES.split(","))
        for measure, value in reference.items():
            assert values["metrics"][measure] == pytest.approx(value, abs=1e-9), (run, measure)
    # FLOPs from their definition: shared terms per query-document pair, averaged over all pairs
    index = SparseIndex.load(imported)
    encoder = Encoder.head_only(str(head_dir), str(tokenizer_dir), device="cpu")
    from mlsr.evaluation.queries import dataset_queries

    queries, _ = dataset_queries(encoder, dataset, "test")
    shared = ((queries.vectors.expand != 0).astype(np.float32) @ (index.vectors != 0).astype(np.float32).T).toarray()
    assert by_run["expand"]["flops"] == pytest.approx(shared.mean(), rel=1e-6)
    assert by_run["expand"]["query_terms"] == pytest.approx(queries.vectors.expand.getnnz(axis=1).mean())
    assert by_run["no_expand"]["query_terms"] < by_run["expand"]["query_terms"]
    assert by_run["expand"]["doc_terms"] == pytest.approx(index.vectors.getnnz(axis=1).mean())


def test_recipe_prints_the_published_numbers_over_a_float32_index(dataset, models, imported, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLSR_DATASET", str(dataset))  # in place of lsr42/mscoco-blip-dense
    assert main(["evaluate", "--recipe", "mscoco-test", "--runs", "expand,dense", "--measures", "R@1,R@5,R@10",
                 *models]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert not (tmp_path / "index").exists()  # the split's images are indexed in memory, in float32
    assert "note:" not in captured.err
    published = {line.split("  ")[0]: line.split() for line in out.splitlines() if "(published)" in line}
    assert published["D2S-BLIP sparse (published)"][3] == "55.9"
    assert published["BLIP dense (published)"][3] == "57.0"
    dense_row = next(line for line in out.splitlines() if line.startswith("dense (FAISS)"))
    assert dense_row.split()[2] == "60.0"  # the planted R@1, in %
    assert (tmp_path / "runs" / "mscoco-test" / "expand.trec").is_file()
    # the same queries against the imported (float16) index: exact over its rounded weights, and it says so
    assert main(["evaluate", "--recipe", "mscoco-test", "--index", str(imported), "--runs", "expand",
                 "--measures", "R@1", *models]) == 0
    assert "stores float16 weights" in capsys.readouterr().err


def test_precision_is_a_choice_of_build_index_import_dense_and_prepare(dataset, models, image_folder, backbone_dir,
                                                                     tmp_path, capsys):
    assert main(["import-dense", "--dataset", str(dataset), "--out", str(tmp_path / "f32"), "--precision", "float32",
                 *models]) == 0
    assert SparseIndex.load(tmp_path / "f32").precision == "float32"
    assert main(["prepare", "--index", str(tmp_path / "p32"), "--dataset", str(dataset), "--precision", "float32",
                 *models]) == 0
    assert SparseIndex.load(tmp_path / "p32").precision == "float32"
    assert main(["build-index", "--images", str(image_folder), "--out", str(tmp_path / "b32"), "--precision",
                 "float32", "--backbone", str(backbone_dir), *models]) == 0
    assert SparseIndex.load(tmp_path / "b32").precision == "float32"
    assert main(["build-index", "--images", str(image_folder), "--out", str(tmp_path / "b16"),
                 "--backbone", str(backbone_dir), *models]) == 0
    assert SparseIndex.load(tmp_path / "b16").precision == "float16"  # the default
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["import-dense", "--dataset", str(dataset), "--out", str(tmp_path / "x"), "--precision", "float64"])
    assert "invalid choice: 'float64'" in capsys.readouterr().err


def test_text_queries_with_trec_qrels(backbone_dir, head_dir, tokenizer_dir, image_folder, tmp_path, capsys):
    from mlsr.data.captions import read_captions
    from mlsr.ingest.images import build_index

    encoder = Encoder.from_pretrained(str(backbone_dir), str(head_dir), str(tokenizer_dir), device="cpu", batch_size=4)
    build_index(encoder, image_folder, out=tmp_path / "index", dense=True, documents="image+caption",
                captions=read_captions(image_folder / "captions.csv"))
    (tmp_path / "queries.tsv").write_text("q1\ta red bus on a street\nq2\ta cat on a sofa\n")
    (tmp_path / "qrels.trec").write_text("q1 0 bus.jpg 1\nq2 0 more/cat.jpg 1\nq2 0 dogs.png 0\n")
    args = ["evaluate", "--index", str(tmp_path / "index"), "--queries", str(tmp_path / "queries.tsv"),
            "--qrels", str(tmp_path / "qrels.trec"), "--measures", "R@1,R@5,MRR@10,NDCG@5,MAP@5",
            "--runs-dir", str(tmp_path / "runs"), "--backbone", str(backbone_dir), "--head", str(head_dir),
            "--tokenizer", str(tokenizer_dir), "--device", "cpu", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["queries"] == 2 and result["documents"] == 6
    for run in result["runs"]:
        reference = trec_eval(tmp_path / "runs" / f"{run['run']}.trec", read_qrels(tmp_path / "qrels.trec"),
                              ["R@1", "R@5", "MRR@10", "NDCG@5", "MAP@5"])
        assert run["metrics"] == pytest.approx(reference, abs=1e-9)
        # 6 documents: a judged one that shares a term with the query is in the top 10 (where depends on the
        # random models); a dense run ranks all 6
        if run["run"] == "dense":
            assert run["metrics"]["MRR@10"] >= 1 / 6


def test_bad_evaluate_arguments_are_one_line_errors(imported, dataset, models, tmp_path, capsys):
    assert main(["evaluate", "--queries", str(tmp_path / "q.tsv"), "--qrels", str(tmp_path / "q.trec"), *models]) == 2
    assert "--index DIR" in capsys.readouterr().err
    assert main(["evaluate", "--index", str(imported), *models]) == 2
    assert "either as --dataset" in capsys.readouterr().err
    assert main(["evaluate", "--index", str(imported), "--dataset", str(dataset), "--measures", "P@5", *models]) == 2
    assert "unknown measure 'P@5'" in capsys.readouterr().err
    (tmp_path / "qrels.trec").write_text("1 0 not-an-image 1\n")
    assert main(["evaluate", "--index", str(imported), "--dataset", str(dataset), "--qrels",
                 str(tmp_path / "qrels.trec"), *models]) == 2
    assert "no judged document is in the index" in capsys.readouterr().err


@pytest.mark.hub
def test_mscoco_recipe_reproduces_the_published_r1(tmp_path, monkeypatch, capsys):
    """With the Hub: the published D2S head on the published MS-COCO vectors gives R@1 55.9 +- 1.0 (ECIR 2024)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLSR_DATASET", raising=False)
    assert main(["evaluate", "--recipe", "mscoco-test", "--runs", "expand,dense", "--measures", "R@1,R@5,R@10",
                 "--json"]) == 0
    runs = {run["run"]: run for run in json.loads(capsys.readouterr().out)["runs"]}
    assert abs(100 * runs["expand"]["metrics"]["R@1"] - 55.9) <= 1.0
    assert abs(100 * runs["dense"]["metrics"]["R@1"] - 57.0) <= 1.0
