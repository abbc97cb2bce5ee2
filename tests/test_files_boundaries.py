"""mlsr._files at its boundaries: a failure midway leaves the old file and no temp file, JSON and JSON lines as
written (blank lines, a line holding two values, non-ASCII), checksums around the chunk size, the Hugging Face
cache's links and no others, a failing swap that puts the old folder back, and the crash hook's Nth visit."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlsr._files
from mlsr._files import (atomic_path, atomic_write_bytes, atomic_write_json, kill_point, read_jsonl, regular_file,
                         replace_folder, sha256_file, staging_folder, write_jsonl)


def test_atomic_path_writes_beside_the_final_file_then_renames(tmp_path):
    final = tmp_path / "data.bin"
    with atomic_path(final) as tmp:
        assert tmp == tmp_path / f".data.bin.{os.getpid()}.tmp"
        tmp.write_bytes(b"new")
        assert not final.exists()
    assert final.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [final]


@pytest.mark.parametrize("existing", [None, b"old"])
def test_a_failure_midway_leaves_the_old_file_and_no_temp_file(tmp_path, existing):
    final = tmp_path / "data.bin"
    if existing is not None:
        final.write_bytes(existing)
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert (final.read_bytes() if final.exists() else None) == existing
    assert [p.name for p in tmp_path.iterdir()] == ([] if existing is None else ["data.bin"])


def test_a_failing_rename_leaves_no_temp_file(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError("read-only")

    monkeypatch.setattr(mlsr._files.os, "replace", refuse)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "data.bin", b"x")
    assert list(tmp_path.iterdir()) == []


def test_json_is_indented_utf8_with_a_final_newline(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"name": "caf\u00e9", "n": [1]})
    assert (tmp_path / "a.json").read_bytes() == '{\n  "name": "caf\u00e9",\n  "n": [\n    1\n  ]\n}\n'.encode()


@pytest.mark.parametrize("rows", [[], [{"a": 1}], [{"a": 1}, {"b": "caf\u00e9"}, {}]], ids=["empty", "one", "many"])
def test_json_lines_round_trip_one_row_a_line(tmp_path, rows):
    write_jsonl(tmp_path / "rows.jsonl", rows)
    text = (tmp_path / "rows.jsonl").read_bytes().decode("utf-8")
    assert text == "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    assert read_jsonl(tmp_path / "rows.jsonl") == rows


def test_read_jsonl_skips_blank_lines(tmp_path):
    (tmp_path / "rows.jsonl").write_bytes(b'{"a": 1}\n\n  \n{"a": 2}\n')
    assert read_jsonl(tmp_path / "rows.jsonl") == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("text", [b'{"a": 1}\n1, 2\n', b'{"a": 1}\n{"a": \n'], ids=["two-values", "cut"])
def test_read_jsonl_refuses_a_line_that_is_not_one_value(tmp_path, text):
    (tmp_path / "rows.jsonl").write_bytes(text)
    with pytest.raises(ValueError):
        read_jsonl(tmp_path / "rows.jsonl")


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 16, 17])
def test_sha256_file_around_the_chunk_size(tmp_path, size):
    data = bytes(range(size))
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk_size=8) == hashlib.sha256(data).hexdigest()


def test_sha256_file_default_chunk_is_one_mebibyte(tmp_path):
    data = os.urandom((1 << 20) + 3)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_regular_file_accepts_files_and_the_caches_links_only(tmp_path):
    repo = tmp_path / "models--x"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "blobs" / "1234").write_bytes(b"w")
    (repo / "snapshots" / "abc" / "model.bin").symlink_to(repo / "blobs" / "1234")
    (repo / "snapshots" / "abc" / "outside").symlink_to(tmp_path / "secret")
    (tmp_path / "secret").write_bytes(b"s")
    (tmp_path / "plain").write_bytes(b"p")
    (tmp_path / "link").symlink_to(tmp_path / "plain")
    (repo / "snapshots" / "abc" / "dangling").symlink_to(repo / "blobs" / "missing")
    (repo / "snapshots" / "abc" / "folder").symlink_to(repo / "blobs")
    assert regular_file(tmp_path / "plain") and regular_file(repo / "snapshots" / "abc" / "model.bin")
    assert not regular_file(tmp_path / "link")  # a link outside a snapshots folder
    assert not regular_file(repo / "snapshots" / "abc" / "outside")  # a snapshot link leaving the blobs
    assert not regular_file(repo / "snapshots" / "abc" / "dangling")
    assert not regular_file(repo / "snapshots")  # a folder
    assert not regular_file(tmp_path / "absent")


def test_a_failing_second_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    monkeypatch.setattr(mlsr._files, "_exchange", lambda first, second: False)
    target, staging = tmp_path / "index", tmp_path / ".index.tmp-1"
    for folder, text in ((target, "old"), (staging, "new")):
        folder.mkdir()
        (folder / "file.txt").write_text(text)
    real_rename, calls = os.rename, []

    def second_fails(source, destination):
        calls.append(source)
        if len(calls) == 2:
            raise OSError("cross-device")
        real_rename(source, destination)

    monkeypatch.setattr(mlsr._files.os, "rename", second_fails)
    with pytest.raises(OSError):
        replace_folder(staging, target)
    assert (target / "file.txt").read_text() == "old" and (staging / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".index.tmp-1", "index"]


def test_exchange_is_refused_for_a_missing_path(tmp_path):
    (tmp_path / "a").mkdir()
    if not sys.platform.startswith("linux"):
        pytest.skip("RENAME_EXCHANGE is Linux's")
    with pytest.raises(FileNotFoundError):
        mlsr._files._exchange(tmp_path / "a", tmp_path / "missing")


KILLED = """
import os, sys
from mlsr._files import kill_point
for visit in range(1, 4):
    kill_point("other-step")
    print(visit, flush=True)
    kill_point("batch-saved")
"""


@pytest.mark.parametrize("wanted, printed, killed", [
    ("batch-saved", "1\n", True), ("batch-saved:1", "1\n", True), ("batch-saved:2", "1\n2\n", True),
    ("batch-saved:3", "1\n2\n3\n", True), ("batch-saved:4", "1\n2\n3\n", False), ("", "1\n2\n3\n", False),
    ("folder-swapped:2", "1\n2\n3\n", False), ("batch", "1\n2\n3\n", False),
])
def test_kill_point_kills_at_the_nth_visit_of_its_step(tmp_path, wanted, printed, killed):
    kill_point("batch-saved")  # off in this process: returns
    env = {**os.environ, "MLSR_TEST_KILL_AT": wanted}
    result = subprocess.run([sys.executable, "-c", KILLED], env=env, capture_output=True, text=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.stdout == printed
    assert result.returncode == (-9 if killed else 0)


def test_a_failing_exchange_names_the_error_and_the_path(tmp_path):
    import errno

    if not sys.platform.startswith("linux"):
        pytest.skip("RENAME_EXCHANGE is Linux's")
    (tmp_path / "a").mkdir()
    with pytest.raises(OSError) as caught:
        mlsr._files._exchange(tmp_path / "a", tmp_path / "missing")
    assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
        errno.ENOENT, os.strerror(errno.ENOENT), str(tmp_path / "missing"))


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "backup"])
def test_relative_paths_are_replaced_from_the_working_folder(tmp_path, monkeypatch, exchange):
    monkeypatch.chdir(tmp_path)
    if not exchange:
        monkeypatch.setattr(mlsr._files, "_exchange", lambda first, second: False)
    for name, text in (("index", "old"), ("staged", "new")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "file.txt").write_text(text)
    replace_folder(Path("staged"), Path("index"))
    assert (tmp_path / "index" / "file.txt").read_text() == "new" and not (tmp_path / "staged").exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "backup"])
def test_an_old_copy_removed_by_someone_else_meanwhile_is_no_error(tmp_path, monkeypatch, exchange):
    """Another process may clear the old copy (now at staging, or the backup) between the swap and its removal."""
    if not exchange:
        monkeypatch.setattr(mlsr._files, "_exchange", lambda first, second: False)
    target, staging = tmp_path / "index", tmp_path / ".index.tmp-1"
    for folder in (target, staging):
        folder.mkdir()

    def cleared_by_someone_else(step):
        if step == "folder-swapped":
            for leftover in tmp_path.glob(".index.*"):
                shutil.rmtree(leftover)

    monkeypatch.setattr(mlsr._files, "kill_point", cleared_by_someone_else)
    replace_folder(staging, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_a_stale_backup_and_staging_folder_of_this_process_are_cleared_first(tmp_path, monkeypatch):
    monkeypatch.setattr(mlsr._files, "_exchange", lambda first, second: False)
    target = tmp_path / "index"
    target.mkdir()
    for stale in (f".index.old-{os.getpid()}", f".index.tmp-{os.getpid()}"):
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "left.txt").write_text("from an earlier failed save")
    staging = staging_folder(target)
    assert list(staging.iterdir()) == []
    (staging / "file.txt").write_text("new")
    replace_folder(staging, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"] and (target / "file.txt").read_text() == "new"


def test_a_leftover_removed_by_another_process_meanwhile_is_no_error(tmp_path, monkeypatch):
    leftover = tmp_path / ".index.tmp-999999"
    leftover.mkdir()

    def dead_and_gone(pid):
        shutil.rmtree(leftover)
        return False

    monkeypatch.setattr(mlsr._files, "_process_alive", dead_and_gone)
    assert staging_folder(tmp_path / "index").is_dir() and not leftover.exists()


def test_staging_folder_creates_missing_parents(tmp_path):
    staging = staging_folder(tmp_path / "a" / "b" / "index")
    assert staging == tmp_path / "a" / "b" / f".index.tmp-{os.getpid()}" and staging.is_dir()


SWAP = """
import sys
from pathlib import Path
import mlsr._files
root = Path(sys.argv[1])
if sys.argv[2] == "backup":
    mlsr._files._exchange = lambda first, second: False
mlsr._files.replace_folder(root / "staged", root / "index")
"""


@pytest.mark.parametrize("branch", ["new", "exchange", "backup"])
@pytest.mark.parametrize("step", ["folder-staged", "folder-swapped"])
def test_the_crash_hook_cuts_every_swap_before_and_after(tmp_path, monkeypatch, branch, step):
    if branch == "backup":
        monkeypatch.setattr(mlsr._files, "_exchange", lambda first, second: False)
    replace_folder(folder_with(tmp_path / "warm-staged"), tmp_path / "warm")  # this process: hook off
    (tmp_path / "staged").mkdir()
    (tmp_path / "staged" / "file.txt").write_text("new")
    if branch != "new":
        (tmp_path / "index").mkdir()
        (tmp_path / "index" / "file.txt").write_text("old")
    env = {**os.environ, "MLSR_TEST_KILL_AT": step}
    result = subprocess.run([sys.executable, "-c", SWAP, str(tmp_path), branch], env=env, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == -9
    expected = {"folder-staged": "old", "folder-swapped": "new"}[step]
    if branch == "new" and step == "folder-staged":
        assert not (tmp_path / "index").exists()
    else:
        assert (tmp_path / "index" / "file.txt").read_text() == expected


def folder_with(path):
    path.mkdir()
    return path


JSONL_UNDER_C = r"""
import sys
from mlsr._files import read_jsonl, write_jsonl
write_jsonl(sys.argv[1], [{"name": "caf\u00e9"}])
assert read_jsonl(sys.argv[1]) == [{"name": "caf\u00e9"}]
"""


def test_json_lines_are_utf8_whatever_the_locale(tmp_path):
    write_jsonl(tmp_path / "here.jsonl", [{"name": "caf\u00e9"}])  # in this process first, then under C
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    result = subprocess.run([sys.executable, "-c", JSONL_UNDER_C, str(tmp_path / "rows.jsonl")], env=env,
                            capture_output=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "rows.jsonl").read_bytes() == '{"name": "caf\u00e9"}\n'.encode()
