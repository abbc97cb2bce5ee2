"""The app under sustained use: models load once, failing requests do not stop it, and a short run of the load
script (bench/load_app.py) answers every request. The 1,000-request soak with its memory threshold is marked
`soak`: not in the default run (pyproject's addopts deselect it); run it with `pytest -m soak`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
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


def drive(url: str, pid: int, requests: int, rss_at: tuple[int, ...] = ()) -> tuple[list[str], int, dict[int, float]]:
    """`requests` calls from CLIENTS threads, every tenth one a request that must be refused.

    Returns the unexpected failures, the number refused, and the app's RSS (MiB) after the counts in `rss_at`.
    """
    images = sorted(REAL_IMAGES.glob("*.jpg"))
    rss: dict[int, float] = {}
    failures: list[str] = []
    refused = 0
    done = 0
    lock = threading.Lock()

    def client_loop(offset: int) -> None:
        nonlocal done, refused
        client = PathScanningClient(Client(url, verbose=False))  # no answer may name a server path
        for i in range(offset, requests, CLIENTS):
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
                if done in rss_at:
                    rss[done] = rss_mib(pid)

    threads = [threading.Thread(target=client_loop, args=(offset,)) for offset in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return failures, refused, rss


def test_a_hundred_requests_load_models_once_and_refuse_bad_input(app_args, tmp_path):
    log = tmp_path / "app.log"
    process, url = start_app([*app_args, "-v"], log)
    try:
        failures, refused, _ = drive(url, process.pid, 100)
        assert process.poll() is None, "the app died"
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not failures, failures[:5]
    assert refused == 10
    text = log.read_text()
    assert text.count("loaded the models and") == 1, "models must be loaded once, at start"
    assert "Traceback" not in text


@pytest.mark.soak
def test_a_thousand_requests_load_models_once_and_keep_memory_bounded(app_args, tmp_path):
    """The soak (about a minute; not in the default run: `pytest -m soak`): memory stays flat over 800 requests."""
    log = tmp_path / "app.log"
    process, url = start_app([*app_args, "-v"], log)
    try:
        failures, refused, rss = drive(url, process.pid, REQUESTS, rss_at=(200, REQUESTS))
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
        # every answered request is counted under its endpoint, and the mix reached all three
        counts = {name: stats["count"] for name, stats in run["endpoints"].items()}
        assert sum(counts.values()) == run["requests"] and min(counts.values()) > 0, counts
