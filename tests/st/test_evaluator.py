"""sentence-transformers' SparseInformationRetrievalEvaluator and `mlsr evaluate` on the same queries and images.

Both rank by the dot product and break score ties alike once document ids sort as the index's rows do (mlsr: by
row; sentence-transformers: by corpus id). One difference: mlsr ranks only hits (a document sharing no term with
the query has no score, docs/evaluation.md), while the evaluator ranks every document, the zero-score ones by id.
With expanded queries every image is a hit and the metrics agree; with no_expand queries (a few terms each) they
agree once mlsr's rankings are padded with the zero-score documents in id order.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mlsr.cli import main
from mlsr.data.trec import read_qrels, read_run
from mlsr.evaluation.metrics import mean_metrics
from mlsr.index.sparse import SparseIndex
from tests.helpers.data import CAPTIONS

NAMES = ["bus.jpg", "dogs.png", "pasta.jpg", "boat.png", "more/cat.jpg", "kites.jpg"]  # write_image_folder's
QUERIES = [*CAPTIONS, "a dog on a sofa", "pasta on a boat"]
RELEVANT = [*NAMES, "dogs.png", "boat.png"]  # each caption's own image
K = [1, 3, 5]
MEASURES = [*(f"R@{k}" for k in K), "MRR@10"]


@pytest.fixture(scope="module")
def index(models, image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("st-eval") / "index"
    assert main(["build-index", "--images", str(image_folder), "--out", str(out), "--precision", "float32",
                 *models]) == 0
    return out


def mlsr_evaluate(index, models, mode, folder) -> dict:
    (folder / "queries.tsv").write_text("".join(f"q{i}\t{text}\n" for i, text in enumerate(QUERIES)))
    (folder / "qrels.trec").write_text("".join(f"q{i} 0 {name} 1\n" for i, name in enumerate(RELEVANT)))
    assert main(["evaluate", "--index", str(index), "--queries", str(folder / "queries.tsv"), "--qrels",
                 str(folder / "qrels.trec"), "--runs", mode, "--measures", ",".join(MEASURES), "--runs-dir",
                 str(folder / "runs"), *models]) == 0
    return json.loads((folder / "runs" / "metrics.json").read_text())["runs"][0]["metrics"]


def st_evaluate(encoder, mode, index, image_folder) -> dict:
    from sentence_transformers.sparse_encoder.evaluation import SparseInformationRetrievalEvaluator

    evaluator = SparseInformationRetrievalEvaluator(
        queries={f"q{i}": text for i, text in enumerate(QUERIES)},
        corpus={name: Image.open(image_folder / name) for name in NAMES},
        relevant_docs={f"q{i}": {name} for i, name in enumerate(RELEVANT)}, precision_recall_at_k=K,
        accuracy_at_k=K, mrr_at_k=[10], ndcg_at_k=[10], map_at_k=[10], batch_size=64, write_csv=False)
    found = evaluator(encoder.to_sparse_encoder(query_mode=mode))
    return {**{f"R@{k}": found[f"dot_recall@{k}"] for k in K}, "MRR@10": found["dot_mrr@10"],
            "query_active_dims": found["query_active_dims"]}


@pytest.mark.parametrize("mode", ["expand", "no_expand"])
def test_the_evaluator_gives_mlsr_evaluates_recall_and_mrr(mode, index, models, image_folder, wide_encoder,
                                                           tmp_path):
    ids = [str(item["id"]) for item in SparseIndex.load(index).items]
    assert ids == sorted(ids) and sorted(ids) == sorted(NAMES)  # ties: rows and ids in the same order
    ours = mlsr_evaluate(index, models, mode, tmp_path)
    theirs = st_evaluate(wide_encoder, mode, index, image_folder)
    rankings = read_run(tmp_path / "runs" / f"{mode}.trec")
    hits_only = sum(len(rankings.get(f"q{i}", ())) < len(ids) for i in range(len(QUERIES)))
    padded = {f"q{i}": [*rankings.get(f"q{i}", ()), *(d for d in ids if d not in rankings.get(f"q{i}", ()))]
              for i in range(len(QUERIES))}
    same_as_padded = mean_metrics(padded, read_qrels(tmp_path / "qrels.trec"), MEASURES)
    for measure in MEASURES:
        assert theirs[measure] == pytest.approx(same_as_padded[measure], abs=1e-6), measure
        if mode == "expand":  # every image shares terms with every query: nothing to pad
            assert theirs[measure] == pytest.approx(ours[measure], abs=1e-6), measure
    assert hits_only == 0 if mode == "expand" else hits_only > 0  # the fixture has both cases
    assert 0 < ours["MRR@10"] < 1  # neither all right nor all wrong: the comparison can fail
    if mode == "no_expand":  # the evaluator credits zero-score documents that land in the top k by id
        assert any(theirs[m] > ours[m] + 1e-6 for m in MEASURES)
