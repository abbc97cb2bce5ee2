"""The app's first start: which missing index it builds from published vectors, and what to say when it cannot."""

from __future__ import annotations

import sys
from pathlib import Path

from mlsr.settings import DEFAULT_DATASET, DEFAULT_INDEX


def prepare_command(index_dir: str | Path, dataset: str | Path = DEFAULT_DATASET) -> str:
    """The command that builds a missing default index, for messages."""
    extra = "" if str(dataset) == DEFAULT_DATASET else f" --dataset {dataset}"
    return f"python -m mlsr prepare --index {index_dir}{extra}"


def builds_on_first_start(index_dir: str | Path, dataset: str | None) -> bool:
    """The app builds a missing index from published vectors when it is the default one or a dataset is named."""
    return dataset is not None or Path(index_dir) == Path(DEFAULT_INDEX)


def missing_index_hint(index_dir: str | Path, dataset: str | None) -> str:
    """What to run when the app's index is missing and could not be built here (offline), or ''."""
    if Path(index_dir).exists() or not builds_on_first_start(index_dir, dataset):
        return ""
    dataset = dataset or DEFAULT_DATASET
    size = " (a download of roughly 0.3 GB)" if dataset == DEFAULT_DATASET else ""
    return (f" To build it from the published vectors of {dataset}{size}, run"
            f" `{prepare_command(index_dir, dataset)}` on a machine that reaches the Hugging Face Hub.")


def build_missing_index(index_dir: str | Path, dataset: str | None, *, head: str, tokenizer: str,
                        device: str | None = None) -> None:
    """Build a missing index from published vectors when the app would (see `builds_on_first_start`).

    Runs before the launch, with a console progress bar; later starts find the folder and reuse it.
    """
    from mlsr.cli.progress import progress_bar
    from mlsr.ingest.published import ensure_index

    index = Path(index_dir)
    if index.exists() or not builds_on_first_start(index, dataset):
        return
    dataset = dataset or DEFAULT_DATASET
    print(f"mlsr: first start: building {index} from {dataset} (once; later starts reuse it)", file=sys.stderr)
    bar, set_total = progress_bar(f"building {index}")
    with bar:
        ensure_index(index, dataset=dataset, head=head, tokenizer=tokenizer, device=device,
                     progress=bar.update, total=set_total)
