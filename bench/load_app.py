"""Load test of the app on loopback: concurrent gradio_client clients in several processes.

    python -m bench.load_app [--clients 16 64] [--requests 100] [--processes 4] [--out bench/results/load.json]

Starts `python app.py` with tiny random-weight models over a small generated gallery (tests/helpers/),
then for each client count runs clients x requests calls mixing /suggest (half), /image_terms and /compare
(a quarter each), spread over --processes client processes. Reports throughput, latency percentiles,
errors and the app's resident memory (RSS) over the run, read from /proc.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TEXTS = [(ROOT / "assets" / "examples" / name).read_text() for name in ("water-buffalo.txt", "city-trams.txt")] + [
    "a boy leading buffalo through a market", "a woman cutting a cake", "a man riding a motorbike on a dirt road",
]
IMAGES = sorted(str(path) for path in (ROOT / "assets" / "images").glob("*.jpg"))


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident memory of a process in KiB, from /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def one_request(client, rng: random.Random) -> tuple[str, float, str | None]:
    from gradio_client import handle_file

    draw = rng.random()
    started = time.perf_counter()
    try:
        if draw < 0.5:
            endpoint = "suggest"
            client.predict(rng.choice(TEXTS), 10, rng.choice(["expand", "no_expand", "hybrid"]), api_name="/suggest")
        elif draw < 0.75:
            endpoint = "image_terms"
            client.predict(handle_file(rng.choice(IMAGES)), 20, api_name="/image_terms")
        else:
            endpoint = "compare"
            client.predict(rng.choice(TEXTS), 10, api_name="/compare")
        return endpoint, time.perf_counter() - started, None
    except Exception as error:  # a load test counts every failure, whatever its type
        return endpoint, time.perf_counter() - started, f"{type(error).__name__}: {error}"[:200]


def client_process(url: str, threads: int, requests: int, seed: int) -> list[tuple[str, float, str | None]]:
    """`threads` clients in one process, each sending `requests` requests one after another."""
    from gradio_client import Client

    def run(offset: int):
        rng = random.Random(seed * 1000 + offset)
        client = Client(url, verbose=False)
        return [one_request(client, rng) for _ in range(requests)]

    with ThreadPoolExecutor(threads) as pool:
        return [result for batch in pool.map(run, range(threads)) for result in batch]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_load(url: str, pid: int, clients: int, requests: int, processes: int) -> dict:
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def monitor():
        while not stop.is_set():
            samples.append((time.perf_counter(), rss_kib(pid)[0]))
            time.sleep(0.25)

    watcher = threading.Thread(target=monitor, daemon=True)
    rss_before = rss_kib(pid)[0]
    started = time.perf_counter()
    watcher.start()
    processes = min(processes, clients)
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        futures = [pool.submit(client_process, url, share, requests, seed) for seed, share in enumerate(shares)]
        results = [result for future in futures for result in future.result()]
    wall = time.perf_counter() - started
    stop.set()
    watcher.join()
    latencies = [latency for _, latency, error in results if error is None]
    errors = [error for _, _, error in results if error is not None]
    by_endpoint = {}
    for endpoint in ("suggest", "image_terms", "compare"):
        own = [latency for name, latency, error in results if name == endpoint and error is None]
        by_endpoint[endpoint] = {"count": len(own), "p50_ms": 1000 * percentile(own, 0.5),
                                 "p95_ms": 1000 * percentile(own, 0.95)}
    quarter = [samples[min(len(samples) - 1, int(f * len(samples)))][1] // 1024 for f in (0.25, 0.5, 0.75, 1.0)]
    return {
        "clients": clients, "requests": len(results), "seconds": wall, "throughput_rps": len(results) / wall,
        "p50_ms": 1000 * percentile(latencies, 0.5), "p95_ms": 1000 * percentile(latencies, 0.95),
        "p99_ms": 1000 * percentile(latencies, 0.99), "errors": len(errors), "error_examples": errors[:5],
        "endpoints": by_endpoint, "rss_before_mib": rss_before // 1024,
        "rss_at_25_50_75_100_percent_mib": quarter, "peak_rss_mib": rss_kib(pid)[1] // 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--requests", type=int, default=100, help="requests per client")
    parser.add_argument("--processes", type=int, default=4, help="client processes (clients are threads in them)")
    parser.add_argument("--concurrency", type=int, default=2, help="the app's --concurrency")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args()

    from tests.helpers.app import start_app
    from tests.helpers.data import build_gallery, write_image_folder
    from tests.helpers.models import save_planted_head, save_tiny_blip, save_tokenizer
    from mlsr.models.encoder import Encoder

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = save_tokenizer(tmp / "tokenizer")
        backbone = save_tiny_blip(tmp / "blip", tokenizer)
        head = save_planted_head(tmp / "head", tokenizer)
        encoder = Encoder.from_pretrained(str(backbone), str(head), str(tokenizer), device="cpu")
        index = build_gallery(encoder, write_image_folder(tmp / "photos"), tmp / "gallery")
        process, url = start_app(["--index", str(index), "--backbone", str(backbone), "--head", str(head),
                                  "--tokenizer", str(tokenizer), "--concurrency", str(args.concurrency)],
                                 tmp / "app.log")
        try:
            client_process(url, 1, 20, seed=999)  # warm-up: first calls compile and allocate
            runs = [run_load(url, process.pid, clients, args.requests, args.processes) for clients in args.clients]
        finally:
            process.terminate()
            process.wait(timeout=30)
    result = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "app_concurrency":
              args.concurrency, "models": "tiny random-weight BLIP (1 layer, 32 px) + D2S head, 9-image gallery",
              "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6}"
          f" {'RSS MiB: before -> 25/50/75/100% of run, peak':>46}")
    for run in runs:
        rss = "/".join(str(v) for v in run["rss_at_25_50_75_100_percent_mib"])
        print(f"{run['clients']:>7} {run['requests']:>8} {run['throughput_rps']:>7.1f} {run['p50_ms']:>7.0f}"
              f" {run['p95_ms']:>7.0f} {run['p99_ms']:>7.0f} {run['errors']:>6} "
              f"{run['rss_before_mib']:>10} -> {rss}, peak {run['peak_rss_mib']}")
        for endpoint, stats in run["endpoints"].items():
            print(f"        {endpoint:<12} n={stats['count']:<5} p50 {stats['p50_ms']:.0f} ms, p95 {stats['p95_ms']:.0f} ms")
        for example in run["error_examples"]:
            print(f"        error: {example}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
