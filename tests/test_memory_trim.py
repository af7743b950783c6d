"""A worker gives the memory a burst freed back to the OS (glibc's malloc_trim, once a second)."""

import asyncio
import subprocess
import sys
import textwrap

import pytest

from aiproxy import memory

pytestmark = pytest.mark.skipif(memory.malloc_trim() is None, reason="not glibc")

# 100 MB in 1 KB blocks (above pymalloc's limit, so from the C heap); all freed but the last one,
# which pins the top of the heap: glibc alone keeps the pages, a trim returns them.
BURST = textwrap.dedent(
    """
    import sys
    from aiproxy.memory import malloc_trim

    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    blocks = [bytes(1024) for _ in range(100_000)]
    last = blocks[-1]
    del blocks
    before = rss_mb()
    if sys.argv[1] == "trim":
        malloc_trim()(0)
    print(before - rss_mb())
    """
)


def freed_by(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", BURST, mode], capture_output=True, text=True, check=True)
    return float(out.stdout)


def test_a_trim_hands_freed_heap_back_to_the_os():
    assert freed_by("none") < 5
    assert freed_by("trim") > 50


async def test_the_trim_runs_again_and_again():
    calls = []
    task = asyncio.create_task(memory.trim_periodically(calls.append, seconds=0.01))
    await asyncio.sleep(0.1)
    task.cancel()

    assert len(calls) >= 3
    assert set(calls) == {0}
