"""Training throughput of a real-size D2S head: caption-image pairs per second through `mlsr.training.loop.train_step`.

    python -m bench.bench_train [--device cpu|cuda] [--batch-size 512] [--steps 5] [--amp off bf16 fp16]
                                [--out bench/results/train.json]

Head: 256 -> 768 -> 30,522 (BLIP's dense size, DistilBERT's hidden size and vocabulary), random weights
(speed does not depend on them). Data: random unit vectors and 12-token captions. Each row times full
optimizer steps (forward of both sides, two-way distillation loss, L1, backward, AdamW) on expanded
batches and on batches masked to the captions' tokens; the baseline, measured in the same run, is the
head's forward pass alone on the same pairs (what encoding them for an index costs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


from mlsr.training.config import TrainConfig
from mlsr.training.head_init import new_head
from mlsr.training.loop import build_optimizer, train_step

DENSE, HIDDEN, VOCAB, CAPTION_TOKENS = 256, 768, 30522, 12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, steps: int, warmup: int = 2) -> list[float]:
    """Seconds per call after `warmup` untimed calls, the device synchronised around each."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def bench(device: torch.device, batch: int, steps: int, amp: str) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    texts = torch.nn.functional.normalize(torch.randn(batch, DENSE, generator=generator), dim=1).to(device)
    images = torch.nn.functional.normalize(torch.randn(batch, DENSE, generator=generator), dim=1).to(device)
    ids = torch.randint(1000, VOCAB, (batch, CAPTION_TOKENS), generator=generator).to(device)
    mask = torch.ones_like(ids)
    head = new_head(DENSE, VOCAB, hidden_size=HIDDEN, seed=0).to(device)
    optimizer = build_optimizer(head, TrainConfig())
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def step(masked: bool):
        return lambda: train_step(head, optimizer, texts, images, input_ids=ids if masked else None,
                                  attention_mask=mask if masked else None, q_weight=1e-3, d_weight=1e-3,
                                  temperature=1e-3, amp=amp, scaler=scaler)

    @torch.inference_mode()
    def forward():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            head.eval()
            head(texts)
            head(images)

    rows = []
    for name, fn in (("train step, expanded captions", step(False)), ("train step, captions masked to their tokens", step(True)),
                     ("baseline: head forward only (both sides, no grad)", forward)):
        seconds = statistics.median(timed(fn, device, steps))
        rows.append({"what": name, "amp": amp, "ms_per_batch": round(seconds * 1000, 1),
                     "pairs_per_second": round(batch / seconds, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=512, help="pairs per batch (the paper's 512)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (median reported)")
    parser.add_argument("--amp", nargs="+", default=None, help="precisions to time (default: off, plus bf16 fp16 on CUDA)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    amps = args.amp or (["off", "bf16", "fp16"] if device.type == "cuda" else ["off"])
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(), "cores": os.cpu_count(), "torch": torch.__version__,
    }
    settings = {"dense_size": DENSE, "hidden_size": HIDDEN, "vocab_size": VOCAB, "batch_size": args.batch_size,
                "steps": args.steps, "caption_tokens": CAPTION_TOKENS}
    print(f"device {args.device} ({machine['device']}), {machine['cpu_threads']} torch threads, torch {machine['torch']}")
    print(f"head {DENSE} -> {HIDDEN} -> {VOCAB:,}; batch {args.batch_size} pairs; median of {args.steps} steps after 2 warm-up")
    rows = []
    for amp in amps:
        rows += bench(device, args.batch_size, args.steps, amp)
    width = max(len(row["what"]) for row in rows)
    print(f"{'what':<{width}}  amp    ms/batch    pairs/s")
    for row in rows:
        print(f"{row['what']:<{width}}  {row['amp']:<5} {row['ms_per_batch']:>9.1f} {row['pairs_per_second']:>10.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "settings": settings, "results": rows}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
