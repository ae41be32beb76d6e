"""t5mtl: multi-task text-to-text learning with seqio, Flax and JAX."""

__version__ = "0.1.0"

# Before jax starts its threads: keep freed host memory for reuse instead of
# page-faulting XLA's per-step buffers back in (t5mtl/host_memory.py).
from t5mtl.host_memory import keep_freed_memory as _keep_freed_memory

HOST_MALLOC_KEEPS_FREED_MEMORY = _keep_freed_memory()


def load(path: str, **kwargs):
    """Loads a t5mtl model directory or an HF T5 directory (see t5mtl.api)."""
    from t5mtl.api import load as _load
    return _load(path, **kwargs)
