"""Host memory: keep freed memory in the process for reuse (glibc malloc).

XLA's CPU runtime allocates each executable's temporary buffer (about 2 GB
for a t5_1_1_small train step at 8 x 512 tokens) and its large outputs with
malloc on every call, from its own worker threads. glibc serves requests that
big with a fresh mmap and returns them to the kernel on free, so every train
step page-faults its whole working set back in (about 645k minor faults and
1 s of kernel time per step on the 2-core benchmark machine; the step runs
~1.2x faster without them, docs/performance.md).

`keep_freed_memory` tells glibc to keep freed memory instead: one malloc arena
for all threads (a worker thread's arena cannot hold a block larger than
64 MiB and would mmap it anyway), no mmap for large blocks, and no trimming
of the heap. The next step then reuses the same pages. The process's resident
memory stays at its peak instead of shrinking between steps; the peak itself
does not grow.

`import t5mtl` calls it, before jax starts its threads (a thread that has
already allocated keeps its own arena). Set T5MTL_HOST_MALLOC=system to keep
glibc's defaults. Elsewhere (macOS, musl, a preloaded tcmalloc or jemalloc)
it does nothing.
"""
from __future__ import annotations

import ctypes
import os
import platform

ENV_VAR = "T5MTL_HOST_MALLOC"

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

SETTINGS = (
    (M_ARENA_MAX, 1),        # every thread allocates from the main (brk) heap
    (M_MMAP_MAX, 0),         # large blocks come from the heap too, not from mmap
    (M_TRIM_THRESHOLD, -1),  # -1: never give the heap's top back to the kernel
)


def keep_freed_memory() -> bool:
    """Applies the settings above through glibc's mallopt; True if it did.

    False where the C library is not glibc, or T5MTL_HOST_MALLOC=system.
    """
    choice = os.environ.get(ENV_VAR, "keep")
    if choice not in ("keep", "system"):
        raise ValueError(f"{ENV_VAR}={choice!r}: expected 'keep' (the default) or 'system'")
    if choice == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
