"""The train state and the pure, jittable train step.

The model contract (as in t5x): ``loss_fn(params, batch, dropout_rng) ->
(loss, metrics)``. The optimizer is a plain optax transformation handed in
by the caller.

Gradient accumulation runs ``num_microbatches`` slices of the batch through
``lax.scan``, sums gradients and metrics, and applies one update. The sum
equals the full-batch gradient only if every microbatch's loss is divided
by the *whole batch's* denominator: give ``make_train_step`` a
``loss_denominator_fn`` (a model's ``loss_denominator``, or
``t5mtl.models.losses.loss_denominator_fn``) and the step puts its value on
the whole batch (a scalar or any pytree) into every microbatch as
``batch[LOSS_DENOMINATOR_KEY]``, for the loss_fn to use. A loss normalized
by a constant or a plain sum is already additive and needs no denominator.

Trainable subsets: with ``trainable_names`` (see t5mtl.train.trainable) the
step differentiates only those leaves. The others enter the loss as
constants, so XLA computes no gradient for them; the optimizer state covers
the trainable leaves alone (``TrainState.create`` builds it so), and
``grad_norm`` is their gradient's norm.

Non-finite steps: every step reports ``nonfinite`` (1 where its loss or
gradient norm is NaN or Inf, else 0), computed on the device from scalars
the step has anyway. With ``skip_nonfinite`` such a step leaves params and
optimizer state as they were (the step counter still advances, as the
batch was consumed); the loop counts them.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from t5mtl.errors import T5mtlError
from t5mtl.models import losses, param_names
from t5mtl.train import partitioning

LOSS_DENOMINATOR_KEY = losses.LOSS_DENOMINATOR_KEY

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, Metrics]]


def trainable_part(params: Any, trainable_names: Optional[Sequence[str]]) -> Any:
    """The subtree the optimizer updates: all of `params`, or the named leaves."""
    return params if trainable_names is None else param_names.subset(params, trainable_names)


@flax.struct.dataclass
class TrainState:
    """Everything a step changes: a pytree, checkpointable as is.

    ``rng`` is a raw uint32 key; the step's dropout key is
    ``fold_in(rng, step)``, so a resumed run draws the same dropout masks.
    ``opt_state`` is the optimizer's state of the trainable subtree.
    """
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, rng: jax.Array,
               trainable_names: Optional[Sequence[str]] = None) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params,
                   opt_state=tx.init(trainable_part(params, trainable_names)),
                   rng=_raw_key(rng))


def _raw_key(rng: jax.Array) -> jax.Array:
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng)
    return rng


def _split_microbatches(batch: Batch, num_microbatches: int) -> dict[str, jax.Array]:
    """[B, ...] -> [N, B/N, ...]; microbatch i holds rows i, i+N, i+2N, ...

    Strided rather than contiguous so every microbatch is spread over all
    the devices that hold the (data-sharded) batch.
    """
    out = {}
    for key, x in batch.items():
        if x.ndim == 0 or x.shape[0] % num_microbatches:
            raise T5mtlError(
                f"batch feature {key!r} with shape {x.shape} does not split into "
                f"{num_microbatches} microbatches")
        x = x.reshape((x.shape[0] // num_microbatches, num_microbatches) + x.shape[1:])
        out[key] = jnp.swapaxes(x, 0, 1)
    return out


def make_train_step(loss_fn: LossFn,
                    tx: optax.GradientTransformation,
                    *,
                    num_microbatches: int = 1,
                    loss_denominator_fn: Optional[Callable[[Batch], Any]] = None,
                    trainable_names: Optional[Sequence[str]] = None,
                    skip_nonfinite: bool = False,
                    gradient_surgery: Any = None,
                    num_tasks: int = 0,
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Builds ``train_step(state, batch) -> (state, metrics)``.

    Args:
      loss_fn: ``(params, batch, dropout_rng) -> (loss, metrics)``; metrics
        must be additive over microbatches except ratios that
        ``losses.finalize_metrics`` recomputes (``accuracy``).
      tx: the optimizer.
      num_microbatches: gradient accumulation steps inside one update.
      loss_denominator_fn: ``full_batch -> pytree``; see the module docstring.
      trainable_names: the parameter names to train (None: all of them).
      skip_nonfinite: a step whose loss or gradient norm is not finite
        changes neither params nor optimizer state.
      gradient_surgery: None (the plain gradient), or a method of
        t5mtl.mtl.surgery (an instance or its name) that turns the batch's
        per-task gradients into the update direction; needs `num_tasks`
        (the loss_fn's task-loss vector length), a `loss_denominator_fn`
        with per-task denominators ("loss" and "task"), and for a stateful
        method a `tx` from ``surgery.with_state``.
      num_tasks: the number of tasks, for gradient_surgery.
    Returns:
      A pure function (jit it, e.g. with :func:`jit_train_step`). Metrics are
      the summed loss metrics plus ``grad_norm`` (of the accumulated
      gradient, before the optimizer's clipping).
    """
    if not isinstance(num_microbatches, int) or num_microbatches < 1:
        raise T5mtlError(f"num_microbatches must be a positive integer, got {num_microbatches!r}")

    def split(params):
        if trainable_names is None:
            return params, {}
        flat = param_names.flatten(params)
        chosen = set(trainable_names)
        return (param_names.unflatten({n: v for n, v in flat.items() if n in chosen}),
                param_names.unflatten({n: v for n, v in flat.items() if n not in chosen}))

    def join(trainable, frozen):
        return trainable if trainable_names is None else param_names.merge(frozen, trainable)

    # Differentiated with respect to the trainable subtree only: the frozen
    # one is an ordinary (non-differentiated) argument.
    grad_fn = jax.value_and_grad(
        lambda trainable, frozen, batch, rng: loss_fn(join(trainable, frozen), batch, rng),
        has_aux=True)

    def with_denominator(batch, denominator):
        if denominator is None:
            return batch
        return {**batch, LOSS_DENOMINATOR_KEY: denominator}

    def compute_grads(trainable, frozen, batch, dropout_rng):
        denominator = None
        if loss_denominator_fn is not None:
            denominator = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                                       loss_denominator_fn(batch))
        if num_microbatches == 1:
            (loss, metrics), grads = grad_fn(trainable, frozen,
                                             with_denominator(batch, denominator), dropout_rng)
            return grads, loss, metrics

        micro = _split_microbatches(batch, num_microbatches)

        def body(carry, xs):
            grad_sum, loss_sum, metric_sum = carry
            index, mb = xs
            (loss, metrics), grads = grad_fn(trainable, frozen, with_denominator(mb, denominator),
                                             jax.random.fold_in(dropout_rng, index))
            grad_sum = jax.tree.map(lambda a, g: a + g.astype(a.dtype), grad_sum, grads)
            metric_sum = jax.tree.map(jnp.add, metric_sum, metrics)
            return (grad_sum, loss_sum + jnp.asarray(loss, jnp.float32), metric_sum), None

        first = jax.tree.map(lambda x: x[0], micro)
        metric_shapes = jax.eval_shape(
            lambda t, f, b, r: loss_fn(join(t, f), b, r)[1], trainable, frozen,
            with_denominator(first, denominator), dropout_rng)
        # Gradients accumulate in at least float32 (bfloat16 params included).
        grad_zeros = jax.tree.map(
            lambda p: jnp.zeros(p.shape, jnp.promote_types(p.dtype, jnp.float32)), trainable)
        metric_zeros = jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metric_shapes)
        (grad_sum, loss_sum, metric_sum), _ = jax.lax.scan(
            body, (grad_zeros, jnp.zeros((), jnp.float32), metric_zeros),
            (jnp.arange(num_microbatches), micro))
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grad_sum, trainable)
        return grads, loss_sum, metric_sum

    surgery_step = None
    if gradient_surgery is not None:
        from t5mtl.mtl import surgery_step as surgery_step_lib
        surgery_step = surgery_step_lib.make_surgery_grads(
            lambda trainable, frozen, batch, rng: loss_fn(join(trainable, frozen), batch, rng),
            gradient_surgery, num_tasks, num_microbatches, loss_denominator_fn,
            _split_microbatches)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        dropout_rng = jax.random.fold_in(state.rng, state.step)
        trainable, frozen = split(state.params)
        if surgery_step is None:
            grads, loss, metrics = compute_grads(trainable, frozen, batch, dropout_rng)
            updates, opt_state = tx.update(grads, state.opt_state, trainable)
        else:
            grads, loss, metrics, opt_state = surgery_step(
                trainable, frozen, batch, dropout_rng, state.opt_state)
            updates, opt_state = tx.update(grads, opt_state, trainable)
        params = join(optax.apply_updates(trainable, updates), frozen)
        metrics = losses.finalize_metrics(metrics)
        metrics["grad_norm"] = grad_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])
        metrics["nonfinite"] = jnp.logical_not(finite).astype(jnp.int32)
        if skip_nonfinite:
            params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                             (params, opt_state),
                                             (state.params, state.opt_state))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def grad_norm(grads: Any) -> jax.Array:
    """The global L2 norm of a gradient tree, for the ``grad_norm`` metric.

    Each leaf passes through an optimization barrier first. Without it, XLA
    shares the norm's squares with the optimizer's (Adam's second moment
    squares the same gradient), so it writes every squared gradient out to
    memory and splits the update into more passes (the cost is in
    docs/performance.md). One barrier per leaf, not one for the tree, so
    that no leaf waits for the last gradient of the backward pass.
    """
    leaves = [jax.lax.optimization_barrier(g) for g in jax.tree.leaves(grads)]
    return optax.tree.norm(leaves)


# ----------------------------------------------------------------------------
# Sharded state and the jitted step
# ----------------------------------------------------------------------------

def train_state_shardings(tx: optax.GradientTransformation, abstract_params: Any,
                          param_shardings: Any, mesh: Mesh,
                          trainable_names: Optional[Sequence[str]] = None) -> TrainState:
    """A TrainState of NamedShardings: params by their logical axes, optimizer
    state (of the trainable subtree) derived from them
    (``partitioning.opt_state_shardings``), step and rng replicated."""
    abstract_opt_state = jax.eval_shape(tx.init,
                                        trainable_part(abstract_params, trainable_names))
    replicated = NamedSharding(mesh, P())
    return TrainState(
        step=replicated,
        params=param_shardings,
        opt_state=partitioning.opt_state_shardings(
            abstract_opt_state, abstract_params, param_shardings, mesh),
        rng=replicated)


def create_train_state(init_params_fn: Callable[..., Any], tx: optax.GradientTransformation,
                       *init_args: Any, rng: jax.Array, mesh: Mesh,
                       rules: Optional[partitioning.LogicalRules] = None,
                       trainable_names: Optional[Sequence[str]] = None,
                       ) -> tuple[TrainState, TrainState]:
    """Born-sharded train state: params and optimizer state are created
    directly in their shards by one jitted init.

    Args:
      init_params_fn: ``(*init_args) -> boxed params`` (``nn.Partitioned``
        leaves), e.g. ``lambda r: model.init(r, *dummy)["params"]``.
      tx: the optimizer.
      rng: the train state's base key (dropout keys derive from it).
      mesh, rules: the mesh and logical axis rules.
      trainable_names: the parameters the optimizer updates (None: all).
    Returns:
      ``(state, state_shardings)``.
    """
    rules = partitioning.logical_axis_rules() if rules is None else rules
    with partitioning.mesh_context(mesh, rules):
        boxed = jax.eval_shape(init_params_fn, *init_args)
        param_shardings = partitioning.logical_to_shardings(
            partitioning.logical_partition_specs(boxed), mesh, rules)
        abstract_params = jax.eval_shape(lambda *a: nn.unbox(init_params_fn(*a)), *init_args)
        shardings = train_state_shardings(tx, abstract_params, param_shardings, mesh,
                                          trainable_names)

        def init(key, *args):
            return TrainState.create(nn.unbox(init_params_fn(*args)), tx, key, trainable_names)

        state = jax.jit(init, out_shardings=shardings)(_raw_key(rng), *init_args)
    return state, shardings


def jit_train_step(step_fn: Callable[[TrainState, Batch], tuple[TrainState, Metrics]],
                   state_shardings: TrainState,
                   batch_sharding: Any,
                   mesh: Mesh,
                   rules: Optional[partitioning.LogicalRules] = None,
                   ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """``jax.jit(step_fn)`` with explicit in/out shardings and the state donated.

    ``batch_sharding`` is one sharding for every batch feature (e.g.
    ``partitioning.batch_sharding(mesh)``) or a matching dict. Metrics come
    back replicated. The returned function traces under the mesh and logical
    axis rules, so ``nn.with_logical_constraint`` in the model takes effect;
    its ``.lower(state, batch)`` does the same (for cost analysis).
    """
    rules = partitioning.logical_axis_rules() if rules is None else rules
    jitted = jax.jit(step_fn,
                     in_shardings=(state_shardings, batch_sharding),
                     out_shardings=(state_shardings, NamedSharding(mesh, P())),
                     donate_argnums=(0,))

    def run(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        with partitioning.mesh_context(mesh, rules):
            return jitted(state, batch)

    def lower(state: TrainState, batch: Batch):
        with partitioning.mesh_context(mesh, rules):
            return jitted.lower(state, batch)

    run.lower = lower
    run.jitted = jitted
    return run

