"""t5mtl.train.dispatch: one step in flight on CPU under the keep malloc
policy, for steps whose temporary buffer is large; asynchronous otherwise."""
import types

import jax
import jax.numpy as jnp
import numpy as np

from t5mtl import host_memory
from t5mtl.train import dispatch, partitioning

GLIBC = host_memory.platform.libc_ver()[0] == "glibc"


def _cpu_mesh():
    return partitioning.create_mesh((1, 1, 1), jax.devices("cpu")[:1])


def test_one_step_in_flight_only_on_cpu_meshes_under_the_keep_policy(monkeypatch):
    cpu_mesh = _cpu_mesh()
    tpu = types.SimpleNamespace(platform="tpu")
    fake = types.SimpleNamespace(devices=np.array([[[tpu, tpu]]], dtype=object))
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")      # not the keep policy
    assert not dispatch.one_step_in_flight(cpu_mesh)
    monkeypatch.delenv("GLIBC_TUNABLES")                                # glibc's defaults
    assert not dispatch.one_step_in_flight(cpu_mesh)
    monkeypatch.setenv("GLIBC_TUNABLES", host_memory.tunables("keep"))
    assert dispatch.one_step_in_flight(cpu_mesh) == GLIBC
    assert not dispatch.one_step_in_flight(fake)
    # Only for steps whose temporary buffer is large (None: unknown, large).
    assert dispatch.ONE_STEP_MIN_TEMP_BYTES == host_memory.SMALL_BUFFER_BYTES == 256 << 20
    big, small = dispatch.ONE_STEP_MIN_TEMP_BYTES, dispatch.ONE_STEP_MIN_TEMP_BYTES - 1
    assert dispatch.one_step_in_flight(cpu_mesh, big) == GLIBC
    assert not dispatch.one_step_in_flight(cpu_mesh, small)
    assert dispatch.one_step_in_flight(cpu_mesh, None) == GLIBC


def test_temp_bytes_reads_the_compiled_steps_buffer_size():
    x = jnp.ones((256, 256), jnp.float32)
    compiled = jax.jit(lambda x: jnp.tanh(x @ x) @ x).lower(x).compile()
    got = dispatch.temp_bytes(compiled)
    assert got == compiled.memory_analysis().temp_size_in_bytes
    assert 256 * 256 * 4 <= got < 64 << 20      # holds the intermediate tanh(x @ x)
    assert dispatch.temp_bytes(types.SimpleNamespace(memory_analysis=lambda: None)) is None


class _FakeReleaseWait:
    made: list = []

    def __init__(self, enabled):
        self.enabled, self.calls = enabled, 0
        _FakeReleaseWait.made.append(self)

    def __call__(self):
        self.calls += 1


def test_dispatch_gate_blocks_on_the_state_then_waits_for_the_release(monkeypatch):
    events = []
    monkeypatch.setattr(dispatch.jax, "block_until_ready", lambda x: events.append(x) or x)
    monkeypatch.setattr(host_memory, "ReleaseWait", _FakeReleaseWait)
    _FakeReleaseWait.made = []
    mesh = _cpu_mesh()

    monkeypatch.setattr(host_memory, "keeps_freed_memory", lambda *a: False)
    gate = dispatch.dispatch_gate(mesh, None)
    gate("state 0")
    assert events == [] and _FakeReleaseWait.made == []          # asynchronous dispatch

    monkeypatch.setattr(host_memory, "keeps_freed_memory", lambda *a: True)
    small = dispatch.dispatch_gate(mesh, dispatch.ONE_STEP_MIN_TEMP_BYTES - 1)
    small("state 0")
    assert events == [] and _FakeReleaseWait.made == []          # small buffer: not gated

    gate = dispatch.dispatch_gate(mesh, dispatch.ONE_STEP_MIN_TEMP_BYTES)
    (release_wait,) = _FakeReleaseWait.made
    assert release_wait.enabled is True and release_wait.calls == 0
    gate("state 0")
    gate("state 1")
    assert events == ["state 0", "state 1"] and release_wait.calls == 2
