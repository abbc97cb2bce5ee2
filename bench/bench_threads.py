"""The thread policy under load: one caption's encoding (and a FAISS flat search) with the second core busy,
on torch's default threads (every core) against the policy's (cores // the app's concurrency), in one run.

    python -m bench.bench_threads [--repeat 30] [--rounds 3] [--concurrency 2] [--out bench/results/threads.json]

A busy loop in another process keeps one core busy (what a second visitor's request does) for the whole run;
the two settings are interleaved round by round so that both see the same machine. Real-size random-weight
BLIP-base text encoder and 30,522-term head (timings do not depend on trained weights). Wall time and CPU
time are printed with the load average: on a shared machine the wall time includes waiting for a core.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.timing import load, wall_and_cpu

CAPTION = "a boy leading water buffalo through a market field"


def bench(repeat: int, rounds: int, concurrency: int) -> dict:
    import torch

    from bench.bench_core import make_real_size_models
    from mlsr.index.dense import DenseIndex
    from mlsr.models.encoder import Encoder
    from mlsr.threads import available_cores, policy_threads

    with tempfile.TemporaryDirectory() as tmp:
        encoder = Encoder.from_pretrained(*map(str, make_real_size_models(Path(tmp))), device="cpu")
    default, policy = torch.get_num_threads(), policy_threads(concurrency)
    dense = DenseIndex(np.random.default_rng(0).standard_normal((100_000, 256)).astype(np.float32))
    queries = np.random.default_rng(1).standard_normal((1, 256)).astype(np.float32)
    import faiss

    settings = {"default": default, "policy": policy}
    caption = {name: [] for name in settings}
    flat = {name: [] for name in settings}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # the second visitor
    try:
        for _ in range(rounds):
            for name, count in settings.items():
                torch.set_num_threads(count)
                caption[name].append(wall_and_cpu(lambda i: encoder.encode_text(CAPTION), repeat, warmup=3))
                faiss.omp_set_num_threads(count)
                flat[name].append(wall_and_cpu(lambda i: dense._faiss.search(queries, 10), repeat, warmup=3))
    finally:
        busy.kill()
        busy.wait()
    torch.set_num_threads(default)

    def pooled(runs: list[dict]) -> dict:  # the median over rounds of each round's p50
        return {key: float(np.median([run[key] for run in runs])) for key in runs[0]}

    result = {"cores": available_cores(), "concurrency": concurrency, "threads_default": default,
              "threads_policy": policy}
    for name in settings:
        result[f"caption_{name}"] = pooled(caption[name])
        result[f"faiss_flat_100k_{name}"] = pooled(flat[name])
    for what in ("caption", "faiss_flat_100k"):
        default_ms, policy_ms = result[f"{what}_default"]["wall_p50_ms"], result[f"{what}_policy"]["wall_p50_ms"]
        result[f"{what}_wall_speedup"] = default_ms / policy_ms
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, help="the app's concurrency the policy assumes")
    parser.add_argument("--out", type=Path, default=Path("bench/results/threads.json"))
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    before = load()
    result = {"machine": platform.processor() or platform.machine(), "load_before": before,
              "threads": bench(args.repeat, args.rounds, args.concurrency), "load_after": load()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["machine"], "|", before, "| after (with the busy loop):", result["load_after"])
    for key, value in result["threads"].items():
        if isinstance(value, dict):
            value = ", ".join(f"{name} {number:,.2f}" for name, number in value.items())
        print(f"{key:<28} {value:,.2f}" if isinstance(value, float) else f"{key:<28} {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
