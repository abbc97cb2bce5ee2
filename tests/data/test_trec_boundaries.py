"""TREC run and qrels files at their boundaries: ties and near-ties in float32, the first rank, blank lines between
records, line numbers in errors, long lines, and UTF-8 whatever the locale."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mlsr.data.trec import _file_scores, read_qrels, read_run, write_run
from mlsr.errors import InputError
from tests.helpers.data import ROOT

ULP_BELOW_4 = 2.0 ** -22  # float32 spacing in [2, 4)
ULP_BELOW_1 = 2.0 ** -24  # float32 spacing just under 1


@pytest.mark.parametrize("scores, expected", [
    ([], []),
    ([5.0], [5.0]),
    ([3.0, 2.0], [3.0, 2.0]),
    ([3.0, 3.0], [3.0, 3.0 - ULP_BELOW_4]),
    ([3.0, 3.0, 3.0], [3.0, 3.0 - ULP_BELOW_4, 3.0 - 2 * ULP_BELOW_4]),
    ([1.0, 2.0], [1.0, 1.0 - ULP_BELOW_1]),  # out of order: pushed under the one above
    ([1.0, 1.0 - 1e-12], [1.0, 1.0 - ULP_BELOW_1]),  # distinct in float64, one float32
    ([3.0, 3.0, 1.0], [3.0, 3.0 - ULP_BELOW_4, 1.0]),
])
def test_file_scores_are_strictly_decreasing_float32_steps_by_hand(scores, expected):
    assert _file_scores(np.asarray(scores, dtype=np.float64)) == expected


def test_run_ranks_start_at_one_and_ties_keep_our_order(tmp_path):
    indices = np.array([[2, 0, 1, -1], [-1, -1, -1, -1]])
    scores = np.array([[3.0, 3.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    write_run(tmp_path / "run.trec", ["q1", "q2"], ["a", "b", "c"], indices, scores, "name")
    lines = (tmp_path / "run.trec").read_text(encoding="utf-8").splitlines()
    assert [line.split()[:4] for line in lines] == [["q1", "Q0", "c", "1"], ["q1", "Q0", "a", "2"],
                                                    ["q1", "Q0", "b", "3"]]
    assert np.float32(lines[1].split()[4]) == np.float32(3.0 - ULP_BELOW_4)
    assert read_run(tmp_path / "run.trec") == {"q1": ["c", "a", "b"]}


def test_blank_lines_between_records_are_skipped(tmp_path):
    path = tmp_path / "qrels.trec"
    path.write_text("q1 0 a 1\n\n   \nq1 0 b 2\nq2 0 c 0\n", encoding="utf-8")
    assert read_qrels(path) == {"q1": {"a": 1, "b": 2}, "q2": {"c": 0}}
    path.write_text("q1 Q0 a 1 2.0 r\n\nq1 Q0 b 2 1.0 r\n", encoding="utf-8")
    assert read_run(path) == {"q1": ["a", "b"]}


@pytest.mark.parametrize("reader, text, wanted", [
    (read_qrels, "q1 0 a 1\n\nq1 0 b\n", ":3: expected 4 columns, got 3: 'q1 0 b'"),
    (read_qrels, "q1 0 a 1\nq1 0 b high\n", ":2: relevance must be an integer: 'q1 0 b high'"),
    (read_run, "q1 Q0 a 1 2.0 r\nq1 Q0 b two 1.0 r\n", ":2: rank and score must be numbers: 'q1 Q0 b two 1.0 r'"),
    (read_run, "\n\n\nq1 Q0 a 1 much r\n", ":4: rank and score must be numbers: 'q1 Q0 a 1 much r'"),
])
def test_errors_name_the_file_the_one_based_line_and_the_line(tmp_path, reader, text, wanted):
    path = tmp_path / "file.trec"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        reader(path)
    assert str(caught.value) == f"{path}{wanted}."


def test_a_long_bad_line_is_cut_at_80_characters(tmp_path):
    path = tmp_path / "qrels.trec"
    line = "q" * 90 + " 0 a"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_qrels(path)
    assert str(caught.value) == f"{path}:1: expected 4 columns, got 3: {line[:80]!r}."


def test_empty_and_unreadable_files_say_so(tmp_path):
    (tmp_path / "empty.trec").write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"empty\.trec holds no judgements\.$"):
        read_qrels(tmp_path / "empty.trec")
    with pytest.raises(InputError, match=r"^cannot read .*missing\.trec \("):
        read_qrels(tmp_path / "missing.trec")
    (tmp_path / "latin1.trec").write_bytes("q1 0 caf\u00e9 1\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"^cannot read .*latin1\.trec \("):
        read_run(tmp_path / "latin1.trec")


ROUND_TRIP = r"""
import sys
import numpy as np
from mlsr.data.trec import read_qrels, read_run, write_qrels, write_run
folder = sys.argv[1]
write_run(folder + "/run.trec", ["q\u00e9"], ["caf\u00e9", "na\u00efve"], np.array([[1, 0]]), np.array([[2.0, 1.0]]), "r")
write_qrels(folder + "/qrels.trec", {"q\u00e9": {"caf\u00e9": 1}})
assert read_run(folder + "/run.trec") == {"q\u00e9": ["na\u00efve", "caf\u00e9"]}
assert read_qrels(folder + "/qrels.trec") == {"q\u00e9": {"caf\u00e9": 1}}
"""


def test_files_are_utf8_whatever_the_locale(tmp_path):
    (tmp_path / "here").mkdir()
    exec(ROUND_TRIP.replace("sys.argv[1]", repr(str(tmp_path / "here"))))  # in this process first, then under C
    # An ASCII locale without Python's UTF-8 mode or locale coercion: the platform default would fail here.
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    result = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "q\u00e9 Q0 na\u00efve 1".encode() in (tmp_path / "run.trec").read_bytes()
    assert (tmp_path / "qrels.trec").read_bytes() == "q\u00e9 0 caf\u00e9 1\n".encode()
