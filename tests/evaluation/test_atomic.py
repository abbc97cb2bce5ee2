"""The AToMiC recipe end to end on shards in the published layout, with a planted answer."""

from __future__ import annotations

import json

import pytest
import pytrec_eval

from tests.helpers.datasets import ATOMIC_QUERIES, DISTRACTOR_CAPTIONS, write_atomic
from mlsr.data.atomic_trec import load_collection, _parquet_shards
from mlsr.cli import main
from mlsr.data.trec import read_qrels, read_run


@pytest.fixture(scope="module")
def atomic(tmp_path_factory):
    return write_atomic(tmp_path_factory.mktemp("atomic"))


def test_collection_takes_validation_queries_their_images_and_distractors(atomic):
    texts, images, qrels = atomic
    collection = load_collection(texts=texts, images=images, qrels=qrels, limit=2, distractors=4, seed=0)
    assert collection.query_ids == ["t-001", "t-002"]  # judged validation queries, by id; t-777 is train
    assert collection.queries[0] == "Water buffalo Farming Farmers lead a buffalo through rice paddies."
    assert collection.qrels["t-001"] == {"img-000": 1, "img-005": 0}
    assert {"img-000", "img-001"} <= set(collection.image_ids)  # the relevant images, from both shards
    distractors = [i for i in collection.image_ids if i not in ("img-000", "img-001")]
    assert 1 <= len(distractors) <= 4 and collection.missing_images == 0  # sampled (p = 1/2), at most 4
    caption = dict(zip(collection.image_ids, collection.captions))
    assert caption["img-000"] == ATOMIC_QUERIES[0][4]
    assert all(data[:4] == b"RIFF" for data in collection.image_bytes)  # WebP bytes out of the image struct
    assert [p.name for p in _parquet_shards(texts, "validation")] == ["validation-00000-of-00001-abc.parquet"]


def test_limit_bounds_the_image_shards_read(atomic):
    texts, images, qrels = atomic
    collection = load_collection(texts=texts, images=images, qrels=qrels, limit=1, distractors=0)
    assert collection.image_ids == ["img-000"] and collection.shards_read == 1  # found in the first shard


def test_atomic_recipe_end_to_end(atomic, backbone_dir, app_head_dir, tokenizer_dir, tmp_path, capsys):
    texts, images, qrels = atomic
    runs_dir = tmp_path / "runs"
    args = ["atomic", "--texts", str(texts), "--images", str(images), "--qrels", str(qrels), "--limit", "3",
            "--distractors", str(len(DISTRACTOR_CAPTIONS)), "--distractor-rate", "1", "--runs-dir", str(runs_dir), "--backbone",
            str(backbone_dir), "--head", str(app_head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for title in ("Table 2: NDCG@k", "Table 3: MAP@k", "Table 4: R@k", "T -> I (image)", "T -> T (caption)",
                  "T -> T+I (image+caption)", "NDCG@500", "R@1000"):
        assert title in out
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"image", "caption", "image+caption"}
    judged = read_qrels(runs_dir / "qrels.trec")
    for doc, evaluation in result.items():
        assert evaluation["queries"] == 3 and evaluation["documents"] == 3 + len(DISTRACTOR_CAPTIONS)
        for run in evaluation["runs"]:
            ranked = read_run(runs_dir / f"{doc.replace('+', '_')}-{run['run']}.trec")
            scored = {q: {d: float(len(ds) - j) for j, d in enumerate(ds)} for q, ds in ranked.items()}
            reference = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.5,10", "map_cut.10", "recall.20"}).evaluate(scored)
            for ours, theirs in (("NDCG@5", "ndcg_cut_5"), ("NDCG@10", "ndcg_cut_10"), ("MAP@10", "map_cut_10"),
                                 ("R@20", "recall_20")):
                expected = sum(reference[q][theirs] for q in judged) / len(judged)
                assert run["metrics"][ours] == pytest.approx(expected, abs=1e-9), (doc, run["run"], ours)
    # planted: each query shares a word that the head lights up with its image's caption, and no distractor does
    caption_no_expand = next(r for r in result["caption"]["runs"] if r["run"] == "no_expand")
    assert caption_no_expand["metrics"]["NDCG@5"] == 1.0 and caption_no_expand["metrics"]["MAP@10"] == 1.0


def test_atomic_offline_hub_ids_fail_with_one_line(monkeypatch, capsys, backbone_dir, head_dir, tokenizer_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert main(["atomic", "--limit", "2", "--backbone", str(backbone_dir), "--head", str(head_dir),
                 "--tokenizer", str(tokenizer_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset 'TREC-AToMiC/AToMiC-Qrels-v0.2'") and err.count("\n") == 1


def test_image_bytes_are_read_only_for_row_groups_with_a_wanted_image(atomic, tmp_path, monkeypatch):
    import shutil

    import pyarrow.parquet as pq

    texts, images, qrels = atomic
    table = pq.read_table(next(iter(sorted((images / "data").glob("*.parquet")))))
    (tmp_path / "images" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "images" / "data" / "train-00000-of-00001.parquet", row_group_size=1)
    shutil.copytree(qrels, tmp_path / "qrels")
    reads = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, columns=None, **kw: reads.append((i, tuple(columns or ()))) or
                        original(self, i, columns=columns, **kw))
    collection = load_collection(texts=texts, images=tmp_path / "images", qrels=tmp_path / "qrels", limit=1,
                                 distractors=0)
    assert collection.image_ids == ["img-000"]
    image_reads = [i for i, columns in reads if "image" in columns]
    assert image_reads == [table.column("image_id").to_pylist().index("img-000")]
    assert len([1 for _, columns in reads if columns == ("image_id",)]) == table.num_rows


def test_image_plus_caption_run_equals_an_independent_computation(atomic, app_encoder, tmp_path, monkeypatch):
    """The seed's headline run, recomputed from vectors encoded here and never handed to mlsr's index code."""
    import numpy as np

    from mlsr.evaluation.atomic_task import MEASURES, run_atomic
    from mlsr.evaluation.metrics import mean_metrics
    from mlsr.index.sparse import SparseIndex
    from tests.helpers.matrices import exact_ranking, exact_scores, stored

    texts, images, qrels = atomic
    collection = load_collection(texts=texts, images=images, qrels=qrels, limit=3,
                                 distractors=len(DISTRACTOR_CAPTIONS), distractor_rate=1)
    built = []
    build = SparseIndex.build.__func__
    monkeypatch.setattr(SparseIndex, "build", classmethod(lambda cls, *a, **kw: built.append(build(cls, *a, **kw))
                                                            or built[-1]))
    report = run_atomic(app_encoder, collection, runs_dir=tmp_path / "runs")

    image = app_encoder.encode_images(collection.image_bytes).toarray()
    with_caption = [i for i, c in enumerate(collection.captions) if c.strip()]
    caption = np.zeros_like(image)
    caption[with_caption] = app_encoder.encode_captions(
        [collection.captions[i][:app_encoder.max_chars] for i in with_caption]).toarray()
    both = image + caption
    index = built[[doc for doc in report.evaluations].index("image+caption")]
    weights = stored(both, index.precision)
    np.testing.assert_array_equal(index.vectors.toarray(), weights)
    queries = app_encoder.encode_text_views(collection.queries)
    depth = min(max(int(m.split("@")[1]) for m in MEASURES), len(collection.image_ids))
    for result in report.evaluations["image+caption"].results:
        _, rows = exact_ranking(exact_scores(queries.scoring(result.run).toarray(), weights), depth)
        rankings = {q: [collection.image_ids[r] for r in rows[i]] for i, q in enumerate(collection.query_ids)}
        assert read_run(tmp_path / "runs" / f"image_caption-{result.run}.trec") == rankings
        assert result.metrics == pytest.approx(mean_metrics(rankings, collection.qrels, MEASURES), abs=1e-12)
