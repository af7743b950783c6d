"""Freed heap memory handed back to the OS: glibc keeps what a burst of requests freed.

A burst (50 concurrent requests, a large audit batch) grows the C heap; what it frees lies in
holes below the top of the heap, which glibc never returns by itself, so a worker's RSS stays
at its high-water mark. malloc_trim(0) gives those pages back (measured: 3-6 MB per worker after
the benchmark's load) in a fraction of a millisecond; once a second is unmeasurable in CPU.
"""

import asyncio
import ctypes
from collections.abc import Callable

TRIM_SECONDS = 1.0


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


async def trim_periodically(trim: Callable[[int], int], seconds: float = TRIM_SECONDS) -> None:
    while True:
        await asyncio.sleep(seconds)
        trim(0)
