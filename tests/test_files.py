"""Folder replacement: the target is always a whole folder, old or new; leftovers of dead saves are cleared."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import mlsr._files
from mlsr._files import replace_folder, staging_folder


def folder_with(path, text: str):
    path.mkdir()
    (path / "file.txt").write_text(text)
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RENAME_EXCHANGE is Linux's")
def test_an_existing_folder_is_swapped_in_one_step(tmp_path, monkeypatch):
    target = folder_with(tmp_path / "index", "old")
    staging = folder_with(tmp_path / ".index.tmp-1", "new")

    def no_rename(*args):
        raise AssertionError("a two-step rename leaves a moment without the folder")

    monkeypatch.setattr(mlsr._files.os, "rename", no_rename)
    replace_folder(staging, target)
    assert (target / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_without_exchange_the_backup_path_still_replaces(tmp_path, monkeypatch):
    monkeypatch.setattr(mlsr._files, "_exchange", lambda first, second: False)
    target = folder_with(tmp_path / "index", "old")
    replace_folder(folder_with(tmp_path / ".index.tmp-1", "new"), target)
    assert (target / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    replace_folder(folder_with(tmp_path / "fresh", "first"), tmp_path / "absent")
    assert (tmp_path / "absent" / "file.txt").read_text() == "first"


def test_leftovers_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "index"
    stale = [folder_with(tmp_path / f".index.{kind}-{dead.pid}", "stale") for kind in ("tmp", "old")]
    live = folder_with(tmp_path / f".index.tmp-{os.getppid()}", "someone else's save in progress")
    other = folder_with(tmp_path / f".other.tmp-{dead.pid}", "not ours")
    staging = staging_folder(target)
    assert staging == tmp_path / f".index.tmp-{os.getpid()}" and staging.is_dir() and not any(staging.iterdir())
    assert not any(path.exists() for path in stale)
    assert live.exists() and other.exists()
