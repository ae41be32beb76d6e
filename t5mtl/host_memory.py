"""Host memory: back XLA's large per-step buffers with transparent huge pages.

XLA's CPU runtime allocates each executable's temporary buffer (about 2.4 GB
for a t5_1_1_small train step at 8 x 512 tokens) with malloc on every call.
glibc serves a request that big with a fresh mmap and unmaps it on free, so
every step page-faults its whole working set back in, 4 KiB at a time: about
645k minor faults and 1 s of kernel time per step on the 2-core benchmark
machine, and the step runs ~1.2x slower (docs/performance.md).

glibc's `glibc.malloc.hugetlb=1` tunable makes malloc ask for transparent huge
pages (madvise) on the memory it maps: 2 MiB pages, 512x fewer faults, and the
memory still goes back to the kernel on free. (Keeping freed memory in the
heap instead, with mallopt, removes the faults too, but under asynchronous
dispatch the heap fragments and grew to 2.7x the peak.) Tunables are read
only when a process starts, so `t5mtl` (the CLI) re-executes itself once with
the tunable added to GLIBC_TUNABLES. In Python or a notebook, start the
interpreter with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` to get the same.

T5MTL_HOST_MALLOC=system keeps glibc's defaults. Elsewhere (macOS, musl), or
when GLIBC_TUNABLES already sets glibc.malloc.hugetlb, nothing changes.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

ENV_VAR = "T5MTL_HOST_MALLOC"
TUNABLE = "glibc.malloc.hugetlb=1"


def _choice(environ: Mapping[str, str]) -> str:
    choice = environ.get(ENV_VAR, "huge_pages")
    if choice not in ("huge_pages", "system"):
        raise ValueError(f"{ENV_VAR}={choice!r}: expected 'huge_pages' (the default) or "
                         f"'system' (glibc's own malloc settings)")
    return choice


def huge_page_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """`environ` plus the glibc tunable, or None where it does not apply: not
    glibc, T5MTL_HOST_MALLOC=system, or GLIBC_TUNABLES already choosing."""
    if _choice(environ) == "system" or platform.libc_ver()[0] != "glibc":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(t for t in (tunables, TUNABLE) if t)}


def reexec_with_huge_pages() -> None:
    """Replaces this process with the same command line plus the tunable
    (same pid, same open files); returns only where nothing needs to change.
    Call it first thing in a program's entry point, never from a library."""
    env = huge_page_environment()
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
