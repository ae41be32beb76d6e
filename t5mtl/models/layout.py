"""Convert params between the per-layer layout (`layers_i`) and the scanned
layout (`layers`, leaves stacked on a leading axis)."""
from __future__ import annotations

import jax
import numpy as np

from t5mtl.models.config import T5Config


def _counts(cfg: T5Config):
    return {"encoder": cfg.num_layers, "decoder": cfg.n_decoder_layers}


def stack_layers(params: dict, cfg: T5Config) -> dict:
    out = dict(params)
    for stack, n in _counts(cfg).items():
        if stack not in params:         # an encoder-only model
            continue
        sub = dict(params[stack])
        layers = [sub.pop(f"layers_{i}") for i in range(n)]
        sub["layers"] = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *layers)
        out[stack] = sub
    return out


def unstack_layers(params: dict, cfg: T5Config) -> dict:
    out = dict(params)
    for stack, n in _counts(cfg).items():
        if stack not in params:
            continue
        sub = dict(params[stack])
        stacked = sub.pop("layers")
        for i in range(n):
            sub[f"layers_{i}"] = jax.tree_util.tree_map(lambda x: np.asarray(x[i]), stacked)
        out[stack] = sub
    return out


def to_layout(params: dict, cfg: T5Config) -> dict:
    """Returns params in the layout `cfg.scan_layers` asks for, whichever they are in."""
    scanned = "layers" in params["encoder"]
    if cfg.scan_layers and not scanned:
        return stack_layers(params, cfg)
    if not cfg.scan_layers and scanned:
        return unstack_layers(params, cfg)
    return params
