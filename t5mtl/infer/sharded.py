"""Evaluation and decoding over a device mesh: the batch split over the data axes.

seqio's Evaluator hands every process the whole eval set, so a host batch
here is the same numpy batch on every process. Three pieces:

  place_batch   host batch -> global arrays sharded on dim 0 over
                ("data", "fsdp"), every process filling its own devices
  place_params  numpy params (e.g. from `t5mtl.load`) -> arrays on the mesh
                by their logical axis names; params already on the mesh (the
                trainer's state.params) pass through untouched
  MeshFunction  fn(params, batch) jitted with replicated out_shardings and
                traced under the mesh and logical axis rules: the batch is
                padded to a multiple of the batch shards, and every process
                gets the whole result back as numpy, trimmed to its rows

A 1-device mesh (:func:`default_mesh`) is what evaluation did before meshes:
every process computes on its own first device.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from t5mtl.errors import T5mtlError
from t5mtl.train import partitioning
from t5mtl.train.partitioning import BATCH_AXES, LogicalRules


def default_mesh() -> Mesh:
    """A 1-device mesh on this process's first device."""
    return partitioning.create_mesh((1, 1, 1), devices=jax.local_devices()[:1])


def num_batch_shards(mesh: Mesh, batch_axes: Sequence[str] = BATCH_AXES) -> int:
    """How many blocks the batch dimension splits into on ``mesh``."""
    return math.prod(mesh.shape[a] for a in batch_axes)


def pad_rows(batch: Mapping[str, np.ndarray], multiple: int) -> tuple[dict[str, np.ndarray], int]:
    """``(padded, n)``: every feature padded on dim 0 to a multiple of
    ``multiple`` with copies of row 0 (a real example, so the padding rows
    compute like the others); ``n`` is the number of real rows, which come
    first in their original order."""
    sizes = {k: np.shape(v)[0] for k, v in batch.items()}
    if len(set(sizes.values())) != 1:
        raise T5mtlError(f"batch features have different leading sizes: {sizes}")
    n = next(iter(sizes.values()))
    if n == 0:
        raise T5mtlError("empty batch")
    extra = -n % multiple
    padded = {k: np.asarray(v) if not extra else
              np.concatenate([v, np.repeat(np.asarray(v)[:1], extra, axis=0)])
              for k, v in batch.items()}
    return padded, n


def place_batch(batch: Mapping[str, np.ndarray], mesh: Mesh,
                batch_axes: Sequence[str] = BATCH_AXES) -> dict[str, jax.Array]:
    """A batch every process holds in full -> global arrays sharded on dim 0
    over ``batch_axes``. Each process copies only its own devices' rows.
    The number of rows must be a multiple of :func:`num_batch_shards`."""
    sharding = partitioning.batch_sharding(mesh, batch_axes)
    shards = num_batch_shards(mesh, batch_axes)
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        if v.shape[0] % shards:
            raise T5mtlError(f"batch feature {k!r} has {v.shape[0]} rows, not a multiple of "
                             f"the {shards} batch shards of mesh {dict(mesh.shape)}")
        out[k] = jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
    return out


def on_mesh(x: Any, mesh: Mesh) -> bool:
    """Whether ``x`` is a jax Array laid out on exactly ``mesh``'s devices."""
    return isinstance(x, jax.Array) and x.sharding.device_set == set(mesh.devices.flat)


def param_shardings(model, mesh: Mesh, rules: Optional[LogicalRules] = None) -> tuple[Any, Any]:
    """``(abstract params, NamedShardings)`` of ``model``'s params on ``mesh``,
    from the logical axis names ``model.init_boxed`` gives them."""
    rules = partitioning.logical_axis_rules() if rules is None else rules
    with partitioning.mesh_context(mesh, rules):
        boxed = jax.eval_shape(model.init_boxed, jax.random.PRNGKey(0))
    specs = partitioning.logical_partition_specs(boxed)
    return nn.unbox(boxed), partitioning.logical_to_shardings(specs, mesh, rules)


def place_params(model, params: Any, mesh: Mesh, rules: Optional[LogicalRules] = None) -> Any:
    """``params`` on ``mesh``, each leaf sharded by its logical axis names.

    Leaves already on the mesh's devices are kept as they are (no copy);
    numpy leaves, or jax Arrays on one device of this process, are placed
    with ``jax.make_array_from_callback``: every process must hold the same
    values, as after ``t5mtl.load``.
    """
    if all(on_mesh(x, mesh) for x in jax.tree.leaves(params)):
        return params
    abstract, shardings = param_shardings(model, mesh, rules)
    if jax.tree.structure(abstract) != jax.tree.structure(params):
        raise T5mtlError("params do not match the model config's parameter tree "
                         "(a checkpoint of another model, or another scan_layers layout?)")

    def place(x, spec, sharding):
        if on_mesh(x, mesh):
            return x
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            raise T5mtlError(f"a param is sharded over devices outside mesh "
                             f"{dict(mesh.shape)} ({x.sharding}); gather or reshard it first")
        x = np.asarray(x)
        if x.shape != spec.shape:
            raise T5mtlError(f"param shape {x.shape} != the model config's {spec.shape}")
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(place, params, abstract, shardings)


class MeshFunction:
    """``fn(params, batch)`` run over ``mesh`` on host batches.

    Calling it with a dict of numpy features (the same on every process)
    pads the rows to a multiple of the batch shards, places them with
    :func:`place_batch`, runs the jitted ``fn`` under the mesh and logical
    axis rules (so the model's ``nn.with_logical_constraint`` calls take
    effect) with replicated ``out_shardings``, and returns the result tree
    as numpy with dim 0 trimmed back to the batch's rows. ``params`` must
    already be on the mesh (see :func:`place_params`).
    """

    def __init__(self, fn: Callable[[Any, Mapping[str, jax.Array]], Any], mesh: Mesh,
                 rules: Optional[LogicalRules] = None,
                 batch_axes: Sequence[str] = BATCH_AXES):
        self.mesh = mesh
        self.rules = partitioning.logical_axis_rules() if rules is None else rules
        self.batch_axes = tuple(batch_axes)
        self._jitted = jax.jit(fn, out_shardings=NamedSharding(mesh, P()))

    def __call__(self, params: Any, batch: Mapping[str, np.ndarray]) -> Any:
        padded, n = pad_rows(batch, num_batch_shards(self.mesh, self.batch_axes))
        placed = place_batch(padded, self.mesh, self.batch_axes)
        with partitioning.mesh_context(self.mesh, self.rules):
            out = self._jitted(params, placed)
        return jax.tree.map(lambda x: np.asarray(x)[:n], out)


def _rules_key(rules: Optional[LogicalRules]) -> tuple:
    rules = partitioning.logical_axis_rules() if rules is None else rules
    return tuple((name, tuple(a) if isinstance(a, list) else a) for name, a in rules)


@functools.lru_cache(maxsize=16)
def _score_function(model, mesh: Mesh, rules: tuple) -> MeshFunction:
    return MeshFunction(model.score_batch, mesh, rules)


@functools.lru_cache(maxsize=16)
def _decode_function(model, decode, mesh: Mesh, rules: tuple) -> MeshFunction:
    return MeshFunction(lambda params, batch: model.predict_batch(params, batch, decode),
                        mesh, rules)


def score_function(model, mesh: Mesh, rules: Optional[LogicalRules] = None) -> MeshFunction:
    """``(params, batch) -> log-likelihood [b]``: ``model.score_batch`` over
    ``mesh`` (cached, so repeated evaluations compile once)."""
    return _score_function(model, mesh, _rules_key(rules))


def decode_function(model, decode, mesh: Mesh, rules: Optional[LogicalRules] = None
                    ) -> MeshFunction:
    """``(params, {"encoder_input_tokens": ...}) -> ids [b, max_decode_length]``:
    ``model.predict_batch`` over ``mesh`` (cached like :func:`score_function`)."""
    return _decode_function(model, decode, mesh, _rules_key(rules))
