"""Token cross-entropy for text-to-text models: z-loss, label smoothing and
the loss-normalizing choices T5/t5x offer.

The loss of a batch is ``numerator / denominator``. The numerator is a
weighted sum over target tokens (additive over examples, so it can be summed
over microbatches); the denominator is one of:

- ``"num_real_target_tokens"``: the sum of the target weights (pretraining);
- ``"constant"``: a fixed ``loss_normalizing_factor`` (t5x's finetuning
  choice, e.g. 233472 = 2048 x 114);
- ``"average_per_sequence"``: the number of sequences, each sequence's token
  losses first averaged over that sequence's own tokens. With ``segment_ids``
  (packed examples) a "sequence" is a packed segment.

Under gradient accumulation the denominator must be the whole batch's, not a
microbatch's: pass ``loss_denominator`` (see :func:`loss_denominator_fn` and
``t5mtl.train.train_step``) and every loss term returned is additive over
microbatches.

Per task: given ``task_ids`` (the task index of every target token, -1 at
padding) and ``num_tasks``, the metrics gain vectors over tasks:
``task/loss`` (each task's loss on its own tokens, normalized as the batch
loss is but over that task's tokens, sequences or by the constant),
``task/target_tokens``, ``task/correct_tokens`` and ``task/accuracy``. With
the whole batch's ``task_loss_denominator`` they too are additive over
microbatches; ``task/loss`` is differentiable, for per-task gradient
methods.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError

NUM_REAL_TARGET_TOKENS = "num_real_target_tokens"
CONSTANT = "constant"
AVERAGE_PER_SEQUENCE = "average_per_sequence"
NORMALIZATIONS = (NUM_REAL_TARGET_TOKENS, CONSTANT, AVERAGE_PER_SEQUENCE)

# Where a train step hands the whole batch's normalizers to each microbatch.
LOSS_DENOMINATOR_KEY = "loss_denominator"

DEFAULT_Z_LOSS = 1e-4

Metrics = dict[str, jax.Array]


def check_normalization(normalization: str,
                        loss_normalizing_factor: Optional[float] = None) -> None:
    """Raises T5mtlError for an unknown normalization or a missing constant."""
    if normalization not in NORMALIZATIONS:
        raise T5mtlError(
            f"unknown loss normalization {normalization!r}; "
            f"expected one of {', '.join(NORMALIZATIONS)}")
    if normalization == CONSTANT and not (
            loss_normalizing_factor is not None and loss_normalizing_factor > 0):
        raise T5mtlError(
            "loss normalization 'constant' needs a positive loss_normalizing_factor, "
            f"got {loss_normalizing_factor!r}")


def _sequence_token_counts(weights: jax.Array, segment_ids: Optional[jax.Array]) -> jax.Array:
    """For each token, the total weight of the sequence (segment) it belongs to."""
    if segment_ids is None:
        return jnp.broadcast_to(jnp.sum(weights, axis=-1, keepdims=True), weights.shape)
    same = segment_ids[..., :, None] == segment_ids[..., None, :]
    return jnp.sum(same * weights[..., None, :], axis=-1)


def token_weights(weights: jax.Array, normalization: str,
                  segment_ids: Optional[jax.Array] = None) -> jax.Array:
    """Per-token weights of the loss numerator under a normalization choice."""
    if normalization != AVERAGE_PER_SEQUENCE:
        return weights
    counts = _sequence_token_counts(weights, segment_ids)
    safe = jnp.where(counts > 0, counts, 1.0)
    return jnp.where(counts > 0, weights / safe, 0.0)


def loss_denominator(weights: jax.Array,
                     normalization: str = NUM_REAL_TARGET_TOKENS,
                     loss_normalizing_factor: Optional[float] = None,
                     segment_ids: Optional[jax.Array] = None) -> jax.Array:
    """The denominator of a batch's loss (see the module docstring).

    Args:
      weights: [batch, length] target weights (1 for real target tokens).
      normalization: one of NORMALIZATIONS.
      loss_normalizing_factor: the constant, for ``"constant"``.
      segment_ids: optional [batch, length] packed-segment ids.
    Returns:
      A float32 scalar, never below the smallest positive float32 (an
      all-padding batch gives loss 0, not NaN).
    """
    check_normalization(normalization, loss_normalizing_factor)
    if normalization == CONSTANT:
        return jnp.asarray(loss_normalizing_factor, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    denom = jnp.sum(token_weights(weights, normalization, segment_ids))
    return jnp.maximum(denom, jnp.finfo(jnp.float32).tiny)


def task_sums(values: jax.Array, task_ids: jax.Array, num_tasks: int) -> jax.Array:
    """[num_tasks] sums of `values` over the positions of each task (ids of
    -1, padding, and ids >= num_tasks count nowhere)."""
    ids = jnp.where(task_ids < 0, num_tasks, task_ids).astype(jnp.int32).reshape(-1)
    return jax.ops.segment_sum(values.reshape(-1), ids, num_segments=num_tasks + 1)[:num_tasks]


def task_loss_denominator(weights: jax.Array, task_ids: jax.Array, num_tasks: int,
                          normalization: str = NUM_REAL_TARGET_TOKENS,
                          loss_normalizing_factor: Optional[float] = None,
                          segment_ids: Optional[jax.Array] = None) -> jax.Array:
    """[num_tasks]: `loss_denominator` of each task's own tokens."""
    check_normalization(normalization, loss_normalizing_factor)
    if normalization == CONSTANT:
        return jnp.full((num_tasks,), loss_normalizing_factor, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    counts = task_sums(token_weights(weights, normalization, segment_ids), task_ids, num_tasks)
    return jnp.maximum(counts, jnp.finfo(jnp.float32).tiny)


# The arguments of cross_entropy_with_z_loss shadow the functions' names.
_loss_denominator = loss_denominator
_task_loss_denominator = task_loss_denominator


def loss_denominator_fn(weights_key: str = "decoder_loss_weights",
                        normalization: str = NUM_REAL_TARGET_TOKENS,
                        loss_normalizing_factor: Optional[float] = None,
                        segment_ids_key: Optional[str] = None,
                        ) -> Callable[[Mapping[str, Any]], jax.Array]:
    """Returns ``batch -> denominator``, for ``make_train_step``.

    The train step calls it once on the whole (global) batch and hands the
    result to every microbatch's loss, so accumulating over microbatches
    equals one full-batch step.
    """
    check_normalization(normalization, loss_normalizing_factor)

    def fn(batch: Mapping[str, Any]) -> jax.Array:
        if weights_key not in batch:
            raise T5mtlError(
                f"the batch has no {weights_key!r} to normalize the loss by; "
                f"it has {sorted(batch)}")
        segment_ids = batch[segment_ids_key] if segment_ids_key else None
        return loss_denominator(batch[weights_key], normalization,
                                loss_normalizing_factor, segment_ids)

    return fn


def cross_entropy_with_z_loss(
        logits: jax.Array,
        targets: jax.Array,
        weights: Optional[jax.Array] = None,
        *,
        z_loss: float = DEFAULT_Z_LOSS,
        label_smoothing: float = 0.0,
        normalization: str = NUM_REAL_TARGET_TOKENS,
        loss_normalizing_factor: Optional[float] = None,
        segment_ids: Optional[jax.Array] = None,
        loss_denominator: Optional[jax.Array] = None,
        task_ids: Optional[jax.Array] = None,
        num_tasks: int = 0,
        task_loss_denominator: Optional[jax.Array] = None,
) -> tuple[jax.Array, Metrics]:
    """Softmax cross-entropy with T5's z-loss and label smoothing.

    Per token: ``-sum_v q_v log p_v - H(q) + z_loss * logsumexp(logits)^2``
    where ``q`` puts ``1 - label_smoothing`` on the target and
    ``label_smoothing / (V - 1)`` on every other id, and ``H(q)`` is the
    entropy of ``q`` (so a perfect prediction costs 0, as in t5x).

    Args:
      logits: [batch, length, vocab], any float dtype (computed in float32).
      targets: [batch, length] int ids.
      weights: [batch, length] target weights; default ``targets > 0``.
      z_loss: the coefficient of ``logsumexp(logits)^2``.
      label_smoothing: in [0, 1).
      normalization: one of NORMALIZATIONS (see the module docstring).
      loss_normalizing_factor: the constant, for ``"constant"``.
      segment_ids: [batch, length] packed-segment ids, for per-sequence
        averaging of packed examples.
      loss_denominator: a precomputed denominator (the whole batch's under
        gradient accumulation); computed from ``weights`` when None.
      task_ids: [batch, length] task index per target token (-1 at padding).
      num_tasks: with ``task_ids``, the number of tasks (module docstring).
      task_loss_denominator: [num_tasks] precomputed per-task denominators
        (the whole batch's); computed from ``weights`` when None.
    Returns:
      ``(loss, metrics)``. metrics has ``loss``, ``cross_entropy`` and
      ``z_loss`` (normalized like the loss, so additive over microbatches),
      the counts ``target_tokens``, ``correct_tokens`` and ``num_sequences``,
      and ``accuracy`` (recompute it from the counts after summing: see
      :func:`finalize_metrics`).
    """
    check_normalization(normalization, loss_normalizing_factor)
    if not 0.0 <= label_smoothing < 1.0:
        raise T5mtlError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if logits.shape[:-1] != targets.shape:
        raise T5mtlError(
            f"logits shape {logits.shape} does not match targets shape {targets.shape}")
    logits = logits.astype(jnp.float32)
    vocab_size = logits.shape[-1]
    if weights is None:
        weights = (targets > 0).astype(jnp.float32)  # T5's pad id is 0
    weights = jnp.asarray(weights, jnp.float32)

    log_z = jax.nn.logsumexp(logits, axis=-1)
    # The target's logit as a masked sum, not take_along_axis: its gradient is
    # then a fused select instead of a scatter into a zeroed [.., vocab] buffer.
    is_target = jnp.arange(vocab_size, dtype=jnp.int32) == targets[..., None].astype(jnp.int32)
    target_logits = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)
    target_log_probs = target_logits - log_z
    if label_smoothing > 0.0:
        log_probs = logits - log_z[..., None]
        confidence = 1.0 - label_smoothing
        low_confidence = label_smoothing / (vocab_size - 1)
        entropy = -(confidence * jnp.log(confidence)
                    + (vocab_size - 1) * low_confidence * jnp.log(low_confidence))
        # sum_v q_v log p_v without materializing a one-hot [.., vocab] array.
        expected_log_prob = (low_confidence * jnp.sum(log_probs, axis=-1)
                             + (confidence - low_confidence) * target_log_probs)
        token_ce = -expected_log_prob - entropy
    else:
        token_ce = -target_log_probs
    token_z = z_loss * jnp.square(log_z)

    if loss_denominator is None:
        loss_denominator = _loss_denominator(
            weights, normalization, loss_normalizing_factor, segment_ids)
    denom = jnp.asarray(loss_denominator, jnp.float32)
    numerator_weights = token_weights(weights, normalization, segment_ids)
    ce = jnp.sum(token_ce * numerator_weights) / denom
    zl = jnp.sum(token_z * numerator_weights) / denom
    loss = ce + zl

    is_correct = _is_argmax(logits, target_logits, targets) * weights
    metrics = {
        "loss": loss,
        "cross_entropy": ce,
        "z_loss": zl,
        "target_tokens": jnp.sum(weights),
        "correct_tokens": jnp.sum(is_correct),
        "num_sequences": jnp.sum(token_weights(weights, AVERAGE_PER_SEQUENCE, segment_ids)),
    }
    if task_ids is not None and num_tasks > 0:
        if task_loss_denominator is None:
            task_loss_denominator = _task_loss_denominator(
                weights, task_ids, num_tasks, normalization, loss_normalizing_factor, segment_ids)
        numerators = task_sums((token_ce + token_z) * numerator_weights, task_ids, num_tasks)
        metrics["task/loss"] = numerators / jnp.asarray(task_loss_denominator, jnp.float32)
        metrics["task/target_tokens"] = task_sums(weights, task_ids, num_tasks)
        metrics["task/correct_tokens"] = task_sums(is_correct, task_ids, num_tasks)
    return loss, finalize_metrics(metrics)


def _is_argmax(logits, target_logits, targets):
    """argmax(logits) == targets (ties go to the lowest id, as argmax's), from
    two fused reductions: XLA CPU's variadic argmax reduce is ~10x slower."""
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
    ids = jnp.arange(logits.shape[-1], dtype=jnp.int32)
    earlier_top = jnp.any((logits == top[..., None]) & (ids < targets[..., None]), axis=-1)
    return (target_logits == top) & ~earlier_top


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """float32 [...]: log p(target id) under softmax(logits [..., V]), for
    scoring (no custom gradient: cross_entropy_with_z_loss is the training loss)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def finalize_metrics(metrics: Mapping[str, jax.Array]) -> Metrics:
    """Recomputes the ratio metric ``accuracy`` from summed counts.

    Call it after summing metrics over microbatches or steps; every other
    entry this module returns is additive (``task/accuracy`` is recomputed
    from ``task/correct_tokens`` and ``task/target_tokens`` likewise).
    """
    out = dict(metrics)
    for prefix in ("", "task/"):
        if f"{prefix}correct_tokens" in out and f"{prefix}target_tokens" in out:
            tokens = out[f"{prefix}target_tokens"]
            safe = jnp.where(tokens > 0, tokens, 1.0)
            out[f"{prefix}accuracy"] = jnp.where(tokens > 0, out[f"{prefix}correct_tokens"] / safe,
                                                 0.0)
    return out
