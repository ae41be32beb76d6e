"""Per-task gradients of one step's mixed batch.

A model's ``loss_fn(params, batch, rng, num_tasks)`` returns, with
``decoder_task_ids`` in the batch, the differentiable vector ``task/loss``
[num_tasks]: each task's loss over its own target tokens, normalized as the
batch loss is but by that task's own denominator (t5mtl.models.losses). The
gradient of entry t with respect to the (trainable) parameters is the
gradient task t's examples would give alone, in a batch of their own.

:func:`task_gradients` computes all of them from one forward pass: one
``jax.vjp`` of the task-loss vector (the forward pass and its residuals
once), then one backward pass per task with the one-hot cotangent e_t,
run one after another by ``lax.map`` so that only one backward pass's
temporaries are alive at a time. The result is a tree like the parameters
whose leaves gain a leading [num_tasks] axis: num_tasks copies of the
trainable parameters' gradient, in float32. That is the memory cost of every
per-task method (surgery and probes): see :func:`check_task_memory`.

A task without target tokens in the batch (absent) has a zero task loss and
a zero gradient; ``present`` flags the others (``task/target_tokens > 0``).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from t5mtl.errors import T5mtlError

TASK_LOSS = "task/loss"
TASK_TOKENS = "task/target_tokens"

# The default bound on the number of tasks per-task gradients are kept for.
DEFAULT_MAX_TASKS = 16


def check_task_losses(metrics: Mapping[str, Any], num_tasks: int) -> None:
    """Raises T5mtlError unless `metrics` has a [num_tasks] task-loss vector."""
    if TASK_LOSS not in metrics:
        raise T5mtlError(
            f"per-task gradients need the loss's {TASK_LOSS!r} vector, and the loss_fn "
            f"returned none (metrics: {sorted(metrics)}); the batch needs decoder_task_ids "
            f"and the loss num_tasks={num_tasks} (a mixture of at least two tasks)")
    shape = tuple(metrics[TASK_LOSS].shape)
    if shape != (num_tasks,):
        raise T5mtlError(f"{TASK_LOSS!r} has shape {shape}, expected ({num_tasks},)")


def check_task_memory(num_tasks: int, trainable: Any, max_tasks: int = DEFAULT_MAX_TASKS,
                      what: str = "per-task gradients") -> int:
    """The bytes of num_tasks float32 copies of `trainable`'s gradient (arrays
    or ShapeDtypeStructs); T5mtlError if num_tasks exceeds max_tasks."""
    size = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trainable))
    nbytes = 4 * size * num_tasks
    if num_tasks < 2:
        raise T5mtlError(f"{what} need a mixture of at least 2 tasks, got num_tasks={num_tasks}")
    if num_tasks > max_tasks:
        raise T5mtlError(
            f"{what} over num_tasks={num_tasks} keep {num_tasks} float32 copies of the "
            f"{size:,} trainable parameters' gradient ({nbytes / 2**20:.1f} MiB), more tasks "
            f"than max_tasks={max_tasks}; raise max_tasks if that memory fits")
    return nbytes


def task_gradients(loss_fn: Callable[[Any, Any, Any], tuple[jax.Array, dict]],
                   params: Any, batch: Mapping[str, Any], rng: Any, num_tasks: int,
                   ) -> tuple[Any, jax.Array, jax.Array, dict]:
    """Per-task gradients of ``loss_fn(params, batch, rng)[1]["task/loss"]``.

    Args:
      loss_fn: ``(params, batch, rng) -> (loss, metrics)`` with ``num_tasks``
        already bound (e.g. ``functools.partial(model.loss_fn, num_tasks=T)``),
        differentiated with respect to `params` (pass the trainable subtree
        and close over the frozen one).
      params: the parameters to differentiate.
      batch, rng: as loss_fn takes them.
      num_tasks: the length of the task-loss vector.
    Returns:
      ``(grads, present, loss, metrics)``: grads like `params` with a leading
      [num_tasks] axis (float32), present [num_tasks] bool, and loss_fn's loss
      and metrics.
    """
    def task_losses(p):
        loss, metrics = loss_fn(p, batch, rng)
        check_task_losses(metrics, num_tasks)
        return metrics[TASK_LOSS].astype(jnp.float32), (loss, metrics)

    _, vjp_fn, (loss, metrics) = jax.vjp(task_losses, params, has_aux=True)

    def one_task(cotangent):
        (grad,) = vjp_fn(cotangent)
        return jax.tree.map(lambda g: g.astype(jnp.promote_types(g.dtype, jnp.float32)), grad)

    grads = jax.lax.map(one_task, jnp.eye(num_tasks, dtype=jnp.float32))
    present = metrics[TASK_TOKENS] > 0 if TASK_TOKENS in metrics else jnp.ones(num_tasks, bool)
    return grads, present, loss, metrics


def stacked_vectors(grads: Any) -> jax.Array:
    """[num_tasks, n]: each task's gradient flattened into one vector (for
    small models and tests; the surgery works leaf by leaf instead)."""
    leaves = jax.tree.leaves(grads)
    return jnp.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)


def gram(grads: Any) -> jax.Array:
    """[num_tasks, num_tasks] inner products of the task gradients, summed
    leaf by leaf (no flattened copy)."""
    out = 0.0
    for x in jax.tree.leaves(grads):
        flat = x.reshape(x.shape[0], -1).astype(jnp.float32)
        out = out + flat @ flat.T
    return out
