"""Running a command so that the operating system really refuses unreadable files, even when the tests run as root.

chmod 000 does not stop root: it holds CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. `setpriv` drops both from the
bounding set (and every inheritable capability), so the command meets permissions as any user would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.data import ROOT

DROP_CAPABILITIES = ["--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def unprivileged(command: list[str]) -> list[str]:
    """`command`, prefixed with setpriv when running as root (skipped when setpriv is missing)."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): chmod cannot make a file unreadable")
    return [setpriv, *DROP_CAPABILITIES, *command]


def run_mlsr(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m mlsr ARGS` as a user without the rights to bypass file permissions."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(unprivileged([sys.executable, "-m", "mlsr", *args]), capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300, input=stdin)


def make_unreadable(*paths: Path) -> None:
    for path in paths:
        path.chmod(0)
