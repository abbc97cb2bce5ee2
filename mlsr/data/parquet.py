"""Reading parquet files (pyarrow): one place that checks columns and turns pyarrow's errors into ours."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator, Sequence

from mlsr.errors import ModelLoadError


def pyarrow():
    """The pyarrow module, or a one-line error saying how to install it."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401  (the submodule is what we read with)
    except ImportError:
        raise ModelLoadError("reading parquet datasets needs pyarrow: pip install 'mlsr[train]'"
                             " (or pip install -r requirements.txt).") from None
    return pa


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn pyarrow's and the OS's errors while reading `path` into one-line ModelLoadErrors."""
    pa = pyarrow()
    try:
        yield
    except (OSError, KeyError, ValueError, pa.ArrowException) as error:
        raise ModelLoadError(f"{path}: cannot read it as parquet ({error}).") from None


def open_parquet(path: Path, columns: Sequence[str]):
    """A `pyarrow.parquet.ParquetFile` that has `columns`, or a ModelLoadError naming the missing ones."""
    pa = pyarrow()
    with reading(path):
        reader = pa.parquet.ParquetFile(path)
    missing = [column for column in columns if column not in reader.schema_arrow.names]
    if missing:
        raise ModelLoadError(f"{path}: no column {', '.join(missing)} (has {reader.schema_arrow.names}).")
    return reader


def batches(path: Path, columns: Sequence[str], batch_rows: int) -> Iterator:
    """The record batches of `columns`, `batch_rows` rows at a time (memory stays flat on large files)."""
    reader = open_parquet(path, columns)
    with reading(path):
        yield from reader.iter_batches(batch_size=batch_rows, columns=list(columns))
