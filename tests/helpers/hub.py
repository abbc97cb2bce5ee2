"""A Hugging Face cache laid out exactly as huggingface_hub lays it out, for offline tests of Hub ids.

`<cache>/<type>s--<owner>--<name>/blobs/<hash>` holds each file once; `snapshots/<commit>/<file>` are
relative symbolic links to the blobs (what `snapshot_download` returns on Linux and macOS), and
`refs/<branch or tag>` hold commit hashes. `links=False` copies the files instead (Windows without
symlink rights).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import huggingface_hub.constants as hub_constants


def repo_folder(cache: Path, repo_id: str, repo_type: str = "dataset") -> Path:
    return cache / f"{repo_type}s--{repo_id.replace('/', '--')}"


def add_snapshot(cache: Path, repo_id: str, folder: Path, commit: str, *, refs: tuple[str, ...] = ("main",),
                 repo_type: str = "dataset", links: bool = True) -> Path:
    """Put the files of `folder` into the cache as commit `commit` of `repo_id`; returns the snapshot folder."""
    repo = repo_folder(cache, repo_id, repo_type)
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for file in sorted(folder.iterdir()):
        if not file.is_file():
            continue
        if not links:
            shutil.copyfile(file, snapshot / file.name)
            continue
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(file, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def offline_hub(monkeypatch, cache: Path) -> Path:
    """Point huggingface_hub at `cache` and switch it offline: nothing is fetched, only the cache is read."""
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache
