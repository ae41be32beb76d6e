"""Optimizers and learning-rate schedules, all plain optax.

The trainer takes an ``optax.GradientTransformation``; the model never owns
its optimizer. :func:`create_optimizer` is the gin edge::

    create_optimizer.name = "adafactor"
    create_optimizer.max_grad_norm = 1.0
    learning_rate_schedule.name = "rsqrt"
    learning_rate_schedule.warmup_steps = 10000

Which parameters train is not the optimizer's business: `train.trainable_patterns`
and `train.frozen_patterns` select them, the step differentiates only those
and the optimizer sees only them (t5mtl.train.train_step).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import gin
import jax
import jax.numpy as jnp
import optax

from t5mtl.errors import T5mtlError

Schedule = Callable[[jax.Array], jax.Array]
LearningRate = Union[float, Schedule]

SCHEDULES = ("rsqrt", "constant", "linear", "cosine")


# ----------------------------------------------------------------------------
# Learning-rate schedules (functions of the update count, starting at 0)
# ----------------------------------------------------------------------------

def rsqrt_schedule(base_learning_rate: float = 1.0, warmup_steps: int = 10_000) -> Schedule:
    """T5's schedule: ``base / sqrt(max(step, warmup_steps))``.

    With T5's defaults (base 1.0, 10k warmup steps) the rate is a constant
    0.01 for the first 10k steps, then decays as ``1 / sqrt(step)``.
    """
    warmup = max(int(warmup_steps), 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        return base_learning_rate * jax.lax.rsqrt(jnp.maximum(step, float(warmup)))

    return schedule


@gin.configurable
def learning_rate_schedule(name: str = "rsqrt",
                           base_learning_rate: float = 1.0,
                           warmup_steps: int = 10_000,
                           decay_steps: Optional[int] = None,
                           init_learning_rate: float = 0.0,
                           end_learning_rate: float = 0.0) -> Schedule:
    """A named schedule of the update count.

    Args:
      name: ``"rsqrt"`` (T5: ``base / sqrt(max(step, warmup_steps))``),
        ``"constant"``, ``"linear"`` or ``"cosine"``. The last three ramp
        linearly from ``init_learning_rate`` to ``base_learning_rate`` over
        ``warmup_steps`` (none when 0); linear and cosine then decay to
        ``end_learning_rate`` at step ``decay_steps`` (counted from 0,
        warmup included) and stay there.
      base_learning_rate: the peak rate (for rsqrt, the multiplier).
      warmup_steps: warmup length.
      decay_steps: total schedule length for linear and cosine.
      init_learning_rate: the rate at step 0 of a linear warmup.
      end_learning_rate: the final rate of linear and cosine decay.
    """
    if name not in SCHEDULES:
        raise T5mtlError(f"unknown learning rate schedule {name!r}; "
                         f"expected one of {', '.join(SCHEDULES)}")
    if warmup_steps < 0:
        raise T5mtlError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
    if name == "rsqrt":
        return rsqrt_schedule(base_learning_rate, warmup_steps)
    if name == "constant":
        if warmup_steps == 0:
            return optax.constant_schedule(base_learning_rate)
        return optax.warmup_constant_schedule(init_learning_rate, base_learning_rate, warmup_steps)
    if decay_steps is None or decay_steps <= warmup_steps:
        raise T5mtlError(f"schedule {name!r} needs decay_steps > warmup_steps "
                         f"({warmup_steps}), got decay_steps={decay_steps!r}")
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_learning_rate, base_learning_rate, warmup_steps, decay_steps, end_learning_rate)
    decay = optax.linear_schedule(base_learning_rate, end_learning_rate,
                                  decay_steps - warmup_steps)
    if warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(init_learning_rate, base_learning_rate, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


# ----------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------

@gin.configurable
def adafactor(learning_rate: LearningRate,
              *,
              decay_rate: float = 0.8,
              clipping_threshold: Optional[float] = 1.0,
              multiply_by_parameter_scale: bool = True,
              epsilon1: float = 1e-30,
              factored: bool = True,
              min_dim_size_to_factor: int = 128,
              momentum: Optional[float] = None,
              weight_decay_rate: Optional[float] = None) -> optax.GradientTransformation:
    """``optax.adafactor`` with T5's defaults.

    Factored second moments for matrices whose two largest dims are at least
    ``min_dim_size_to_factor``; second-moment decay ``1 - t^-decay_rate``;
    each update clipped to RMS ``clipping_threshold``; the step scaled by
    ``max(1e-3, RMS(param))`` (optax's fixed epsilon2) when
    ``multiply_by_parameter_scale``; no first moment unless ``momentum``.
    """
    return optax.adafactor(
        learning_rate=learning_rate,
        min_dim_size_to_factor=min_dim_size_to_factor,
        decay_rate=decay_rate,
        multiply_by_parameter_scale=multiply_by_parameter_scale,
        clipping_threshold=clipping_threshold,
        momentum=momentum,
        weight_decay_rate=weight_decay_rate,
        eps=epsilon1,
        factored=factored,
    )


@gin.configurable
def adamw(learning_rate: LearningRate,
          *,
          b1: float = 0.9,
          b2: float = 0.999,
          eps: float = 1e-8,
          weight_decay: float = 0.0,
          decay_1d_params: bool = False) -> optax.GradientTransformation:
    """``optax.adamw``; ``decay_1d_params=False`` spares norm scales and biases."""
    mask = None if decay_1d_params else (lambda params: jax.tree.map(lambda p: p.ndim > 1, params))
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adafactor": adafactor,
    "adamw": adamw,
}


# ----------------------------------------------------------------------------
# The gin edge
# ----------------------------------------------------------------------------

@gin.configurable
def create_optimizer(name: str = "adafactor",
                     learning_rate: Optional[LearningRate] = None,
                     max_grad_norm: Optional[float] = None,
                     frozen_patterns: Optional[Sequence[str]] = None,
                     trainable_patterns: Optional[Sequence[str]] = None,
                     ) -> optax.GradientTransformation:
    """The optimizer a run trains with.

    Args:
      name: ``"adafactor"`` (T5's defaults, see :func:`adafactor`) or
        ``"adamw"``; their hyperparameters are gin-configurable on
        ``adafactor.*`` and ``adamw.*``.
      learning_rate: a float or a schedule; None means
        ``learning_rate_schedule()`` (T5's rsqrt unless gin says otherwise).
      max_grad_norm: clip gradients to this global norm (over the trainable
        parameters) before the optimizer; None for no clipping.
      frozen_patterns, trainable_patterns: moved to `train` (an error here).
    """
    if frozen_patterns is not None or trainable_patterns is not None:
        raise T5mtlError("create_optimizer.frozen_patterns / trainable_patterns moved: bind "
                         "train.frozen_patterns / train.trainable_patterns instead (the train "
                         "step then computes no gradient for the frozen parameters)")
    if name not in OPTIMIZERS:
        raise T5mtlError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    if learning_rate is None:
        learning_rate = learning_rate_schedule()
    tx = OPTIMIZERS[name](learning_rate)
    if max_grad_norm is not None:
        if not max_grad_norm > 0:
            raise T5mtlError(f"max_grad_norm must be positive, got {max_grad_norm!r}")
        tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
    return tx
