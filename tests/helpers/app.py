"""Running the app in a subprocess for the HTTP and browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.data import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """Run `python app.py ARGS` and wait until it answers HTTP; the process is the caller's to stop."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "app.py", *args, "--port", str(port), "--device", "cpu"], cwd=ROOT,
                               env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"app.py did not start in time:\n{log.read_text()[-3000:]}")

