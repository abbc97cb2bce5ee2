"""Time of `import-dense` / `prepare` and of the mscoco-test evaluation at the real MS-COCO sizes, on a generated
dataset in the lsr42 layout (the Hub is not needed; the vectors are random, the sizes are real).

    python -m bench.bench_published [--images 123287] [--test 5000] [--captions-per-image 5] [--all-captions]
                                    [--device cpu] [--out bench/results/published.json]

Sizes: Karpathy's COCO split has 123,287 images (5,000 of them in `test`) and ~5 captions each; img_embs.parquet
holds every image, so the import streams 123k rows to keep 5k. text_embs.parquet is written with the test
captions only unless --all-captions (616k rows, ~0.6 GB), so the evaluation's read time is a lower bound.
Head: 256 -> 768 -> 30,522 with random weights, its bias set so ~1% of the terms light up (about 300 per
vector; the published head's counts differ, and search time grows with them). Baselines measured in the same
run: reading the parquet file alone, and the head's forward pass alone over the same vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parent.parent

from tests.helpers.models import save_tokenizer
from mlsr.models.encoder import Encoder
from mlsr.evaluation.queries import dataset_queries
from mlsr.evaluation.runs import evaluate_index
from mlsr.models.head import HeadConfig, SparseHead
from mlsr.ingest.published import import_dense

DENSE = 256


def write_dataset(folder: Path, images: int, test: int, per_image: int, all_captions: bool) -> dict:
    rng = np.random.default_rng(0)
    splits = np.array(["train"] * images, dtype=object)
    splits[rng.choice(images, test, replace=False)] = "test"
    entries, text_ids, sentid = [], [], 0
    for imgid in range(images):
        sentences = [{"tokens": ["a", "photo"], "raw": f"A photo of thing {imgid} number {k}.", "imgid": imgid,
                      "sentid": sentid + k} for k in range(per_image)]
        if splits[imgid] == "test" or all_captions:
            text_ids += [s["sentid"] for s in sentences]
        sentid += per_image
        entries.append({"filepath": "val2014", "filename": f"COCO_val2014_{imgid:012d}.jpg", "imgid": imgid,
                        "split": str(splits[imgid]), "sentids": [s["sentid"] for s in sentences], "sentences": sentences,
                        "cocoid": imgid})
    for name, ids in (("img_embs.parquet", list(range(images))), ("text_embs.parquet", text_ids)):
        writer = None
        for start in range(0, len(ids), 50_000):
            chunk = ids[start:start + 50_000]
            vectors = rng.normal(size=(len(chunk), DENSE)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            emb = pa.ListArray.from_arrays(pa.array(np.arange(0, vectors.size + 1, DENSE, dtype=np.int32)),
                                           pa.array(vectors.reshape(-1)))
            table = pa.table({"id": pa.array([str(i) for i in chunk]), "emb": emb})
            writer = writer or pq.ParquetWriter(folder / name, table.schema)
            writer.write_table(table)
        writer.close()
    (folder / "dataset_meta.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return {name: (folder / name).stat().st_size for name in ("img_embs.parquet", "text_embs.parquet", "dataset_meta.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=123_287)
    parser.add_argument("--test", type=int, default=5_000)
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--all-captions", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "published.json")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "mscoco-blip-dense"
        data.mkdir()
        started = time.perf_counter()
        sizes = write_dataset(data, args.images, args.test, args.captions_per_image, args.all_captions)
        print(f"generated the dataset in {time.perf_counter() - started:.1f} s; file sizes (bytes): {sizes}")
        torch.manual_seed(0)
        head = SparseHead(HeadConfig(dense_size=DENSE, hidden_size=768, vocab_size=30522))
        with torch.no_grad():
            head.vocab_projector.bias.fill_(-1.35)
        head.save_pretrained(tmp / "head")
        save_tokenizer(tmp / "tokenizer")
        encoder = Encoder.head_only(str(tmp / "head"), str(tmp / "tokenizer"), device=args.device)

        started = time.perf_counter()
        table = pq.read_table(data / "img_embs.parquet")
        read_s = time.perf_counter() - started
        vectors = np.asarray(table.column("emb").combine_chunks().flatten().to_numpy(), np.float32).reshape(-1, DENSE)
        del table
        started = time.perf_counter()
        encoder.sparsify(vectors[: args.test])
        head_s = time.perf_counter() - started
        started = time.perf_counter()
        index, _ = import_dense(encoder, data, tmp / "index", split="test")
        import_s = time.perf_counter() - started
        terms = index.vectors.getnnz(axis=1).mean()
        print(f"import-dense: {import_s:.1f} s for {len(index):,} test images out of {args.images:,} rows"
              f" ({terms:.0f} terms per image); baselines: read img_embs.parquet {read_s:.1f} s,"
              f" head forward on {args.test:,} vectors {head_s:.1f} s")

        started = time.perf_counter()
        queries, qrels = dataset_queries(encoder, data, "test")
        queries_s = time.perf_counter() - started
        print(f"queries: {len(queries.ids):,} captions sparsified (expanded and masked) in {queries_s:.1f} s")
        runs = {}
        for run in ("expand", "no_expand", "hybrid", "dense"):
            started = time.perf_counter()
            evaluation = evaluate_index(index, queries, qrels, runs=[run])
            runs[run] = {"seconds": round(time.perf_counter() - started, 2),
                         "search_seconds": evaluation.results[0].seconds}
            print(f"evaluate {run}: {runs[run]['seconds']:.1f} s (search {runs[run]['search_seconds']:.1f} s)")
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "device": args.device},
              "sizes": {"images": args.images, "test": args.test, "captions": len(queries.ids)}, "file_bytes": sizes,
              "import_seconds": round(import_s, 2), "baseline_read_seconds": round(read_s, 2),
              "baseline_head_seconds": round(head_s, 2), "terms_per_image": round(float(terms), 1),
              "query_seconds": round(queries_s, 2), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
