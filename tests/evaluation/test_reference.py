"""`evaluate` reproduces the reference computation (thongnt99/lsr-multimodal), re-implemented here from its
description, on captions full of the punctuation that BLIP's cleaning drops:

- queries: the head on the published caption vectors; no_expand keeps the ids of `tokenizer.tokenize(raw)`
  (retrieve.py), hybrid re-scores the top 10 no_expand candidates by the expanded query (retrieve.py, as
  intended: its own code writes the new scores to a copy);
- documents: the head on the published image vectors, scored in float32 (`text @ image.T`, train.py);
- metrics: R@k and MRR@10 as ir_measures computes them on a depth-10 run, FLOPs = sum over terms of
  (documents with the term) x (queries with the term) / (queries x documents) (train.py `evaluate`).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mlsr.cli import main
from mlsr.models.head import SparseHead
from mlsr.models.tokenizer import load_tokenizer
from mlsr.text import clean_caption
from tests.helpers.datasets import PUNCTUATED_WORDS, write_punctuated_dataset
from tests.helpers.models import make_head

MEASURES = ("R@1", "R@5", "R@10", "MRR@10")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_punctuated_dataset(tmp_path_factory.mktemp("punctuated"))


PUNCTUATION = list('.()!:;"*#~,?-/')


@pytest.fixture(scope="module")
def wide_head_dir(tmp_path_factory, tokenizer_dir):
    """A random head whose caption words and punctuation light up for every input (with weights that vary by
    input), so that every masked query shares terms with every image and the rankings are not ties."""
    tokenizer, _ = load_tokenizer(str(tokenizer_dir))
    planted = tokenizer.convert_tokens_to_ids(PUNCTUATION + PUNCTUATED_WORDS + ["a", "the", "and", "on", "s"])
    folder = tmp_path_factory.mktemp("wide-head")
    make_head(seed=5, planted=tuple(planted)).save_pretrained(folder)
    return folder


def _table(path):
    table = pq.read_table(path).to_pydict()
    return {str(i): np.asarray(v, dtype=np.float32) for i, v in zip(table["id"], table["emb"])}


def reference_evaluation(head_dir, tokenizer_dir, dataset, clean_masks: bool = False) -> dict:
    """The reference's numbers for expand, no_expand, hybrid (top 10 re-scored) and dense, computed from scratch."""
    head = SparseHead.from_pretrained(head_dir)
    tokenizer, _ = load_tokenizer(str(tokenizer_dir))
    meta = json.loads((dataset / "dataset_meta.json").read_text())
    images = [image for image in meta["images"] if image["split"] == "test"]
    captions = [(str(s["sentid"]), s["raw"], str(image["imgid"])) for image in images for s in image["sentences"]]
    image_ids = [str(image["imgid"]) for image in images]
    texts, pictures = _table(dataset / "text_embs.parquet"), _table(dataset / "img_embs.parquet")
    text_dense = torch.tensor(np.stack([texts[sid] for sid, _, _ in captions]))
    image_dense = torch.tensor(np.stack([pictures[i] for i in image_ids]))
    with torch.no_grad():
        expand, documents = head(text_dense), head(image_dense)
    mask = torch.zeros_like(expand)
    for row, (_, raw, _) in enumerate(captions):
        tokens = tokenizer.tokenize(clean_caption(raw) if clean_masks else raw)
        mask[row, tokenizer.convert_tokens_to_ids(tokens)] = 1.0
    no_expand = expand * mask
    relevant = [image_ids.index(imgid) for _, _, imgid in captions]

    def top10(scores):  # score descending, ties by row (mlsr's documented rule; the reference's sort is unstable)
        return [sorted(range(len(row)), key=lambda j: (-row[j], j))[:10] for row in scores.tolist()]

    def metrics(ranked):
        out = {f"R@{k}": np.mean([float(rel in run[:k]) for run, rel in zip(ranked, relevant)]) for k in (1, 5, 10)}
        out["MRR@10"] = np.mean([1.0 / (run.index(rel) + 1) if rel in run else 0.0
                                 for run, rel in zip(ranked, relevant)])
        return out

    def flops(queries):
        return float(((documents != 0).double().sum(0) * (queries != 0).double().sum(0)).sum()
                     / (queries.shape[0] * documents.shape[0]))

    result = {"expand": {**metrics(top10(expand @ documents.T)), "flops": flops(expand)},
              "no_expand": {**metrics(top10(no_expand @ documents.T)), "flops": flops(no_expand)},
              "dense": metrics(top10(text_dense @ image_dense.T))}
    hybrid, exact = [], (no_expand @ documents.T).tolist()
    expanded_scores = (expand @ documents.T).tolist()
    for q, candidates in enumerate(top10(no_expand @ documents.T)):
        candidates = [j for j in candidates if exact[q][j] > 0]
        hybrid.append(sorted(candidates, key=lambda j: (-expanded_scores[q][j], j)))
    result["hybrid@10"] = metrics(hybrid)
    result["positive_candidates"] = min(sum(score > 0 for score in row) for row in exact)
    result["mask_entries"] = int(mask.sum())
    return result


def test_evaluate_equals_the_reference_computation(dataset, wide_head_dir, tokenizer_dir, tmp_path, capsys):
    reference = reference_evaluation(wide_head_dir, tokenizer_dir, dataset)
    assert reference["positive_candidates"] >= 10  # so the reference's top-10 hybrid needs no filling
    assert main(["evaluate", "--dataset", str(dataset), "--split", "test", "--measures", ",".join(MEASURES),
                 "--head", str(wide_head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu",
                 "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    by_run = {run["run"]: run for run in result["runs"]}
    assert set(by_run) == {"expand", "no_expand", "hybrid@10", "hybrid", "dense"}
    for run in ("expand", "no_expand", "hybrid@10", "dense"):
        for measure in MEASURES:
            assert by_run[run]["metrics"][measure] == pytest.approx(reference[run][measure], abs=1e-12), (run, measure)
    for run in ("expand", "no_expand"):
        assert by_run[run]["flops"] == pytest.approx(reference[run]["flops"], rel=1e-9)
    # the masks are the raw text's word pieces: BLIP-cleaned captions would give other masks and other numbers
    cleaned = reference_evaluation(wide_head_dir, tokenizer_dir, dataset, clean_masks=True)
    assert cleaned["mask_entries"] < reference["mask_entries"]
    assert cleaned["no_expand"]["flops"] != pytest.approx(by_run["no_expand"]["flops"], rel=1e-6)


def test_the_table_shows_both_hybrid_depths_and_says_how_they_differ(dataset, wide_head_dir, tokenizer_dir,
                                                                    tmp_path, capsys):
    assert main(["evaluate", "--dataset", str(dataset), "--split", "test", "--measures", "R@1,R@10",
                 "--head", str(wide_head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu",
                 "--runs-dir", str(tmp_path / "runs"), "--hybrid-depth", "20"]) == 0
    captured = capsys.readouterr()
    assert "sparse hybrid (depth 10, as the reference)" in captured.out
    assert "sparse hybrid (depth 20)" in captured.out
    assert "equals no_expand" in captured.out and "note:" not in captured.err  # a float32 index: no rounding note
    assert (tmp_path / "runs" / "hybrid@10.trec").is_file() and (tmp_path / "runs" / "hybrid.trec").is_file()
    assert main(["evaluate", "--dataset", str(dataset), "--runs", "expand,hybrid@0", "--head", str(wide_head_dir),
                 "--tokenizer", str(tokenizer_dir)]) == 2
    assert "the hybrid depth must be at least 1, got 0" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", str(dataset), "--runs", "dense@3", "--head", str(wide_head_dir),
                 "--tokenizer", str(tokenizer_dir)]) == 2
    assert "unknown run 'dense@3'" in capsys.readouterr().err
