"""The published files have the layouts our fixtures imitate (tests/helpers/datasets.py). Need the Hub; skipped without."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.hub


def _schema(repo: str, path: str):
    """A parquet file's schema, read from its footer over HTTP (no full download)."""
    import pyarrow.parquet as pq
    from huggingface_hub import HfFileSystem

    with HfFileSystem().open(f"datasets/{repo}/{path}", "rb") as handle:
        return pq.ParquetFile(handle).schema_arrow


def _parquet_files(repo: str) -> list[str]:
    from huggingface_hub import HfApi

    return sorted(f for f in HfApi().list_repo_files(repo, repo_type="dataset") if f.endswith(".parquet"))


@pytest.mark.parametrize("repo", ["lsr42/mscoco-blip-dense", "lsr42/flickr30k-blip-dense"])
def test_lsr42_dense_datasets(repo):
    import json

    from huggingface_hub import hf_hub_download

    for name in ("img_embs.parquet", "text_embs.parquet"):
        assert {"id", "emb"} <= set(_schema(repo, name).names)
    meta = json.loads(open(hf_hub_download(repo, "dataset_meta.json", repo_type="dataset")).read())
    image = meta["images"][0]
    assert {"imgid", "filename", "split", "sentences"} <= set(image)
    assert {"raw", "sentid"} <= set(image["sentences"][0])
    counts = {}
    for entry in meta["images"]:
        counts[entry["split"]] = counts.get(entry["split"], 0) + 1
    assert counts["test"] in (1000, 5000)


def test_atomic_layouts():
    from mlsr.data.atomic_trec import IMAGES, QRELS, QUERY_FIELDS, TEXTS, _in_split

    for repo, split, columns in ((QRELS, "validation", {"text_id", "image_id", "rel"}),
                                 (TEXTS, "validation", {"text_id", *QUERY_FIELDS}),
                                 (IMAGES, None, {"image_id", "image", "caption_reference_description"})):
        files = [f for f in _parquet_files(repo) if _in_split(f, split)]
        assert files, (repo, split)
        assert columns <= set(_schema(repo, files[0]).names), repo
