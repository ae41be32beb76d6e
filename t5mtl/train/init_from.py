"""Finetuning init: params from another checkpoint, partially, by name.

t5x's assignment-map idea in its simplest useful form: every parameter whose
name exists in the source (and matches no `fresh_patterns` regex) is taken
from it; the rest (e.g. new prompt parameters) keep their fresh init. The
step restarts at 0 and the optimizer state is created anew.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from t5mtl import paths
from t5mtl.errors import T5mtlError
from t5mtl.models import param_names
from t5mtl.models.base import BaseModel, WarmStart
from t5mtl.train import partitioning
from t5mtl.train.train_step import trainable_part

log = logging.getLogger(__name__)


def load_source_params(path: str, model: BaseModel, step: int | None = None,
                       shardings=None):
    """Params of a t5mtl model_dir (checkpoint `step`, latest if None), an
    HF T5 directory or a t5x checkpoint, in `model`'s layout. A t5x
    checkpoint's parameters are read leaf by leaf straight into `shardings`
    (a tree like the model's params), and only the names it has."""
    from t5mtl.convert import t5x
    from t5mtl.train import model_dir
    if not model_dir.is_model_dir(path) and t5x.is_t5x_checkpoint(path):
        return t5x.read_params(t5x.open_checkpoint(path, step), model.abstract_params(),
                               shardings, strict=False)
    if not (model_dir.is_model_dir(path) or paths.isfile(paths.join(path, "config.json"))):
        raise T5mtlError(f"init_from {path!r} is neither a t5mtl model directory, an HF "
                         f"T5 directory nor a t5x checkpoint")
    _, params = model_dir.load_params(path, step)
    return model.adapt_params(params)


def merge_params(fresh, source, fresh_patterns: Sequence[str] = (), shardings=None,
                 source_name: str = "the source"):
    """fresh's tree with leaves replaced by source's where names (and shapes) match.

    Returns (merged, names of the leaves that kept their fresh value). With
    `shardings` (a tree like `fresh`), taken leaves are placed in those shards.
    A name in both with different shapes (and no fresh pattern) raises
    T5mtlError listing every such parameter, before anything is placed.
    """
    patterns = param_names.compile_patterns(fresh_patterns, "init_fresh")
    src, own = param_names.named_leaves(source), param_names.named_leaves(fresh)
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
        name = param_names.path_name(path)
        if name not in take:
            return leaf
        if isinstance(src[name], jax.Array) and src[name].dtype == leaf.dtype \
                and sharding is not None and src[name].sharding == sharding:
            return src[name]          # read straight into its shards (t5x)
        value = np.asarray(src[name], leaf.dtype)
        return value if sharding is None else jax.device_put(value, sharding)
    merged = jax.tree_util.tree_map_with_path(pick, fresh, shardings)
    return merged, kept_fresh


def init_params_from(state, shardings, tx, model: BaseModel, path: str,
                     fresh_patterns: Sequence[str], mesh, rules, trainable_names=None,
                     step: int | None = None, warm_start: WarmStart | None = None,
                     on_source: Callable[[Any], None] | None = None):
    """(a new TrainState (step 0, fresh optimizer state of the trainable
    subtree) with params from `path` (checkpoint `step`, latest if None), the
    names of the params kept fresh). With `warm_start`, the model's
    `warm_start` then sets the fresh params from the loaded ones;
    `on_source` sees the source params as loaded (model layout)."""
    source = load_source_params(path, model, step, shardings.params)
    if on_source is not None:
        on_source(source)
    params, kept_fresh = merge_params(state.params, source, fresh_patterns, shardings.params,
                                      source_name=repr(path))
    if warm_start is not None and kept_fresh:
        with partitioning.mesh_context(mesh, rules):
            params = jax.device_put(model.warm_start(params, kept_fresh, warm_start),
                                    shardings.params)
    if kept_fresh:
        log.warning("init_from %s: %d parameters start fresh: %s", path, len(kept_fresh),
                    ", ".join(kept_fresh[:10]) + (" ..." if len(kept_fresh) > 10 else ""))
    print(f"initialized from {path} ({len(kept_fresh)} parameters fresh)")
    with partitioning.mesh_context(mesh, rules):
        opt_state = jax.jit(lambda p: tx.init(trainable_part(p, trainable_names)),
                            out_shardings=shardings.opt_state)(params)
    state = state.replace(step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
                          params=params, opt_state=opt_state)
    return state, kept_fresh
