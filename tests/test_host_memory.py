"""t5mtl.host_memory: freed host memory is reused, not page-faulted back in.

Each test runs a fresh interpreter, since the setting applies at
`import t5mtl`, before jax starts its threads.
"""
import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")

# A jitted op whose 256 MiB output XLA allocates on every call (from its own
# threads), freed before the next call: the minor page faults of each call.
PROBE = """
import json, resource
import t5mtl
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0)
x = jnp.ones((64 * 2**20,), jnp.float32)
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = f(x).block_until_ready()
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"keeps": t5mtl.HOST_MALLOC_KEEPS_FREED_MEMORY, "faults": faults}))
"""
PAGES = 256 * 2**20 // os.sysconf("SC_PAGE_SIZE")


def _probe(**env):
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_steady_state_calls_reuse_freed_pages():
    out = _probe(T5MTL_HOST_MALLOC="keep")
    assert out["keeps"] is True
    # The first calls grow the heap; once it holds the buffer, a call
    # touches no new page (glibc's default faults in all 65536 every call).
    assert max(out["faults"][-3:]) < PAGES // 100, out["faults"]


def test_system_setting_keeps_glibc_defaults():
    out = _probe(T5MTL_HOST_MALLOC="system")
    assert out["keeps"] is False
    # The buffer is mmapped and unmapped around every call: all its pages fault.
    assert min(out["faults"][-3:]) > PAGES * 9 // 10, out["faults"]


def test_unknown_setting_is_an_error_naming_it():
    proc = subprocess.run([sys.executable, "-c", "import t5mtl"], capture_output=True,
                          text=True, env={**os.environ, "T5MTL_HOST_MALLOC": "jemalloc"})
    assert proc.returncode != 0
    assert "T5MTL_HOST_MALLOC='jemalloc'" in proc.stderr
