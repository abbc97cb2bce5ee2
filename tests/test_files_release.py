"""release_pages drops a memory-mapped array's pages from this process's resident memory, through views of it, and
leaves anything else alone: measured in /proc/self/smaps (Linux), the kernel's own count of the mapping's pages."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mlsr._files import release_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
PAGES = 256  # 1 MiB of 4 KiB pages


def resident_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (0 when it is not mapped or no page is resident)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps", encoding="utf-8"):
        if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.fixture
def mapped(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.arange(PAGES * 1024, dtype=np.float32))
    array = np.load(path, mmap_mode="r")
    assert float(array.sum()) > 0  # every page read once, as a load's checks read them
    assert resident_kib(path) >= PAGES * 4
    return path, array


@pytest.mark.parametrize("view", [lambda a: a, lambda a: a[PAGES:], lambda a: np.asarray(a)[1:][::2]],
                         ids=["the memmap", "a memmap slice", "a plain view of a view"])
def test_the_pages_of_a_mapped_array_leave_resident_memory(mapped, view):
    path, array = mapped
    release_pages(view(array))
    assert resident_kib(path) < 16  # at most a few pages (the header) stay
    assert float(array[-1]) == PAGES * 1024 - 1  # and the data is still there: read again from the page cache


def test_every_array_given_is_released_and_others_are_left_alone(mapped, tmp_path):
    path, array = mapped
    other_path = tmp_path / "other.npy"
    np.save(other_path, np.ones(PAGES * 1024, dtype=np.float32))
    other = np.load(other_path, mmap_mode="r")
    assert float(other.sum()) == PAGES * 1024
    in_memory = np.ones(10)
    release_pages(in_memory, None, array, other)  # arrays in memory and None first: the mapped ones still released
    assert resident_kib(path) < 16 and resident_kib(other_path) < 16
    assert in_memory.sum() == 10


def test_what_cannot_be_released_is_left_without_an_error(monkeypatch):
    """Nothing to release is no error: an object that is no array, a closed mapping (ValueError from madvise), an
    advice the kernel refuses (OSError): the pages just stay resident."""
    import mmap

    class Mapped:  # what release_pages looks for: an array's `_mmap`
        def __init__(self, mapping):
            self._mmap = mapping

    closed = mmap.mmap(-1, mmap.PAGESIZE)
    closed.close()
    release_pages([1, 2, 3], "text", Mapped(closed))
    monkeypatch.setattr(mmap, "MADV_DONTNEED", 123456, raising=False)  # no such advice: EINVAL
    release_pages(Mapped(mmap.mmap(-1, mmap.PAGESIZE)))
