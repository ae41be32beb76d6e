"""The train step's gradient-surgery path (``make_train_step(...,
gradient_surgery=...)``): per-task gradients of the trainable subtree,
accumulated over microbatches, shared by each task's part of the batch loss,
turned into one direction by a t5mtl.mtl.surgery method.

Per microbatch, t5mtl.mtl.task_gradients gives the gradients of the
task-loss vector, each normalized by the *whole batch's* per-task
denominator, so they add up over microbatches as the plain gradient does.
The shares s_t = (task t's denominator) / (the batch's denominator) then
make sum_t s_t g_t the plain step's gradient (z-loss included): that is what
``Sum`` returns. A task is present when its target tokens over the whole
batch are > 0.

Memory: num_tasks float32 copies of the trainable parameters' gradient
(plus one backward pass's temporaries, the tasks' backward passes running
one after another); ``Surgery.max_tasks`` bounds num_tasks with a one-line
error.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models import losses
from t5mtl.mtl import surgery as surgery_lib
from t5mtl.mtl.task_gradients import TASK_TOKENS, check_task_memory, gram, task_gradients

# The stream of the step's dropout key that surgery's random orders use.
SURGERY_STREAM = 0x5047


def task_shares(denominator: Any, num_tasks: int) -> jax.Array:
    """[num_tasks]: each task's part of the batch loss's denominator."""
    if not isinstance(denominator, dict) or "loss" not in denominator \
            or "task" not in denominator:
        raise T5mtlError(
            "gradient surgery needs the loss denominators of the whole batch and of each "
            "task ({'loss': ..., 'task': [num_tasks]}, a model's loss_denominator with "
            f"num_tasks={num_tasks}); the loss_denominator_fn gave {type(denominator).__name__}")
    return denominator["task"] / denominator["loss"]


def make_surgery_grads(grad_loss_fn: Callable, surgery: Any, num_tasks: int,
                       num_microbatches: int, loss_denominator_fn: Callable | None,
                       split_microbatches: Callable) -> Callable:
    """``fn(trainable, frozen, batch, rng, opt_state) -> (direction, loss,
    metrics, opt_state)``, the direction cast to the trainable params' dtypes
    and a stateful method's new state put into opt_state."""
    surgery = surgery_lib.resolve(surgery)
    if not isinstance(num_tasks, int) or num_tasks < 2:
        raise T5mtlError(f"gradient surgery ({surgery.name}) needs a mixture of at least 2 "
                         f"tasks, got num_tasks={num_tasks!r}")
    if loss_denominator_fn is None:
        raise T5mtlError(f"gradient surgery ({surgery.name}) needs a loss_denominator_fn "
                         f"with per-task denominators (a model's loss_denominator)")

    def per_task(trainable, frozen, batch, rng):
        return task_gradients(lambda t, b, r: grad_loss_fn(t, frozen, b, r),
                              trainable, batch, rng, num_tasks)

    def accumulated(trainable, frozen, batch, rng, denominator):
        batch = {**batch, losses.LOSS_DENOMINATOR_KEY: denominator}
        if num_microbatches == 1:
            grads, _, loss, metrics = per_task(trainable, frozen, batch, rng)
            return grads, loss, metrics
        micro = split_microbatches({k: v for k, v in batch.items()
                                    if k != losses.LOSS_DENOMINATOR_KEY}, num_microbatches)

        def body(carry, xs):
            grad_sum, loss_sum, metric_sum = carry
            index, mb = xs
            grads, _, loss, metrics = per_task(
                trainable, frozen, {**mb, losses.LOSS_DENOMINATOR_KEY: denominator},
                jax.random.fold_in(rng, index))
            return (jax.tree.map(jnp.add, grad_sum, grads),
                    loss_sum + jnp.asarray(loss, jnp.float32),
                    jax.tree.map(jnp.add, metric_sum, metrics)), None

        first = {**jax.tree.map(lambda x: x[0], micro), losses.LOSS_DENOMINATOR_KEY: denominator}
        shapes = jax.eval_shape(lambda t, b: per_task(t, frozen, b, rng), trainable, first)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (shapes[0], shapes[3]))
        (grads, loss, metrics), _ = jax.lax.scan(
            body, (zeros[0], jnp.zeros((), jnp.float32), zeros[1]),
            (jnp.arange(num_microbatches), micro))
        return grads, loss, metrics

    def fn(trainable, frozen, batch, rng, opt_state):
        check_task_memory(num_tasks, trainable, surgery.max_tasks,
                          f"gradient surgery ({surgery.name})")
        if surgery.stateful and not isinstance(opt_state, surgery_lib.SurgeryOptState):
            raise T5mtlError(f"gradient surgery {surgery.name} keeps state in the optimizer's: "
                             f"build the optimizer with t5mtl.mtl.surgery.with_state(tx, "
                             f"surgery, num_tasks)")
        denominator = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                                   loss_denominator_fn(batch))
        shares = task_shares(denominator, num_tasks)
        grads, loss, metrics = accumulated(trainable, frozen, batch, rng, denominator)
        present = metrics[TASK_TOKENS] > 0
        shared = jax.tree.map(
            lambda g: g * shares.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype), grads)
        state = opt_state.surgery if surgery.stateful else ()
        alpha, state = surgery.coefficients(gram(shared), present, state,
                                            jax.random.fold_in(rng, SURGERY_STREAM))
        direction = jax.tree.map(lambda d, p: d.astype(p.dtype),
                                 surgery_lib.combine(shared, alpha), trainable)
        if surgery.stateful:
            opt_state = opt_state.replace(surgery=state)
        return direction, loss, metrics, opt_state

    return fn
