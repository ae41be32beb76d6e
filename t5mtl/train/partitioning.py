"""The device mesh, logical axis rules, born-sharded init and global batches.

Model code names axes (``embed``, ``mlp``, ``heads``, ``kv``, ``vocab``, ...)
with ``nn.with_logical_partitioning``; :data:`DEFAULT_LOGICAL_AXIS_RULES`
maps those names onto the mesh axes ``("data", "fsdp", "model")``. Rules are
in priority order: an array dimension takes the first rule whose mesh axes
are still free in that array, else it is replicated (so activations named
``("batch", "length", "embed")`` shard batch over data x fsdp and leave
embed whole).

The same code runs on 1 device, N fake CPU devices and several processes:
every helper here is built on ``jax.sharding`` and ``flax.linen`` spmd
helpers, nothing home-made.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from t5mtl.errors import T5mtlError
from t5mtl.models import param_names

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

LogicalRules = Sequence[tuple[str, Any]]

DEFAULT_LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("embed", "fsdp"),
    ("kv", None),
    ("length", None),
    ("relpos_buckets", None),
    ("abspos_buckets", None),
    ("layers", None),
    ("prompt", None),
    ("lora", None),
    ("ensemble", None),
)


# ----------------------------------------------------------------------------
# Mesh and rules
# ----------------------------------------------------------------------------

@gin.configurable
def create_mesh(mesh_shape: Sequence[int] = (-1, 1, 1),
                devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A mesh with axes ("data", "fsdp", "model").

    Args:
      mesh_shape: sizes of (data, fsdp, model); one entry may be -1, meaning
        "all the devices the others leave". (-1, 1, 1) is pure data
        parallelism, (1, -1, 1) pure FSDP, (2, 1, 4) data 2 x model 4.
      devices: the devices to lay out (default: all of ``jax.devices()``).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = tuple(int(s) for s in mesh_shape)
    if len(shape) != len(MESH_AXES) or any(s == 0 or s < -1 for s in shape) or shape.count(-1) > 1:
        raise T5mtlError(
            f"mesh_shape {tuple(mesh_shape)!r} must give (data, fsdp, model) as positive sizes, "
            "at most one of them -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise T5mtlError(f"mesh_shape {tuple(mesh_shape)!r} does not divide the "
                             f"{len(devices)} devices")
        shape = tuple(len(devices) // known if s == -1 else s for s in shape)
    if math.prod(shape) != len(devices):
        raise T5mtlError(f"mesh_shape {tuple(mesh_shape)!r} needs {math.prod(shape)} devices, "
                         f"there are {len(devices)}")
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


@gin.configurable
def logical_axis_rules(overrides: LogicalRules = (),
                       base_rules: LogicalRules = DEFAULT_LOGICAL_AXIS_RULES,
                       ) -> tuple[tuple[str, Any], ...]:
    """The rule table: ``overrides`` first (they win), then ``base_rules``.

    ``mesh_axis`` values are a mesh axis name, a tuple of them, or None.
    """
    rules = tuple((str(name), _as_mesh_axes(axes)) for name, axes in (*overrides, *base_rules))
    for name, axes in rules:
        for axis in (axes if isinstance(axes, tuple) else (axes,)):
            if axis is not None and axis not in MESH_AXES:
                raise T5mtlError(f"logical axis rule {name!r} -> {axes!r} names mesh axis "
                                 f"{axis!r}; mesh axes are {MESH_AXES}")
    return rules


def _as_mesh_axes(axes: Any) -> Any:
    return tuple(axes) if isinstance(axes, list) else axes


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules: Optional[LogicalRules] = None) -> Iterator[None]:
    """Sets the mesh and the logical axis rules for tracing model code.

    ``nn.with_logical_constraint`` in model code is a no-op without both.
    """
    rules = logical_axis_rules() if rules is None else rules
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


# ----------------------------------------------------------------------------
# Parameters and optimizer state
# ----------------------------------------------------------------------------

def logical_partition_specs(boxed_tree: Any) -> Any:
    """Logical PartitionSpecs (``P("embed", "mlp")``) of boxed (``nn.Partitioned``)
    params, abstract or concrete; unboxed leaves get ``P()``."""
    return nn.get_partition_spec(boxed_tree)


def logical_to_shardings(logical_specs: Any, mesh: Mesh,
                         rules: Optional[LogicalRules] = None) -> Any:
    """Maps a tree of logical PartitionSpecs to NamedShardings on ``mesh``."""
    rules = logical_axis_rules() if rules is None else rules
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def sharded_init(init_fn: Callable[..., Any], *args: Any, mesh: Mesh,
                 rules: Optional[LogicalRules] = None) -> tuple[Any, Any]:
    """Born-sharded initialization.

    ``jax.eval_shape(init_fn, *args)`` gives the boxed abstract variables;
    their logical axis names give NamedShardings; a jitted ``init_fn`` with
    those ``out_shardings`` then creates every array directly in its shards.

    Args:
      init_fn: returns boxed variables, e.g. ``functools.partial(module.init,
        rngs)`` or ``lambda rng: module.init(rng, *dummy_inputs)``.
      *args: its arguments (rngs, dummy inputs).
    Returns:
      ``(variables, shardings)``: unboxed (plain nested dict) variables and a
      matching tree of NamedShardings.
    """
    rules = logical_axis_rules() if rules is None else rules
    with mesh_context(mesh, rules):
        abstract = jax.eval_shape(init_fn, *args)
        shardings = logical_to_shardings(logical_partition_specs(abstract), mesh, rules)
        variables = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
    return variables, shardings


def _derived_spec(leaf_shape: tuple[int, ...], param_shape: tuple[int, ...],
                  spec: P) -> Optional[P]:
    """The spec of ``param_shape`` with one axis dropped, if dropping one
    axis turns ``param_shape`` into ``leaf_shape`` (Adafactor's row and
    column statistics), else None."""
    if len(leaf_shape) != len(param_shape) - 1:
        return None
    entries = tuple(spec) + (None,) * (len(param_shape) - len(spec))
    for axis in range(len(param_shape) - 1, -1, -1):
        if param_shape[:axis] + param_shape[axis + 1:] == leaf_shape:
            return P(*(entries[:axis] + entries[axis + 1:]))
    return None


def opt_state_shardings(abstract_opt_state: Any, abstract_params: Any, param_shardings: Any,
                        mesh: Mesh) -> Any:
    """Shardings for an optax state, derived from the params' shardings.

    optax states mirror the param tree inside their own containers, so each
    state leaf is matched to the param whose path is the longest suffix of
    the leaf's path. Same shape: the param's sharding. One axis fewer
    (Adafactor's factored row/column statistics): the param's spec with that
    axis dropped. Anything else (step counts, placeholders): replicated.
    """
    params = {}
    for (path, p), s in zip(jax.tree_util.tree_leaves_with_path(abstract_params),
                            jax.tree.leaves(param_shardings)):
        params[param_names.path_keys(path)] = (tuple(p.shape), s)
    replicated = NamedSharding(mesh, P())

    def leaf_sharding(path, leaf):
        key = param_names.path_keys(path)
        shape = tuple(getattr(leaf, "shape", ()))
        for start in range(len(key)):
            if key[start:] in params:
                param_shape, sharding = params[key[start:]]
                if shape == param_shape:
                    return sharding
                spec = _derived_spec(shape, param_shape, sharding.spec)
                if spec is not None:
                    return NamedSharding(mesh, spec)
                break
        return replicated

    return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_opt_state)


# ----------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------

def batch_sharding(mesh: Mesh, batch_axes: Sequence[str] = BATCH_AXES) -> NamedSharding:
    """Shards the leading (batch) dimension over ``batch_axes``; the rest whole."""
    return NamedSharding(mesh, P(tuple(batch_axes)))


def process_batch_shard(mesh: Mesh, global_batch_size: int,
                        batch_axes: Sequence[str] = BATCH_AXES) -> tuple[int, int]:
    """``(shard_index, num_shards)`` of the global batch this process feeds.

    The global batch splits into ``num_shards`` equal contiguous blocks and
    this process must supply block ``shard_index`` (e.g. as seqio's
    ``ShardInfo``). Processes holding the same block (a model axis that
    spans hosts) get the same index and must feed the same examples.
    """
    sharding = batch_sharding(mesh, batch_axes)
    rows = set()
    for idx in sharding.addressable_devices_indices_map((global_batch_size,)).values():
        rows.update(range(*idx[0].indices(global_batch_size)))
    lo, hi = min(rows), max(rows) + 1
    if hi - lo != len(rows) or global_batch_size % len(rows):
        raise T5mtlError(f"global batch size {global_batch_size} does not split evenly over "
                         f"this process's devices on mesh {dict(mesh.shape)}")
    return lo // len(rows), global_batch_size // len(rows)


def host_batch_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh,
                         batch_axes: Sequence[str] = BATCH_AXES) -> dict[str, jax.Array]:
    """This process's share of a batch (numpy arrays with the same leading
    size) -> global jax.Arrays sharded over ``batch_axes`` on dimension 0.

    On one process the share is the whole batch.
    """
    sharding = batch_sharding(mesh, batch_axes)
    sizes = {k: np.shape(v)[0] for k, v in batch.items()}
    if len(set(sizes.values())) > 1:
        raise T5mtlError(f"batch features have different leading sizes: {sizes}")
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}
