"""Host memory: glibc malloc policies for XLA's large per-step buffers.

XLA's CPU runtime allocates each executable's temporary buffer (gigabytes
for a t5_1_1_small train step at 8 x 512 tokens) with malloc on every call.
By default glibc serves a request that big with a fresh mmap and unmaps it on
free, so every step page-faults its whole working set back in, and the
kernel clears every page again. T5MTL_HOST_MALLOC chooses one of three
policies; unset, `default_policy` picks ``keep`` where XLA can only run on
the CPU and ``system`` where JAX has an accelerator to use. An explicit
value wins everywhere. Measurements behind these choices:
docs/performance.md.

* ``keep`` (the default for CPU-only runs): malloc never maps or unmaps
  large blocks itself (``mmap_max=0``), never returns freed memory to the
  kernel (``trim_threshold``), serves every thread from one heap
  (``arena_max=1``: a thread arena that cannot hold a block this big maps it
  separately whatever ``mmap_max`` says, so the block a step frees would not
  be found again by the next step), and backs the heap with huge pages
  (``hugetlb=1``). After the first steps a train step faults no page at all,
  so its time no longer depends on what the kernel or the hypervisor did
  with freed memory meanwhile (on a VM with free page reporting, memory
  freed between steps can be handed to the host and must be faulted back
  in, at a higher cost). The process keeps its peak footprint, and two
  steps' buffers must not overlap, or the heap fragments and grows: under
  this policy the trainer runs steps whose buffer is large one at a time on
  CPU (t5mtl.train.dispatch.one_step_in_flight) and waits for `ReleaseWait`
  before each dispatch.
* ``huge_pages`` (opt-in): ``hugetlb=1``. Memory still goes back to the
  kernel on free, but in 2 MiB pages: far fewer faults than with 4 KiB
  pages, and no single arena.
* ``system`` (the default with an accelerator): glibc's own settings; the
  CLI does not re-execute itself. There XLA's step buffers are device
  memory, no host-side gain has been measured, and ``keep``'s single arena
  for every thread (tf.data's included) would be a risk on hosts whose many
  cores feed the input pipeline.

Tunables are read only when a process starts, so `t5mtl` (the CLI)
re-executes itself once with them added to GLIBC_TUNABLES. In Python or a
notebook, start the interpreter with the value `malloc_environment()` gives.
Elsewhere (macOS, musl), under ``system``, or when GLIBC_TUNABLES already
sets any ``glibc.malloc`` tunable, nothing changes.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import sys
import time
from typing import Callable, Mapping

from t5mtl.errors import T5mtlError

ENV_VAR = "T5MTL_HOST_MALLOC"
POLICIES: dict[str, tuple[str, ...]] = {
    "keep": ("glibc.malloc.hugetlb=1", "glibc.malloc.arena_max=1", "glibc.malloc.mmap_max=0",
             f"glibc.malloc.trim_threshold={1 << 40}"),
    "huge_pages": ("glibc.malloc.hugetlb=1",),
    "system": (),
}


def accelerator_plugins(environ: Mapping[str, str] = os.environ) -> list[str]:
    """What would give JAX a backend other than the CPU in this Python,
    found without importing jax: PJRT plugin modules (the ``jax_plugins``
    namespace package and entry points, as jax discovers them; CUDA and ROCm
    come that way), libtpu, and the environment variables that point jax at
    a plugin library."""
    found = [f"${name}" for name in ("TPU_LIBRARY_PATH", "PJRT_NAMES_AND_LIBRARY_PATHS")
             if environ.get(name)]
    if importlib.util.find_spec("libtpu") is not None:
        found.append("libtpu")
    spec = importlib.util.find_spec("jax_plugins")
    if spec is not None and spec.submodule_search_locations:
        found += [f"jax_plugins.{m.name}"
                  for m in pkgutil.iter_modules(spec.submodule_search_locations)]
    found += [e.value for e in importlib.metadata.entry_points(group="jax_plugins")]
    return sorted(set(found))


def default_policy(environ: Mapping[str, str] = os.environ) -> str:
    """``keep`` where XLA runs on the CPU only, ``system`` (glibc's defaults,
    no re-exec) where JAX has an accelerator. JAX_PLATFORMS (or the older
    JAX_PLATFORM_NAME) decides when set: keep when it names the CPU alone.
    Unset, keep when `accelerator_plugins` finds nothing."""
    platforms = environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or ""
    names = {p.strip().lower() for p in platforms.split(",") if p.strip()}
    cpu_only = names == {"cpu"} if names else not accelerator_plugins(environ)
    return "keep" if cpu_only else "system"


def policy(environ: Mapping[str, str] = os.environ) -> str:
    """The T5MTL_HOST_MALLOC policy (`default_policy` when unset); a value
    that is not one is a `T5mtlError`."""
    choice = environ.get(ENV_VAR) or default_policy(environ)
    if choice not in POLICIES:
        raise T5mtlError(f"{ENV_VAR}={choice!r}: expected one of {', '.join(POLICIES)} "
                         f"(unset: keep on CPU-only hosts, system with an accelerator)")
    return choice


def tunables(name: str) -> str:
    """The GLIBC_TUNABLES value of a policy ("" for ``system``)."""
    return ":".join(POLICIES[name])


def malloc_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """`environ` plus the policy's glibc tunables, or None where nothing
    changes: not glibc, the ``system`` policy, or GLIBC_TUNABLES already
    setting a glibc.malloc tunable (the user's, or the ones a re-exec added)."""
    added = tunables(policy(environ))
    current = environ.get("GLIBC_TUNABLES", "")
    if not added or platform.libc_ver()[0] != "glibc" or "glibc.malloc." in current:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(t for t in (current, added) if t)}


def reexec_with_malloc_policy() -> None:
    """Replaces this process with the same command line plus the tunables
    (same pid, same open files); returns only where nothing needs to change.
    Call it first thing in a program's entry point, never from a library."""
    env = malloc_environment()
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def keeps_freed_memory(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process started with the ``keep`` policy's tunables."""
    current = environ.get("GLIBC_TUNABLES", "").split(":")
    return platform.libc_ver()[0] == "glibc" and all(t in current for t in POLICIES["keep"])


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def heap_bytes_in_use() -> Callable[[], int] | None:
    """A function giving the bytes malloc has handed out and not yet had
    back (glibc's mallinfo2), or None without glibc >= 2.33."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return lambda: fn().uordblks


def release_free_heap() -> bool:
    """Returns the heap's free pages to the kernel (glibc's malloc_trim(0),
    which also releases whole free pages inside the heap); False without
    glibc. The ``keep`` policy's trim threshold stops malloc from ever doing
    this by itself."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


# Two of XLA's step buffers smaller than this may be alive at once under the
# ``keep`` policy: the overlap costs little memory, and keeping such steps
# apart costs more time than it saves (ReleaseWait's slack; the trainer's
# one-step-at-a-time threshold, t5mtl.train.dispatch.one_step_in_flight).
SMALL_BUFFER_BYTES = 256 << 20


class ReleaseWait:
    """Before each dispatch, waits until the previous step's temporary
    buffer is back in the heap.

    XLA marks a step's outputs ready before its runtime frees the step's
    temporary buffer, so a loop that dispatches as soon as the outputs are
    ready makes the next step allocate its buffer beside the old one: under
    the ``keep`` policy the heap then fragments and grows. Each call polls
    mallinfo2 until the bytes in use are back to where they were at the
    previous dispatch, plus `slack_bytes`. A buffer smaller than the slack
    is not waited for: its overlap costs little memory, and the wait would
    cost small steps more time than it saves. (Polling is not free either:
    each mallinfo2 call walks the heap holding the lock the freeing thread
    needs.) After `timeout_s` the new level becomes the baseline (a
    checkpoint's host copies, say) instead of being waited for again. Does
    nothing unless `enabled` (the ``keep`` policy, one step in flight).

    The first call waits up to `timeout_s` for a buffer still being freed
    (its level, not one with that buffer held, is the first baseline). It
    also hands what setup freed back to the kernel
    (`release_free_heap`): under ``keep`` nothing else would, and the first
    step's buffer would land above the jitted init's freed temporaries,
    adding them to the run's peak RSS (docs/performance.md).
    """

    def __init__(self, enabled: bool, slack_bytes: int = SMALL_BUFFER_BYTES,
                 timeout_s: float = 0.2):
        self.in_use = heap_bytes_in_use() if enabled else None
        self.slack_bytes, self.timeout_s = slack_bytes, timeout_s
        self.baseline: int | None = None
        self.waited_s = 0.0

    def __call__(self) -> None:
        if self.in_use is None:
            return
        if self.baseline is None:
            release_free_heap()
            # A buffer freed just before this first call may still be on its
            # way back: a baseline taken with it held would let every later
            # step dispatch beside its predecessor's buffer.
            target = self.in_use() - self.slack_bytes
        else:
            target = self.baseline + self.slack_bytes
        start = time.perf_counter()
        while self.in_use() > target and time.perf_counter() - start < self.timeout_s:
            time.sleep(0.0002)
        self.waited_s += time.perf_counter() - start
        self.baseline = self.in_use()
