"""Mutation testing, one package at a time: `python tools/mutation.py TARGET [--max-children N]`.

Copies the working tree (tracked and untracked, not ignored files) into .mutation/TARGET/, writes TARGET's
[tool.mutmut] section there (its source files and only the test files that cover them), runs mutmut and prints
generated / killed / survived / timeouts with the survivors' names. mutmut caches results in
.mutation/TARGET/mutants/, so a rerun only redoes mutants of changed functions. `--sample N` runs and reports on N
mutants drawn at random, where a full run would take hours. Read one with `cd .mutation/TARGET && mutmut show NAME`.
Not part of CI: a developer's tool (docs/contributing.md).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# target: (files mutmut mutates, the test files that cover them). mlsr/index/kernels.py is never mutated: it is
# numba-jitted, and mutmut's trampolines cannot run inside a compiled function (pyproject.toml's do_not_mutate).
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "data": (["mlsr/data/trec.py"], ["tests/evaluation/test_metrics.py", "tests/data/test_trec_boundaries.py"]),
    "evaluation": (["mlsr/evaluation/metrics.py"],
                   ["tests/evaluation/test_metrics.py", "tests/evaluation/test_metrics_boundaries.py"]),
    "files": (["mlsr/_files.py"],
              ["tests/test_files.py", "tests/test_files_boundaries.py", "tests/test_files_release.py"]),
    "objectives": (["mlsr/training/objectives.py"], ["tests/training/test_objectives_boundaries.py"]),
    "head": (["mlsr/models/head.py"], ["tests/models/test_head.py", "tests/models/test_head_boundaries.py"]),
    "article": (["mlsr/articles/sections.py", "mlsr/articles/suggestions.py"],
                ["tests/articles/test_sections.py", "tests/articles/test_boundaries.py",
                 "tests/articles/test_exports.py", "tests/articles/test_suggestions_boundaries.py"]),
    # mlsr/index in three targets: the search path, the files' edits and publishing, the folder format.
    "index-search": (["mlsr/index/sparse.py", "mlsr/index/inverted.py", "mlsr/index/modes.py",
                      "mlsr/index/ranking.py", "mlsr/index/rows.py", "mlsr/index/blocks.py",
                      "mlsr/index/kernel_search.py", "mlsr/index/dense.py"],
                     ["tests/index/test_sparse.py", "tests/index/test_search_fast.py", "tests/index/test_precision.py",
                      "tests/index/test_query_arrays.py", "tests/index/test_hybrid.py", "tests/index/test_dense.py",
                      "tests/index/test_edit.py", "tests/index/test_search_boundaries.py",
                      "tests/index/test_api_boundaries.py", "tests/index/test_sparse_boundaries.py",
                      "tests/index/test_inverted_boundaries.py"]),
    # The folder's own modules run with their own three test files: every other index test also saves and loads
    # folders, and with all of them each of these ~2,000 mutants took ~15 s.
    "index-files": (["mlsr/index/edit.py", "mlsr/index/thumbnails.py", "mlsr/index/hub.py", "mlsr/index/publish.py"],
                    ["tests/index/test_edit.py", "tests/index/test_folder_format.py", "tests/index/test_forward.py",
                     "tests/index/test_manifest.py", "tests/index/test_thumbnails.py", "tests/index/test_hub_index.py",
                     "tests/index/test_publish.py"]),
    "index-folder": (["mlsr/index/folder.py", "mlsr/index/manifest.py", "mlsr/index/checks.py",
                      "mlsr/index/forward.py"],
                     ["tests/index/test_folder_format.py", "tests/index/test_manifest.py",
                      "tests/index/test_forward.py"]),
    "backends": (["mlsr/backends/local.py", "mlsr/backends/milvus.py", "mlsr/backends/milvus_export.py"],
                 ["tests/backends/test_milvus.py", "tests/backends/test_backends_boundaries.py",
                  "tests/backends/test_export_boundaries.py", "tests/backends/test_collection_boundaries.py"]),
}
# Settings that replace (or add to) the shared [tool.mutmut] ones for a target. A mutant's CPU limit is
# 2 * timeout_multiplier * (its tests' time + timeout_constant), counted over all threads. The index's tests run no
# torch, and a mutant of a search loop (`lo < hi` made `lo <= hi`) spins until that limit: the shared 10 would hold a
# core ~10 minutes per such mutant. But the index's tests also build and load folders in fixtures (time mutmut does not
# count) and search on three threads: at 1x with no constant, sound mutants that run every test (a message's words)
# passed for timeouts. The backends' tests start the app (app.py) and index-files' tests build from the photos in
# assets/: mutmut copies those into its mutants/ folder only when told to.
SETTINGS: dict[str, dict[str, object]] = {"index-search": {"timeout_multiplier": 1.0, "timeout_constant": 10.0},
                                          "index-files": {"timeout_multiplier": 1.0, "timeout_constant": 10.0,
                                                          "also_copy": ["assets"]},
                                          "index-folder": {"timeout_multiplier": 3.0, "timeout_constant": 10.0},
                                          "backends": {"also_copy": ["app.py"]}}
STATUS = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout",
          255: "timeout", None: "not checked", 33: "no tests", 5: "no tests", 34: "skipped",
          -11: "segfault"}  # a mutant that crashes the test process (e.g. wrong sizes handed to scipy's C routines)
DETECTED = ("killed", "timeout", "segfault")


def copy_tree(scratch: Path) -> None:
    """Refresh scratch/ from the working tree, keeping mutmut's cache (scratch/mutants/)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = ROOT / name, scratch / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def write_config(scratch: Path, sources: list[str], tests: list[str], settings: dict[str, object]) -> None:
    """Append the target's [tool.mutmut] keys to the repository's shared section in the scratch pyproject.toml, and
    replace the shared settings the target overrides."""
    text = (ROOT / "pyproject.toml").read_text()
    for key, value in settings.items():
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {json.dumps(value)}", text, count=1)
        if not found:
            text = text.replace("[tool.mutmut]\n", f"[tool.mutmut]\n{key} = {json.dumps(value)}\n", 1)
    section = f"only_mutate = {json.dumps(sources)}\npytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
    (scratch / "pyproject.toml").write_text(text.replace("[tool.mutmut]\n", "[tool.mutmut]\n" + section, 1))


def forget_stale_verdicts(scratch: Path, sources: list[str], tests: list[str], keep_verdicts: bool = False) -> None:
    """When the tests changed since the last run, have mutmut map tests to functions again and recheck every
    mutant not yet killed (mutmut itself only notices changed source functions and newly named tests); with
    `keep_verdicts`, only map them again (the mutants named to `--recheck` are rerun, the rest keep their verdict)."""
    shared = [*(ROOT / "tests").glob("**/conftest.py"), *(ROOT / "tests" / "helpers").glob("*.py")]
    files = sorted({*(ROOT / name for name in tests), *shared})
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()
    mark, stats = scratch / "mutants" / "tests.sha256", scratch / "mutants" / "mutmut-stats.json"
    if stats.exists() and (not mark.exists() or mark.read_text() != digest):
        _forget_test_map(scratch)
        for source in [] if keep_verdicts else sources:
            meta = scratch / "mutants" / (source + ".meta")
            if meta.exists():
                cached = json.loads(meta.read_text())
                codes = cached["exit_code_by_key"]
                cached["exit_code_by_key"] = {k: (v if STATUS.get(v) in ("killed", "segfault") else None)
                                              for k, v in codes.items()}
                meta.write_text(json.dumps(cached))
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(digest)


def verdicts(scratch: Path, sources: list[str]) -> dict[str, int | None]:
    """{mutant name: mutmut's exit code (None: not run yet)} for every mutant of the target's files."""
    codes: dict[str, int | None] = {}
    for source in sources:
        meta = scratch / "mutants" / (source + ".meta")
        codes.update(json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {})
    return codes


def sample(scratch: Path, sources: list[str], size: int, seed: int) -> list[str]:
    """`size` mutants drawn at random (seeded) from all of the target's as the source is now: mutmut first makes the
    mutants of changed functions (`print-time-estimates` makes them without testing any), so the same source and
    seed always give the same draw."""
    subprocess.run([sys.executable, "-m", "mutmut", "print-time-estimates"], cwd=scratch, capture_output=True)
    _forget_test_map(scratch)  # print-time-estimates marks the map current: the run would not map the tests again
    return random.Random(seed).sample(sorted(verdicts(scratch, sources)), size)


def _forget_test_map(scratch: Path) -> None:
    """Have mutmut time the tests and map them to functions again on its next run."""
    stats = scratch / "mutants" / "mutmut-stats.json"
    if stats.exists():
        data = json.loads(stats.read_text())
        data["duration_by_test"], data["tests_by_mangled_function_name"] = {}, {}
        stats.write_text(json.dumps(data))


def summary(scratch: Path, sources: list[str], only: set[str] | None = None) -> tuple[collections.Counter, list[str]]:
    """Count mutmut's verdicts for the target's files (or only these mutants); return the counts and survivors."""
    counts: collections.Counter = collections.Counter()
    survivors = []
    for name, code in sorted(verdicts(scratch, sources).items()):
        if only is None or name in only:
            status = STATUS.get(code, "suspicious")
            counts[status] += 1
            if status not in DETECTED:
                survivors.append(f"{name}: {status}")
    return counts, survivors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--tests", nargs="+", help="test files to run instead of the target's own")
    parser.add_argument("--recheck", nargs="+", metavar="MUTANT", default=[],
                        help="rerun only these mutants (say, survivors that new tests should kill); the others keep"
                             " their verdicts (adding tests can only kill more)")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="test N mutants drawn at random instead of all (when all would take hours), and report"
                             " on those N; those killed before keep their verdict, timeouts are run again")
    parser.add_argument("--seed", type=int, default=26, help="the draw of --sample")
    args = parser.parse_args()
    sources, tests = TARGETS[args.target]
    tests = args.tests or tests
    scratch = ROOT / ".mutation" / args.target
    scratch.mkdir(parents=True, exist_ok=True)
    copy_tree(scratch)
    tests = [name for name in tests if (ROOT / name).exists()]
    write_config(scratch, sources, tests, SETTINGS.get(args.target, {}))
    forget_stale_verdicts(scratch, sources, tests, keep_verdicts=bool(args.recheck) or bool(args.sample))
    drawn = sample(scratch, sources, args.sample, args.seed) if args.sample else None
    names = args.recheck
    if drawn is not None:
        codes = verdicts(scratch, sources)
        # timeouts too: under a CPU limit that was too tight, a slow survivor passes for one
        names = [name for name in drawn if STATUS.get(codes[name]) not in ("killed", "segfault")]
    returncode = 0
    if names or drawn is None:  # (mutmut run without names runs every mutant)
        run = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *names],
                             cwd=scratch, capture_output=True, text=True)
        if run.returncode:
            print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        returncode = run.returncode
    counts, survivors = summary(scratch, sources, set(drawn) if drawn is not None else None)
    generated = sum(counts.values())
    killed = sum(counts[status] for status in DETECTED)
    what = f"a sample of {generated} (seed {args.seed}) of {len(verdicts(scratch, sources))}" if drawn else generated
    print(f"{args.target}: generated {what}, killed {counts['killed']}, timeouts {counts['timeout']}, segfaults "
          f"{counts['segfault']}, survived {generated - killed} ({100 * killed / max(generated, 1):.1f}% killed)")
    print("\n".join(survivors))
    return returncode


if __name__ == "__main__":
    sys.exit(main())
