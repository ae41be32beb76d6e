"""t5mtl: multi-task text-to-text learning with seqio, Flax and JAX."""

__version__ = "0.1.0"


def load(path: str, **kwargs):
    """Loads a t5mtl model directory or an HF T5 directory (see t5mtl.api)."""
    from t5mtl.api import load as _load
    return _load(path, **kwargs)
