"""Parameter initialization and shape inspection without allocation."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t5mtl.models.config import T5Config
from t5mtl.models.t5 import Transformer


def _dummy_inputs(batch: int = 1, length: int = 4):
    return jnp.ones((batch, length), jnp.int32), jnp.ones((batch, length), jnp.int32)


def init_boxed(config: T5Config, rng):
    """Params with their logical-partitioning boxes (for sharding)."""
    enc, dec = _dummy_inputs()
    return Transformer(config).init(rng, enc, dec)["params"]


def param_shapes(config: T5Config):
    """The param tree as jax.ShapeDtypeStructs (boxes removed); allocates nothing."""
    boxed = jax.eval_shape(lambda: init_boxed(config, jax.random.PRNGKey(0)))
    return nn.unbox(boxed)


def init_params(config: T5Config, rng=None):
    """A fresh random param tree as a plain nested dict of arrays."""
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return nn.unbox(jax.jit(lambda r: init_boxed(config, r))(rng))


def count_params(config: T5Config) -> int:
    """The parameter count, traced with scanned layers (one layer traced per
    stack, the same count as per-layer parameters)."""
    shapes = param_shapes(config.replace(scan_layers=True))
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))
