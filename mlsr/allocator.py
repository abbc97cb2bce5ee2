"""Resident memory that matches the index: glibc's allocator told to give large freed blocks back to the system.

glibc serves blocks above its mmap threshold (128 KB) with their own mappings, returned when freed; but after such
a block is freed it raises the threshold (up to 32 MB), so that later large arrays -- a load's checks, a search's
temporary scores -- come from heaps that are never returned. Loading a 300,000-document index left ~90 MB more
resident that way (bench/bench_memory.py). Fixing the threshold keeps large arrays in their own mappings. The app
and the command line call it once at start; elsewhere (not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
_THRESHOLD_BYTES = 128 * 1024  # glibc's default, kept fixed


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold at its default, so freed large arrays go back to the system; True when set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
