"""Running the app in a subprocess for the HTTP and browser tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.data import ROOT
from tests.helpers.loopback import free_port, wait_for_port


def start_app(args: list[str], log: Path, wrap=lambda command: command, *, cwd: Path = ROOT,
              env: dict[str, str] | None = None, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """Run `python app.py ARGS` in `cwd` (through `wrap`, e.g. without root's rights) and wait until it answers
    HTTP; the process is the caller's to stop. Offline (HF_HUB_OFFLINE=1) unless `env` says otherwise."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT),
           **(env or {})}
    command = wrap([sys.executable, str(ROOT / "app.py"), *args, "--port", str(port), "--device", "cpu"])
    process = subprocess.Popen(command, cwd=cwd,
                               env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, log, timeout)
    except RuntimeError:
        process.kill()
        raise
    return process, f"http://127.0.0.1:{port}/"



_ABSOLUTE = re.compile(r"(?:^|[\s'\"(=:,\[])(?:/[^\s/'\"]+){2,}|[A-Za-z]:\\")  # /a/b..., C:\...


def server_paths(value, private: tuple[str, ...] = ()) -> list[str]:
    """Strings in a JSON value (or an error message) that hold an absolute filesystem path or a `private` path."""
    found = []
    if isinstance(value, dict):
        for item in value.values():
            found += server_paths(item, private)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found += server_paths(item, private)
    elif isinstance(value, str):
        text = re.sub(r"https?://\S+", "", value)  # a URL is for the browser, not a path
        if _ABSOLUTE.search(text) or any(path in text for path in private if path):
            found.append(value)
    return found


class PathScanningClient:
    """A gradio_client.Client whose every answer (result or error message) is checked for server paths."""

    def __init__(self, client, private: tuple[str, ...] = ()) -> None:
        self._client = client
        self._private = private
        self.answers = 0

    def predict(self, *args, **kwargs):
        from gradio_client.exceptions import AppError

        try:
            result = self._client.predict(*args, **kwargs)
        except AppError as error:
            assert not server_paths(str(error), self._private), f"a server path in an error: {error}"
            raise
        leaked = server_paths(result, self._private)
        assert not leaked, f"server paths in the answer of {kwargs.get('api_name')}: {leaked[:3]}"
        self.answers += 1
        return result

    def __getattr__(self, name):
        return getattr(self._client, name)
