"""The app under sustained use: models load once, memory stays bounded, failing requests do not stop it,
and a short run of the load script (bench/load_app.py) answers every request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.helpers.app import PathScanningClient, start_app
from tests.helpers.data import REAL_IMAGES, ROOT

REQUESTS = 1000
CLIENTS = 4
TEXTS = ["a boy leading buffalo through a market", "a woman cutting a cake",
         (ROOT / "assets" / "examples" / "city-trams.txt").read_text()]


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line")


def test_a_thousand_requests_load_models_once_and_keep_memory_bounded(app_args, tmp_path):
    log = tmp_path / "app.log"
    process, url = start_app([*app_args, "-v"], log)
    images = sorted(REAL_IMAGES.glob("*.jpg"))
    rss: dict[int, float] = {}
    failures: list[str] = []
    refused = 0
    done = 0
    lock = threading.Lock()

    def client_loop(offset: int) -> None:
        nonlocal done, refused
        client = PathScanningClient(Client(url, verbose=False))  # no answer may name a server path
        for i in range(offset, REQUESTS, CLIENTS):
            try:
                if i % 10 == 9:  # a request that must fail with a clear message, interleaved with the rest
                    try:
                        client.predict("   ", 5, "expand", api_name="/suggest")
                        failures.append(f"request {i}: empty text was accepted")
                    except AppError:
                        with lock:
                            refused += 1
                elif i % 10 in (3, 7):
                    client.predict(handle_file(str(images[i % len(images)])), 10, api_name="/image_terms")
                elif i % 10 == 5:
                    client.predict(TEXTS[i % len(TEXTS)], 10, api_name="/compare")
                else:
                    client.predict(TEXTS[i % len(TEXTS)], 10, ("expand", "hybrid")[i % 2], api_name="/suggest")
            except Exception as error:  # every unexpected failure is collected and reported below
                failures.append(f"request {i}: {type(error).__name__}: {error}")
            with lock:
                done += 1
                if done in (200, REQUESTS):
                    rss[done] = rss_mib(process.pid)

    try:
        threads = [threading.Thread(target=client_loop, args=(offset,)) for offset in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert process.poll() is None, "the app died"
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not failures, failures[:5]
    assert refused == REQUESTS // 10
    # After 200 warm-up requests (caches, thumbnails, allocator pools), 800 more must not grow memory much.
    growth = rss[REQUESTS] - rss[200]
    print(f"app RSS after 200 requests {rss[200]:.0f} MiB, after {REQUESTS} {rss[REQUESTS]:.0f} MiB")
    assert growth < 64, f"RSS grew by {growth:.0f} MiB over 800 requests"
    text = log.read_text()
    assert text.count("loaded the models and") == 1, "models must be loaded once, at start"
    assert "Traceback" not in text


def test_a_short_load_run_answers_every_request(tmp_path):
    out = tmp_path / "load.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "bench.load_app", "--clients", "4", "8", "--requests", "5",
                             "--processes", "2", "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert [run["clients"] for run in runs] == [4, 8]
    for run in runs:
        assert run["requests"] == run["clients"] * 5 and run["errors"] == 0, run["error_examples"]
        assert run["throughput_rps"] > 0 and run["peak_rss_mib"] > 0
