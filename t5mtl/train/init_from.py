"""Finetuning init: params from another checkpoint, partially, by name.

t5x's assignment-map idea in its simplest useful form: every parameter whose
name exists in the source (and matches no `fresh_patterns` regex) is taken
from it; the rest (e.g. new prompt parameters) keep their fresh init. The
step restarts at 0 and the optimizer state is created anew.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Sequence

import jax
import numpy as np

from t5mtl.errors import T5mtlError
from t5mtl.models.config import T5Config
from t5mtl.train import partitioning

log = logging.getLogger(__name__)


def load_source_params(path: str, config: T5Config):
    """Params of a t5mtl model_dir or an HF T5 directory, in `config`'s layout."""
    from t5mtl.convert.layout import to_layout
    from t5mtl.train import model_dir
    if model_dir.is_model_dir(path):
        src_config, _ = model_dir.read_model_json(path)
        params = model_dir.restore_params(path, src_config)
    elif os.path.isfile(os.path.join(path, "config.json")):
        from t5mtl.convert.hf import import_hf
        src_config, params = import_hf(path)
    else:
        raise T5mtlError(f"init_from {path!r} is neither a t5mtl model directory nor an HF "
                         f"T5 directory")
    return to_layout(params, src_config.replace(scan_layers=config.scan_layers))


def _path_name(path) -> str:
    """"encoder/layers_0/mlp/wi_0/kernel" for a key path into a params dict."""
    return "/".join(str(getattr(k, "key", k)) for k in path)


def _named_leaves(tree) -> dict:
    return {_path_name(path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def merge_params(fresh, source, fresh_patterns: Sequence[str] = (), shardings=None,
                 source_name: str = "the source"):
    """fresh's tree with leaves replaced by source's where names (and shapes) match.

    Returns (merged, names of the leaves that kept their fresh value). With
    `shardings` (a tree like `fresh`), taken leaves are placed in those shards.
    A name in both with different shapes (and no fresh pattern) raises
    T5mtlError listing every such parameter, before anything is placed.
    """
    patterns = [re.compile(p) for p in fresh_patterns]
    src, own = _named_leaves(source), _named_leaves(fresh)
    take = {name for name in own
            if name in src and not any(p.fullmatch(name) for p in patterns)}
    mismatched = [(f"{name!r} has shape {tuple(src[name].shape)} in the source but "
                   f"{tuple(leaf.shape)} in this model")
                  for name, leaf in own.items()
                  if name in take and tuple(src[name].shape) != tuple(leaf.shape)]
    if mismatched:
        more = f"; and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""
        raise T5mtlError(
            f"init_from {source_name}: {len(mismatched)} parameter shape(s) differ from this "
            f"model: {'; '.join(mismatched[:5])}{more}. Use the model config the source was "
            f"trained with, or list the parameters to start fresh in "
            f"CheckpointConfig.init_fresh_patterns (regexes)")
    kept_fresh = [name for name in own if name not in take]
    shardings = shardings if shardings is not None else jax.tree.map(lambda _: None, fresh)

    def pick(path, leaf, sharding):
        name = _path_name(path)
        if name not in take:
            return leaf
        value = np.asarray(src[name], leaf.dtype)
        return value if sharding is None else jax.device_put(value, sharding)
    merged = jax.tree_util.tree_map_with_path(pick, fresh, shardings)
    return merged, kept_fresh


def init_params_from(state, shardings, tx, config: T5Config, path: str,
                     fresh_patterns: Sequence[str], mesh, rules):
    """A new TrainState (step 0, fresh optimizer state) with params from `path`."""
    import jax.numpy as jnp
    source = load_source_params(path, config)
    params, kept_fresh = merge_params(state.params, source, fresh_patterns, shardings.params,
                                      source_name=repr(path))
    if kept_fresh:
        log.warning("init_from %s: %d parameters start fresh: %s", path, len(kept_fresh),
                    ", ".join(kept_fresh[:10]) + (" ..." if len(kept_fresh) > 10 else ""))
    print(f"initialized from {path} ({len(kept_fresh)} parameters fresh)")
    with partitioning.mesh_context(mesh, rules):
        opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return state.replace(step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
                         params=params, opt_state=opt_state)
