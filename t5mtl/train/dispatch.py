"""When a training loop may dispatch its next step.

JAX dispatches a jitted step asynchronously: the loop gets the new state's
futures back at once and can dispatch the following step while this one
runs. On CPU under the ``keep`` malloc policy (t5mtl/host_memory.py) that
overlap has a cost: two steps' temporary buffers alive at once leave holes
in a heap that never returns memory, and the process grows. `dispatch_gate`
gives a loop the one call it makes before each dispatch; `one_step_in_flight`
says when that call waits.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
from jax.sharding import Mesh

from t5mtl import host_memory

# Below this temporary-buffer size a CPU step under the keep policy is
# dispatched asynchronously after all (`one_step_in_flight`).
ONE_STEP_MIN_TEMP_BYTES = host_memory.SMALL_BUFFER_BYTES


def temp_bytes(compiled: Any) -> int | None:
    """The temporary buffer an AOT-compiled step allocates on each call
    (``compiled.memory_analysis()``), or None where the backend does not say."""
    analysis = compiled.memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def one_step_in_flight(mesh: Mesh, step_temp_bytes: int | None = None) -> bool:
    """Whether a loop should run one step at a time (wait for a step's
    outputs, then `host_memory.ReleaseWait`, before dispatching the next):
    on CPU meshes in a process started with the ``keep`` malloc policy, for
    steps whose temporary buffer (``step_temp_bytes``, `temp_bytes`; None:
    unknown, treated as large) is at least ``ONE_STEP_MIN_TEMP_BYTES``.

    Under that policy two steps' buffers of gigabytes alive at once fragment
    the heap. On CPU the devices are the host's own cores, so asynchronous
    dispatch only overlaps the loop's Python (and its input pipeline) with
    the step; for small steps that overlap is worth more than it costs, and
    two small buffers cost little memory (docs/performance.md)."""
    large = step_temp_bytes is None or step_temp_bytes >= ONE_STEP_MIN_TEMP_BYTES
    return (large and all(d.platform == "cpu" for d in mesh.devices.flat)
            and host_memory.keeps_freed_memory())


def dispatch_gate(mesh: Mesh, step_temp_bytes: int | None = None) -> Callable[[Any], None]:
    """What a training loop calls with its current state just before it
    dispatches the next step. Under `one_step_in_flight` it waits for that
    state, then for the previous step's buffer to be freed
    (`host_memory.ReleaseWait`); otherwise it does nothing, and steps are
    dispatched asynchronously."""
    if not one_step_in_flight(mesh, step_temp_bytes):
        return lambda state: None
    release_wait = host_memory.ReleaseWait(True)

    def gate(state: Any) -> None:
        jax.block_until_ready(state)
        release_wait()

    return gate
