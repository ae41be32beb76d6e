"""PMR's span extractor (Xu et al. 2023, "From Clozing to Comprehending"):
every (start, end) span of "[CLS] query [SEP] context [SEP]" scored at once.

What PMR does (read from its code, DAMO-NLP-SG/PMR, PMR/model.py):

- The extractor sits on the encoder's last hidden states H [b, L, d]. A
  two-layer projection P(h) = W2 gelu(W1 h + b1) + b2 (d -> d' -> d, exact
  erf GELU, dropout after the activation, HF's normal(0.02) init with zero
  biases) is applied to every position, and the logit of span (i, j) is
  P(H_i) . H_j: one bilinear-style product of the start state (projected)
  with the end state. So the scores are one [b, L, d] x [b, d, L] matmul;
  nothing of size [b, L, L, d'] is ever built (the concatenation MLP of
  mrc-for-flat-nested-ner, which PMR's code started from, would be). The
  memory of the scores, their loss and their gradient is O(b L^2) floats:
  at L = 384, b = 32 that is 4.7M floats (19 MB in float32) per tensor.
- The [CLS] "span" (0, 0) carries the query-context relevance: in Wiki
  Anchor Extraction it is 1 when the context holds the anchor; in
  classification as extraction it is 1 for the gold label's description.
- The loss is binary cross-entropy with logits on every valid span
  independently (several gold spans may be 1 at once), summed over the valid
  spans of the batch and divided by their count.
- PMR's valid spans are the upper triangle of the outer product of a label
  mask that is 1 on [CLS] and on the context tokens, so its loss also counts
  the pairs (0, j), j in the context, as (always negative) spans. Here the
  valid set is the brief's cleaner one: (0, 0), plus (i, j) with i <= j both
  in the context (and j - i < max_span_length when given); PMR has no length
  limit in training.
- Decoding takes the best valid span (argmax over the masked matrix); for
  extractive QA the [CLS] span is left out, for classification the label
  whose (0, 0) logit is highest wins and its best context span is the
  rationale.

Parameters (logical axes as t5mtl.train.partitioning maps them):

    transform/kernel [embed, mlp]   transform/bias [mlp]
    out/kernel       [mlp, embed]   out/bias       [embed]
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError

__all__ = ["SpanExtractor", "valid_span_mask", "span_loss", "best_spans"]


def _dense(features: int, axes: tuple[str, str], stddev: float, dtype: Any,
           name: str) -> nn.Dense:
    """A biased Dense whose kernel and bias carry logical axis names."""
    return nn.Dense(features, name=name, dtype=dtype,
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.normal(stddev), axes),
                    bias_init=nn.with_logical_partitioning(
                        nn.initializers.zeros_init(), axes[-1:]))


class SpanExtractor(nn.Module):
    """hidden [b, L, d] -> span logits [b, L, L]: logits[:, i, j] scores the
    span from token i to token j (inclusive), as P(h_i) . h_j.

    hidden_dim: d, the encoder's width. intermediate_dim: d' of the
    projection (PMR's default 1024; None: d). dtype: the projection's
    computation dtype; the span logits are always float32.
    """
    hidden_dim: int
    intermediate_dim: Optional[int] = None
    dropout_rate: float = 0.1
    init_stddev: float = 0.02
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden: jax.Array, deterministic: bool = True) -> jax.Array:
        if hidden.shape[-1] != self.hidden_dim:
            raise T5mtlError(f"SpanExtractor: hidden states of width {hidden.shape[-1]}, "
                             f"expected hidden_dim={self.hidden_dim}")
        inner = self.intermediate_dim or self.hidden_dim
        x = _dense(inner, ("embed", "mlp"), self.init_stddev, self.dtype, "transform")(hidden)
        x = jax.nn.gelu(x, approximate=False)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        starts = _dense(self.hidden_dim, ("mlp", "embed"), self.init_stddev, self.dtype,
                        "out")(x)
        return jnp.einsum("bid,bjd->bij", starts.astype(jnp.float32),
                          hidden.astype(jnp.float32))


def valid_span_mask(context_mask: jax.Array, max_span_length: Optional[int] = None,
                    cls_span: Any = True) -> jax.Array:
    """[b, L] context mask -> [b, L, L] bool: which (start, end) pairs are spans.

    (i, j) is valid when i <= j, both tokens are context tokens and, with
    max_span_length, j - i < max_span_length. The [CLS] span (0, 0) is valid
    where cls_span is true (a bool, or [b] bools: per example, e.g. False for
    SQuAD v1.1, whose every question has an answer). Position 0 is the [CLS]
    token, so a context mask is false there.
    """
    ctx = jnp.asarray(context_mask, bool)
    length = ctx.shape[-1]
    pos = jnp.arange(length)
    offset = pos[None, :] - pos[:, None]                        # j - i
    in_order = offset >= 0
    if max_span_length is not None:
        if max_span_length < 1:
            raise T5mtlError(f"max_span_length must be >= 1, got {max_span_length}")
        in_order &= offset < max_span_length
    valid = ctx[:, :, None] & ctx[:, None, :] & in_order[None]
    cls = jnp.broadcast_to(jnp.asarray(cls_span, bool), ctx.shape[:1])
    corner = (pos[:, None] == 0) & (pos[None, :] == 0)
    return valid | (corner[None] & cls[:, None, None])


def span_loss(logits: jax.Array, labels: jax.Array, valid: jax.Array,
              denominator: Optional[jax.Array] = None) -> jax.Array:
    """PMR's loss: binary cross-entropy with logits of every valid span,
    summed and divided by `denominator` (default: the number of valid spans,
    PMR's normalization; pass the whole batch's count when microbatching).

    logits [b, L, L] float; labels [b, L, L] 0/1; valid [b, L, L] bool.
    """
    x = logits.astype(jnp.float32)
    y = labels.astype(jnp.float32)
    valid = valid.astype(bool)
    per_span = jax.nn.softplus(x) - x * y            # -y log s(x) - (1-y) log(1-s(x))
    total = jnp.sum(jnp.where(valid, per_span, 0.0))
    if denominator is None:
        denominator = jnp.sum(valid.astype(jnp.float32))
    return total / (denominator + 1e-10)


def best_spans(logits: jax.Array, valid: jax.Array, k: int = 1):
    """The k highest-scoring valid spans of each row: (starts [b, k],
    ends [b, k], scores [b, k]), best first. Where a row has fewer than k
    valid spans the remaining scores are -inf (their positions mean nothing).
    """
    b, length, _ = logits.shape
    if not 1 <= k <= length * length:
        raise T5mtlError(f"best_spans: k must be in [1, {length * length}], got {k}")
    flat = jnp.where(valid, logits.astype(jnp.float32), -jnp.inf).reshape(b, length * length)
    scores, index = jax.lax.top_k(flat, k)
    return index // length, index % length, scores
