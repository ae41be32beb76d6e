"""Atlas's retriever-training targets (Izacard et al. 2022, section 2.2), as
pure functions over [batch, passages] arrays: what the reader thinks of each
of a question's k retrieved passages, turned into a distribution the
retriever is trained to match.

ADist (attention distillation, Atlas's "adist" = "evalnormsum"): for each
passage, the reader's decoder cross-attention to that passage's tokens, each
key's attention probability times the L2 norm of its value vector,

    score_k = 1 / (L T) sum_{layers} sum_{t: target token} sum_{n in passage k}
              mean_{heads} alpha_{t,n} |v_n|

(layers L, T the non-padding decoder tokens, padding passage tokens left out;
`adist_scores`, from the maps `cross_attention_maps` collects). Atlas divides
further by a constant 256 and uses a target temperature of 0.01, so Atlas's
choice is `target_distribution(score, valid, 2.56)` here
(ATLAS_TARGET_TEMPERATURE).

PDist (perplexity distillation, Atlas's "pdist" = "ppmean"): the reader's
log-likelihood of the answer given the question and passage k alone (FiD with
one passage), averaged over the answer tokens in Atlas's code
(reduction="mean"; the paper's formula sums them: reduction="sum"), target
temperature 0.01.

Both targets are p_k = softmax_k(score_k / tau) over the question's real
passages (padding passages get 0), under stop-gradient: the reader is not
trained by them. The retriever's distribution is softmax_k(s(q, d_k) / theta)
over the same passages and its loss KL(target || retriever) per question
(`retriever_kl`). Atlas averages torch's KLDivLoss over questions x passages,
i.e. this KL divided by k; Atlas's theta is sqrt(d) x 0.01 on dot products.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models.layers import CROSS_ATTENTION

DISTILLATIONS = ("none", "adist", "pdist")
REDUCTIONS = ("mean", "sum")
# Atlas's target temperatures in the units of the scores here (module docstring).
ATLAS_TARGET_TEMPERATURE = {"adist": 256 * 0.01, "pdist": 0.01}


def cross_attention_maps(intermediates: Mapping[str, Any]) -> jax.Array:
    """float32 [layers, b, t, k]: every decoder layer's sown cross-attention
    (t5mtl.models.layers.value_weighted_attention) from the "intermediates"
    collection of a `Transformer.decode` applied with
    mutable=["intermediates"], per-layer or scanned."""
    decoder = intermediates.get("decoder", {})
    if "layers" in decoder:                                      # scanned: [L, ...] already
        return decoder["layers"]["encoder_decoder_attention"][CROSS_ATTENTION][0]
    names = sorted((n for n in decoder if n.startswith("layers_")),
                   key=lambda n: int(n.split("_")[1]))
    if not names:
        raise T5mtlError("no decoder cross-attention in the intermediates: apply "
                         "Transformer.decode with mutable=['intermediates']")
    return jnp.stack([decoder[n]["encoder_decoder_attention"][CROSS_ATTENTION][0]
                      for n in names])


def _weights(target_weights, shape, what):
    w = jnp.asarray(target_weights)
    if tuple(w.shape) != tuple(shape):
        raise T5mtlError(f"{what}: target weights must be {tuple(shape)}, got {tuple(w.shape)}")
    return (w > 0).astype(jnp.float32)


def adist_scores(maps: jax.Array, passage_tokens_mask: jax.Array,
                 target_weights: jax.Array) -> jax.Array:
    """float32 [b, p]: ADist's per-passage score (module docstring), stop-gradient.

    maps [L, b, t, p x l] (`cross_attention_maps` of a FiD reader);
    passage_tokens_mask [b, p, l] bool, the reader's real encoder tokens;
    target_weights [b, t], > 0 at real decoder (answer) tokens."""
    if maps.ndim != 4 or passage_tokens_mask.ndim != 3:
        raise T5mtlError(f"adist_scores: maps must be [layers, b, t, p*l] and the passage "
                         f"mask [b, p, l], got {tuple(maps.shape)} and "
                         f"{tuple(passage_tokens_mask.shape)}")
    layers, b, t, keys = maps.shape
    _, p, length = passage_tokens_mask.shape
    if passage_tokens_mask.shape[0] != b or p * length != keys:
        raise T5mtlError(f"adist_scores: maps {tuple(maps.shape)} do not cover the passages "
                         f"{tuple(passage_tokens_mask.shape)}")
    w = _weights(target_weights, (b, t), "adist_scores")
    maps = jax.lax.stop_gradient(maps.astype(jnp.float32)).reshape(layers, b, t, p, length)
    per_passage = jnp.sum(jnp.where(passage_tokens_mask[None, :, None], maps, 0.0), axis=-1)
    total = jnp.einsum("lbtp,bt->bp", per_passage, w)
    return total / (layers * jnp.maximum(jnp.sum(w, axis=1), 1.0))[:, None]


def pdist_scores(log_probs: jax.Array, target_weights: jax.Array,
                 reduction: str = "mean") -> jax.Array:
    """float32 [b, p]: PDist's per-passage score, stop-gradient.

    log_probs [b, p, t]: the reader's log p(answer token t | question,
    passage p alone); target_weights [b, t]; reduction "mean" (Atlas's
    code: the mean over the real answer tokens) or "sum"."""
    if reduction not in REDUCTIONS:
        raise T5mtlError(f"PDist reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if log_probs.ndim != 3:
        raise T5mtlError(f"pdist_scores: log_probs must be [b, passages, t], got "
                         f"{tuple(log_probs.shape)}")
    b, _, t = log_probs.shape
    w = _weights(target_weights, (b, t), "pdist_scores")
    total = jnp.einsum("bpt,bt->bp", jax.lax.stop_gradient(log_probs.astype(jnp.float32)), w)
    if reduction == "sum":
        return total
    return total / jnp.maximum(jnp.sum(w, axis=1), 1.0)[:, None]


def _check_pair(scores, valid, what):
    if scores.ndim != 2 or tuple(valid.shape) != tuple(scores.shape):
        raise T5mtlError(f"{what}: scores and valid must both be [b, passages], got "
                         f"{tuple(scores.shape)} and {tuple(valid.shape)}")


def _masked_log_softmax(scores, valid, temperature):
    if not temperature > 0:
        raise T5mtlError(f"softmax temperature must be positive, got {temperature!r}")
    logits = jnp.where(valid, scores.astype(jnp.float32) / temperature, -jnp.inf)
    any_valid = jnp.any(valid, axis=1, keepdims=True)
    logits = jnp.where(any_valid, logits, 0.0)                  # no NaN from all-padding rows
    return jnp.where(valid, jax.nn.log_softmax(logits, axis=1), -jnp.inf)


def target_distribution(scores: jax.Array, valid: jax.Array, temperature: float) -> jax.Array:
    """float32 [b, p]: softmax over each question's valid passages of
    scores / temperature, 0 at padding passages (a row of none: all 0);
    stop-gradient."""
    _check_pair(scores, valid, "target_distribution")
    valid = valid.astype(bool)
    logp = _masked_log_softmax(jax.lax.stop_gradient(scores), valid, temperature)
    return jnp.where(valid, jnp.exp(logp), 0.0)


def retriever_kl(target: jax.Array, retriever_scores: jax.Array, valid: jax.Array,
                 temperature: float) -> jax.Array:
    """float32 [b]: KL(target || softmax(retriever_scores / temperature)) per
    question over its valid passages (0 log 0 = 0; 0 for a question without
    any). Differentiable in `retriever_scores`; `target` is used as given."""
    _check_pair(retriever_scores, valid, "retriever_kl")
    if tuple(target.shape) != tuple(retriever_scores.shape):
        raise T5mtlError(f"retriever_kl: target {tuple(target.shape)} and retriever scores "
                         f"{tuple(retriever_scores.shape)} differ")
    valid = valid.astype(bool)
    logp = _masked_log_softmax(retriever_scores, valid, temperature)
    use = valid & (target > 0)
    safe_t = jnp.where(use, target, 1.0)
    terms = jnp.where(use, target * (jnp.log(safe_t) - jnp.where(use, logp, 0.0)), 0.0)
    return jnp.sum(terms, axis=1)
