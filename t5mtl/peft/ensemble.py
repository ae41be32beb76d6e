"""Adapter ensembles (Lester et al.'s prompt ensembling): N adapters of one
frozen base (prompts trained with other seeds or inits, LoRA factors, ...)
evaluated in one batched pass.

    t5mtl eval --adapter runs/p0 --adapter runs/p1 --adapter runs/p2 --task T --rank

The base's params are held once; each adapter's own params (what its
checkpoints hold) are stacked on a leading "ensemble" axis, and the member
model runs under `jax.vmap` over that axis alone: the batch is computed N
times, once per adapter, in one program, against shared frozen weights.
Scores (rank classification's option log-likelihoods) are averaged over the
members; generated sequences are combined by majority vote (ties: the
lowest-numbered member among the most voted).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t5mtl.errors import T5mtlError
from t5mtl.models import param_names
from t5mtl.models.base import BaseModel, Batch, class_path, import_class


class AdapterEnsemble(BaseModel):
    """`size` copies of `member`'s params named in `stacked`, one per adapter."""

    def __init__(self, member: BaseModel, size: int, stacked: Sequence[str]):
        if size < 1 or not stacked:
            raise T5mtlError("an adapter ensemble needs at least one member and the names of "
                             "the adapters' own params")
        self.member, self.size, self.stacked = member, int(size), tuple(sorted(stacked))

    def spec(self) -> dict:
        return {"member": {"class": class_path(self.member), "spec": self.member.spec()},
                "size": self.size, "stacked": list(self.stacked)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "AdapterEnsemble":
        member = import_class(spec["member"]["class"]).from_spec(spec["member"]["spec"])
        return cls(member, spec["size"], spec["stacked"])

    def feature_converter(self, pack: bool = True, task_ids=()):
        return self.member.feature_converter(pack, task_ids)

    def init_boxed(self, rng):
        """The member's params, the stacked ones with a leading "ensemble" axis."""
        def tile(path, box):
            if param_names.path_name(path) not in self.stacked:
                return box
            value = jnp.broadcast_to(box.value, (self.size,) + box.value.shape)
            return nn.LogicallyPartitioned(value, ("ensemble",) + tuple(box.names))
        return jax.tree_util.tree_map_with_path(
            tile, self.member.init_boxed(rng), is_leaf=lambda x: isinstance(x, nn.Partitioned))

    def _axes(self, params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: 0 if param_names.path_name(path) in self.stacked else None, params)

    def loss_fn(self, params, batch: Batch, dropout_rng, num_tasks: int = 0):
        raise T5mtlError("an adapter ensemble is evaluated, not trained: train each member")

    def member_scores(self, params, batch: Batch):
        """[size, b]: each member's per-example log-likelihood."""
        return jax.vmap(self.member.score_batch, (self._axes(params), None))(params, batch)

    def score_batch(self, params, batch: Batch):
        """The members' log-likelihoods averaged [b]."""
        return jnp.mean(self.member_scores(params, batch), axis=0)

    def member_predictions(self, params, batch: Batch, decode=None, rng=None):
        """[size, b, length]: each member's decoded ids."""
        return jax.vmap(lambda p: self.member.predict_batch(p, batch, decode, rng),
                        (self._axes(params),))(params)

    def predict_batch(self, params, batch: Batch, decode=None, rng=None):
        """The members' sequences combined by majority vote [b, length]."""
        return majority_vote(self.member_predictions(params, batch, decode, rng))


def majority_vote(ids) -> jnp.ndarray:
    """ids [N, b, L] -> [b, L]: per example, the sequence most members
    produced (ties: the lowest member index among them)."""
    same = jnp.all(ids[:, None] == ids[None, :], axis=-1)         # [N, N, b]
    winner = jnp.argmax(same.sum(axis=1), axis=0)                  # [b]
    return jnp.take_along_axis(ids, winner[None, :, None], axis=0)[0]


def load_ensemble(paths: Sequence[str]) -> tuple[AdapterEnsemble, Any]:
    """(ensemble, params) of adapter directories trained on one base: each a
    t5mtl model_dir whose model.json names a base (save_trainable_only)."""
    from t5mtl.train import model_dir as model_dir_lib
    infos = [model_dir_lib.read_model_json(p) for p in paths]
    first = infos[0]
    for path, info in zip(paths, infos):
        if not info.base:
            raise T5mtlError(f"--adapter {path}: not an adapter directory (its model.json "
                             f"names no base; train it with save_trainable_only)")
        differences = model_dir_lib.architecture_differences(first.model, info.model)
        if differences:
            raise T5mtlError(f"--adapter {path} is another model than --adapter {paths[0]}: "
                             f"{'; '.join(differences)}")
        same_base = (info.base["path"], info.base.get("fingerprint")) == \
            (first.base["path"], first.base.get("fingerprint"))
        if not same_base:
            raise T5mtlError(f"--adapter {path} was trained on base {info.base['path']}, "
                             f"--adapter {paths[0]} on {first.base['path']}: an ensemble "
                             f"shares one base")
    own = [param_names.flatten(model_dir_lib.saved_params(p)) for p in paths]
    if any(o.keys() != own[0].keys() for o in own):
        raise T5mtlError(f"the adapters {list(paths)} train different parameters")
    base = param_names.flatten(model_dir_lib.restore_params(paths[0]))
    for name in own[0]:
        base[name] = np.stack([o[name] for o in own])
    return AdapterEnsemble(first.model, len(paths), list(own[0])), param_names.unflatten(base)
