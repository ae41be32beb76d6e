"""Unscaled dot-product attention with a hand-written backward pass (CPU kernel).

Computes `reference.attention`. Autodiff of that expression keeps both the
scores and the probabilities of every layer for the backward pass; this VJP
keeps one residual at most and uses the identity
``sum_k dP * P = sum_d dO * O`` for the softmax gradient, so the backward
pass needs no [b, h, q, k] reduction:

* float32 activations keep the probabilities (the faster choice on XLA CPU);
* narrower activations (bfloat16) keep only each row's log-normalizer and
  recompute the probabilities with one fused matmul + exp in the backward
  pass, as FlashAttention does, so the model's memory stays below its
  float32 footprint.

``bias`` (the relative-position bias) gets a gradient summed down to its own
shape; ``mask`` is a constant and gets none. Numbers: docs/performance.md.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from t5mtl.models.kernels.reference import attention_scores


@jax.custom_vjp
def dot_product_attention(q, k, v, bias, mask):
    """softmax(q k^T + bias + mask) v, float32 softmax; returns [b, q, h, d]."""
    return _forward(q, k, v, bias, mask)[0]


def keeps_probabilities(dtype) -> bool:
    """Which residual the backward pass gets: the probabilities themselves for
    float32 activations (fastest), each row's log-normalizer for narrower
    ones (the probabilities are then recomputed: a [b, h, q, k] float32
    tensor per layer would cost more memory than the bfloat16 model saves)."""
    return jnp.dtype(dtype) == jnp.float32


def _forward(q, k, v, bias, mask):
    s = attention_scores(q, k, bias, mask)
    row_max = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.exp(s - row_max)
    z = jnp.sum(e, axis=-1, keepdims=True)
    p = e * (1.0 / z)
    out = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v)
    kept = p if keeps_probabilities(v.dtype) else row_max + jnp.log(z)   # [b, h, q, 1]
    return out, (q, k, v, kept, out, bias, mask)


def _sum_to_shape(x, shape):
    """Sums x over the axes where `shape` has size 1 (a broadcast's transpose).

    A bias shared by the batch ([1, h, q, k]) gets its gradient summed over
    the batch as a ones-vector matmul: as a reduction, XLA CPU merges the
    sums of all layers into one slow fusion that keeps every layer's
    [b, h, q, k] gradient alive until the end of the backward pass."""
    axes = tuple(i for i, (n, m) in enumerate(zip(shape, x.shape)) if n == 1 and m != 1)
    if axes == (0,):
        ones = jnp.ones((x.shape[0],), x.dtype)
        return jnp.einsum("b,b...->...", ones, x)[None]
    return jnp.sum(x, axis=axes, keepdims=True).astype(x.dtype) if axes else x


def _backward(residuals, d_out):
    q, k, v, kept, out, bias, mask = residuals
    dt = v.dtype
    if keeps_probabilities(dt):
        p = kept
    else:
        # Recompute the probabilities from the row log-normalizers. The
        # recomputation is made to depend on the incoming cotangent (adding 0 x
        # one of its elements): otherwise XLA CPU merges it with the forward's
        # identical expression (its optimization barriers are expanded away
        # before CSE) and keeps the forward's tensor alive after all.
        q = q + jnp.zeros((), q.dtype) * d_out[(0,) * d_out.ndim].astype(q.dtype)
        p = jnp.exp(attention_scores(q, k, bias, mask) - kept)
    d_v = jnp.einsum("bhqk,bqhd->bkhd", p.astype(dt), d_out)
    d_p = jnp.einsum("bqhd,bkhd->bhqk", d_out, v, preferred_element_type=jnp.float32)
    # sum_k dP * P == sum_d dO * O: a [b, q, h, d] reduction instead of [b, h, q, k].
    delta = jnp.einsum("bqhd,bqhd->bhq", d_out.astype(jnp.float32), out.astype(jnp.float32))
    d_s = p * (d_p - delta[..., None])
    d_q = jnp.einsum("bhqk,bkhd->bqhd", d_s.astype(dt), k)
    d_k = jnp.einsum("bhqk,bqhd->bkhd", d_s.astype(dt), q)
    d_bias = None if bias is None else _sum_to_shape(d_s, bias.shape).astype(bias.dtype)
    d_mask = None if mask is None else jnp.zeros_like(mask)
    return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v, d_bias, d_mask


dot_product_attention.defvjp(_forward, _backward)

