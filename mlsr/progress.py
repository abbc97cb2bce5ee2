"""What long work shows while it runs, in the CLI and in the app's first start: tqdm bars, and no library chatter."""

from __future__ import annotations

import sys
from collections.abc import Callable


class LazyBar:
    """A tqdm bar that appears once its total is known (so an early error prints one clean line)."""

    def __init__(self, desc: str, unit: str = "vec") -> None:
        self.desc, self.unit, self.bar = desc, unit, None

    def total(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=self.unit, desc=self.desc)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> LazyBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_bar(desc: str, unit: str = "vec") -> tuple[LazyBar, Callable[[int], None]]:
    """A progress bar and the function that sets its total (and shows it)."""
    bar = LazyBar(desc, unit)
    return bar, bar.total


def quiet_transformers(verbose: bool) -> None:
    """Keep transformers' per-load progress bars and notices out of the command's output."""
    if verbose:
        return
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def print_skipped(skipped: list[tuple[str, str]], shown: int = 20) -> None:
    """The images a build or an add could not take, on standard error: a count, then `name: reason` lines."""
    if not skipped:
        return
    print(f"skipped {len(skipped)} (unreadable images and folders, links not followed):", file=sys.stderr)
    for name, reason in skipped[:shown]:
        print(f"  {name}: {reason}", file=sys.stderr)


def print_pictures(made: int, failed: list[tuple[str, str]], seconds: float, shown: int = 20) -> None:
    """Thumbnails made (and how fast), then the items left without one and why, on standard error."""
    rate = f", {made / seconds:.1f}/s" if seconds > 0 and made else ""
    print(f"thumbnails: {made} made in {seconds:.1f} s{rate}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} items show a placeholder (no picture could be had; `python -m mlsr thumbnails --index"
              " DIR` tries again):", file=sys.stderr)
    for name, reason in failed[:shown]:
        print(f"  {name}: {reason}", file=sys.stderr)
