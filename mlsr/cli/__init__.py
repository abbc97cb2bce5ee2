"""The command line: `python -m mlsr COMMAND` (or `mlsr COMMAND` once installed). Errors print one line, never a
traceback. Commands: build-index, search, terms, suggest-article, import-dense, prepare, evaluate, atomic, verify,
encode-dense, train, export, push-index, add, remove, export-st, push-st.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from mlsr.checks import reason
from mlsr.errors import MlsrError
from mlsr.allocator import return_large_blocks
from mlsr.threads import apply_threads


class _OneLineParser(argparse.ArgumentParser):
    """A parser whose usage errors are one line (`error: python -m mlsr search: argument -k: ...`), exit 2, as
    every other error of the command line; `--help` still prints the whole usage."""

    def error(self, message: str):  # argparse's hook
        self.exit(2, f"error: {self.prog}: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser; building it imports no model code (torch loads only when a command needs it)."""
    from mlsr.cli import articles, editing, evaluating, indexing, searching, st, training

    parser = _OneLineParser(prog="python -m mlsr", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (indexing, editing, searching, articles, evaluating, training, st):
        group.add_commands(commands)
    return parser


_HINT = re.compile(r"\b([a-z][a-z0-9_]*)=(True|None|'[^'\s]*'|[A-Z]+\b)")


def _as_flags(message: str) -> str:
    """A library message's parameter hints as this command line's flags: `replace=True` -> `--replace`,
    `amp='bf16'` -> `--amp bf16`, `mlm=None` -> `--mlm none`, `expect_r1=PERCENT` -> `--expect-r1 PERCENT`
    (library errors speak of parameters)."""
    def flag(match: re.Match) -> str:
        name, value = "--" + match.group(1).replace("_", "-"), match.group(2)
        return name if value == "True" else f"{name} {'none' if value == 'None' else value.strip(chr(39))}"

    return _HINT.sub(flag, message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (2 for a usage or input error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        apply_threads(1)  # one command at a time: every available core (MLSR_THREADS overrides)
        return_large_blocks()  # freed large arrays go back to the system (mlsr.allocator)
        return args.run(args)
    except MlsrError as error:
        print(f"error: {_as_flags(str(error))}", file=sys.stderr)
        return 2
    except (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        # a file the command was pointed at, refused by the operating system where no check of ours caught it
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{reason(error)}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
