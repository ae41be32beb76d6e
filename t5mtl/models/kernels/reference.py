"""The model's arithmetic written plainly, left to autodiff: the reference.

Every kernel switch setting computes these functions; "xla" runs them as
written (so `jax.jvp`, forward-over-reverse and any XLA backend work), the
CPU kernels (`cpu_*.py`) give the same values with hand-written VJPs.

Attention is T5's: ``softmax(q k^T + bias + mask) v`` with no 1/sqrt(d)
factor (folded into the query init), the softmax in float32. Shapes: q
[b, q, h, d], k and v [b, k, h, d]; ``bias`` and ``mask`` broadcast against
[b, h, q, k]; ``mask`` holds 0 or `NEG_INF`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Masked scores and logits: a large finite negative number rather than -inf,
# so that a fully masked row (padding) gives a uniform softmax instead of NaN.
# The one constant for attention masks, logit filters and beam search.
NEG_INF = -1e10


def attention_scores(q, k, bias, mask):
    """float32 q k^T + bias + mask: [b, h, q, k]."""
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = s + mask
    return s


def attention(q, k, v, bias, mask):
    """softmax(q k^T + bias + mask) v, float32 softmax; returns [b, q, h, d]."""
    p = jax.nn.softmax(attention_scores(q, k, bias, mask), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v)


def activation(gated: bool, pre):
    """gelu(h0) * h1 for gated-GELU (T5 1.1), relu(h) for T5 1.0."""
    if gated:
        return jax.nn.gelu(pre[0], approximate=True) * pre[1]
    return jax.nn.relu(pre[0])


def activation_dense(gated: bool, pre: tuple, kernel):
    """act(pre) @ kernel; pre: ([tokens, d_ff],) or two of them, kernel [d_ff, d_model]."""
    return jnp.dot(activation(gated, pre), kernel)


def dense(x, kernel):
    """x [tokens, in] @ kernel [in, out]."""
    return jnp.dot(x, kernel)
