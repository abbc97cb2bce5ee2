"""What a start of the app costs on this machine, part by part, and what a CPU Space should expect from it.

    python -m bench.bench_startup [--repeat 5] [--items 5000 100000] [--terms 300] [--skip-models]
                                  [--bandwidth 50] [--out bench/results/startup.json]

Measured here, each in a fresh interpreter (median of --repeat; the files were just written, so the OS page
cache is warm: a cold disk adds size / disk bandwidth):
- imports: `mlsr.index`, `app` (the thin wiring), `mlsr.serving.service` (torch + transformers), `mlsr.app.ui`
  (gradio), and all of them, against an empty interpreter start (the baseline);
- index load: `SparseIndex.load` of a COCO-like gallery (ids, image URLs, 5 captions, 256-d dense vectors)
  of each --items size with --terms terms per image, from a folder and by Hub id from a Hugging Face cache
  laid out as huggingface_hub makes it (offline); then the first and second search, with an empty numba
  cache (a new container: the kernel compiles) and a filled one; the baseline is reading and hashing every
  file (the floor of the checksum checks);
- models: real-size BLIP-base retrieval (random weights) + 256 -> 768 -> 30,522 head + the uncased tokenizer
  (`bench.bench_core.make_real_size_models`), loaded with `Encoder.from_pretrained` on the CPU, and the first
  and second encoding of a short text (at most 3 runs).
Estimated, not measured (the Hub is not reachable here): downloads, as size / --bandwidth MB/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_core import make_real_size_models, synthetic_docs

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "5" * 40
IMPORTS = {
    "interpreter (baseline)": "pass",
    "mlsr.index": "import mlsr.index",
    "huggingface_hub's snapshot_download": "from huggingface_hub import snapshot_download",
    "app (wiring)": "import app",
    "mlsr.serving.service (torch, transformers)": "import mlsr.serving.service",
    "mlsr.app.ui (gradio)": "import mlsr.app.ui",
    "everything app.py imports": "import app, mlsr.serving.service, mlsr.app.ui, mlsr.app.startup",
}

LOAD_PROBE = """
import json, sys, time
t = time.perf_counter()
import numpy as np
import scipy.sparse as sp
from mlsr.index.sparse import SparseIndex
imported = time.perf_counter() - t
t = time.perf_counter(); index = SparseIndex.load(sys.argv[1]); load = time.perf_counter() - t
rows, terms = np.zeros(30, int), np.arange(1000, 1030)
query = sp.csr_matrix((np.ones(30, "float32"), (rows, terms)), shape=(1, index.vocab_size))
t = time.perf_counter(); index.search(query, 10); first = time.perf_counter() - t
t = time.perf_counter(); index.search(query, 10); second = time.perf_counter() - t
print(json.dumps({"import_s": imported, "load_s": load, "first_search_s": first, "second_search_s": second}))
"""

MODEL_PROBE = """
import json, sys, time
t = time.perf_counter()
import torch, transformers
from mlsr.models.encoder import Encoder
imported = time.perf_counter() - t
transformers.utils.logging.set_verbosity_error()
t = time.perf_counter()
encoder = Encoder.from_pretrained(*sys.argv[1:4], device="cpu")
load = time.perf_counter() - t
t = time.perf_counter()
encoder.encode_text_views(["a boy leads a water buffalo through a market"])
first = time.perf_counter() - t
t = time.perf_counter()
encoder.encode_text_views(["a woman cuts a large white cake"])
second = time.perf_counter() - t
print(json.dumps({"import_s": imported, "load_s": load, "first_encode_s": first, "second_encode_s": second,
                  "threads": torch.get_num_threads()}))
"""


def run_probe(code: str, *args: str, env: dict | None = None) -> tuple[dict, float]:
    """Run `code` in a fresh interpreter from the repo root; its JSON line and the whole process's wall time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=900)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}), wall


def summary(runs: list[dict]) -> dict:
    """Median and fastest of each field: on a shared machine the fastest run is the best guess of an idle one."""
    return {"median": {key: statistics.median(run[key] for run in runs) for key in runs[0]},
            "fastest": {key: min(run[key] for run in runs) for key in runs[0]}}


def bench_imports(repeat: int) -> dict:
    out = {}
    for label, statement in IMPORTS.items():
        code = (f"import json, time\nt = time.perf_counter()\n{statement}\n"
                "print(json.dumps({'s': time.perf_counter() - t}))")
        runs = [run_probe(code) for _ in range(repeat)]
        out[label] = summary([{"import_s": r[0]["s"], "process_s": r[1]} for r in runs])
    return out


def write_gallery(folder: Path, n: int, terms: int) -> int:
    """A COCO-like index of n images (mscoco-test's layout: URLs, captions, dense vectors); its size in bytes."""
    from mlsr.index.sparse import SparseIndex
    from mlsr.vocab import Vocabulary
    from tests.helpers.models import save_tokenizer

    tokenizer = save_tokenizer(folder.parent / "tokenizer")
    vocab = Vocabulary.load(tokenizer / "vocab.txt")
    items = [{"id": str(i), "image": f"http://images.cocodataset.org/val2014/COCO_val2014_{i:012d}.jpg",
              "captions": [f"A photo of a thing number {i}, seen from side {k}." for k in range(5)],
              "filename": f"COCO_val2014_{i:012d}.jpg", "cocoid": i} for i in range(n)]
    dense = np.random.default_rng(0).normal(size=(n, 256)).astype(np.float32)
    SparseIndex.build(synthetic_docs(n, terms, seed=n), items, vocab=vocab, dense=dense,
                      info={"documents": "image", "models": {"head": {"id": "bench"}}}).save(folder)  # both or neither
    return sum(p.stat().st_size for p in folder.iterdir())


def read_and_hash_s(folder: Path, repeat: int) -> float:
    """The baseline: reading and hashing every file of the folder once (the checksums' floor), nothing else."""
    from mlsr._files import sha256_file

    def read() -> float:
        started = time.perf_counter()
        for path in folder.iterdir():
            sha256_file(path)
        return time.perf_counter() - started
    return min(read() for _ in range(repeat))


def bench_index(n: int, terms: int, repeat: int, work: Path) -> dict:
    from tests.helpers.hub import add_snapshot

    folder = work / f"gallery-{n}" / "index"
    size = write_gallery(folder, n, terms)
    cache = work / f"cache-{n}"
    add_snapshot(cache, "mlsr-bench/gallery", folder, COMMIT)
    warm_numba = work / "numba-warm"
    run_probe(LOAD_PROBE, str(folder), env={"NUMBA_CACHE_DIR": str(warm_numba)})  # fills the warm numba cache
    result = {"items": n, "bytes": size, "baseline_read_and_hash_s": read_and_hash_s(folder, repeat), "cases": {}}
    cases = {
        "folder, numba cache empty (new container)": (str(folder), None),
        "folder, numba cache filled": (str(folder), warm_numba),
        "Hub id from the cache (offline), numba cache filled": ("mlsr-bench/gallery", warm_numba),
    }
    for label, (name, numba) in cases.items():
        runs = []
        for _ in range(repeat):
            cold = Path(tempfile.mkdtemp(dir=work))
            env = {"NUMBA_CACHE_DIR": str(numba or cold), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
            runs.append(run_probe(LOAD_PROBE, name, env=env)[0])
            shutil.rmtree(cold)
        result["cases"][label] = summary(runs)
    return result


def bench_models(repeat: int, work: Path) -> tuple[dict, tuple[Path, Path, Path]]:
    folders = make_real_size_models(work / "models")
    sizes = {role: sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
             for role, folder in zip(("backbone", "head", "tokenizer"), folders)}
    runs = [run_probe(MODEL_PROBE, *map(str, folders))[0] for _ in range(min(repeat, 3))]  # ~1 GB of weights each
    return {"bytes": sizes, **summary(runs)}, folders


BUILD_PROBE = """
import json, sys, time
from mlsr.ingest.published import import_dense
from mlsr.models.encoder import Encoder
encoder = Encoder.head_only(sys.argv[1], sys.argv[2], device="cpu")
t = time.perf_counter(); import_dense(encoder, sys.argv[3], sys.argv[4], split="test")
print(json.dumps({"import_dense_s": time.perf_counter() - t}))
"""


def bench_build(head: Path, tokenizer: Path, work: Path) -> dict:
    """The other first start: `prepare`'s import of the 5,000 test images out of 123,287 published rows."""
    from bench.bench_published import write_dataset

    data = work / "mscoco-blip-dense"
    data.mkdir()
    sizes = write_dataset(data, 123_287, 5_000, 5, False)
    probe, _ = run_probe(BUILD_PROBE, str(head), str(tokenizer), str(data), str(work / "built"))
    return {**probe, "download_bytes": sizes["img_embs.parquet"] + sizes["dataset_meta.json"]}


def estimates(result: dict, bandwidth: float) -> dict:
    """Start times of a CPU Space from the fastest measured parts; downloads at `bandwidth` MB/s (assumed).

    warm: the models, the index and the numba cache are on disk already (persistent storage, /data);
    first: everything is downloaded (a first start, or any restart without persistent storage: a Space's
    own disk is emptied) and the search kernel compiles. Neither counts building the container image.
    """
    imports = result["imports"]["everything app.py imports"]["fastest"]["process_s"]
    models = result["models"]["fastest"]
    model_s = models["load_s"] + models["first_encode_s"]
    model_mb = sum(result["models"]["bytes"].values()) / 1e6
    out = {}
    for gallery in result["index"]:
        warm = gallery["cases"]["folder, numba cache filled"]["fastest"]
        cold = gallery["cases"]["folder, numba cache empty (new container)"]["fastest"]
        index_mb = gallery["bytes"] / 1e6
        out[f"{gallery['items']:,} items"] = {
            "warm start s": imports + model_s + warm["load_s"] + warm["first_search_s"],
            "first start from a prebuilt Hub index s": imports + model_s + cold["load_s"] + cold["first_search_s"]
                                                       + (model_mb + index_mb) / bandwidth,
            "  of which downloads s (estimated)": (model_mb + index_mb) / bandwidth,
        }
    build = result.get("build")
    if build:
        first = result["index"][0]
        load = first["cases"]["folder, numba cache empty (new container)"]["fastest"]
        download_mb = build["download_bytes"] / 1e6 + model_mb
        out[f"{first['items']:,} items"].update({
            "first start building from the published vectors s":
                imports + model_s + build["import_dense_s"] + load["load_s"] + load["first_search_s"]
                + download_mb / bandwidth,
            "  of which downloads s (estimated)  ": download_mb / bandwidth,
        })
    return out


def report(result: dict) -> None:
    """Print the numbers: median, and the fastest run in parentheses."""
    for label, row in result["imports"].items():
        median, fastest = row["median"], row["fastest"]
        print(f"import  {label:<42} {median['import_s']:6.2f} s in-process, {median['process_s']:6.2f} s whole"
              f" process (fastest {fastest['process_s']:.2f} s)")
    for row in result["index"]:
        baseline = row["baseline_read_and_hash_s"]
        print(f"index   {row['items']:>9,} items, {row['bytes'] / 1e6:7.1f} MB;"
              f" reading and hashing the files (baseline) {baseline:.3f} s")
        for label, case in row["cases"].items():
            median, fastest = case["median"], case["fastest"]
            print(f"        {label:<54} load {median['load_s']:6.3f} s ({fastest['load_s']:.3f};"
                  f" {fastest['load_s'] / baseline:4.1f}x baseline), 1st search {median['first_search_s']:6.3f} s"
                  f" ({fastest['first_search_s']:.3f}), 2nd {1000 * median['second_search_s']:5.1f} ms")
    if "models" in result:
        models, fastest = result["models"]["median"], result["models"]["fastest"]
        print(f"models  {sum(result['models']['bytes'].values()) / 1e6:,.0f} MB on disk ({result['models']['bytes']});"
              f" import torch + transformers {models['import_s']:.2f} s ({fastest['import_s']:.2f}),"
              f" Encoder.from_pretrained {models['load_s']:.2f} s ({fastest['load_s']:.2f}), 1st encoding"
              f" {models['first_encode_s']:.2f} s, 2nd {models['second_encode_s']:.3f} s ({models['threads']} threads)")
    if "build" in result:
        print(f"build   import-dense of 5,000 of 123,287 rows {result['build']['import_dense_s']:.1f} s;"
              f" it downloads {result['build']['download_bytes'] / 1e6:,.0f} MB (generated files' size)")
    for gallery, rows in result.get("estimates", {}).items():
        for label, value in rows.items():
            print(f"estimate {gallery:<14} {label:<52} {value:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--items", type=int, nargs="+", default=[5000, 100_000])
    parser.add_argument("--terms", type=int, default=300,
                        help="terms per image (a D2S head gives ~100-300; bench_published's random head ~300)")
    parser.add_argument("--skip-models", action="store_true", help="also skips the build from published vectors")
    parser.add_argument("--bandwidth", type=float, default=50.0, help="assumed Hub download speed, MB/s")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "startup.json")
    args = parser.parse_args()
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average_at_start": os.getloadavg()}
    result = {"machine": machine, "terms_per_item": args.terms, "assumed_bandwidth_MBps": args.bandwidth}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result["imports"] = bench_imports(args.repeat)
        result["index"] = [bench_index(n, args.terms, args.repeat, work) for n in args.items]
        if not args.skip_models:
            result["models"], (_, head, tokenizer) = bench_models(args.repeat, work)
            result["build"] = bench_build(head, tokenizer, work)
            result["estimates"] = estimates(result, args.bandwidth)
    result["machine"]["load_average_at_end"] = os.getloadavg()
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
