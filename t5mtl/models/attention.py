"""Scaled-free dot-product attention with a hand-written backward pass.

T5 attention is ``softmax(q k^T + bias + mask) v`` with no 1/sqrt(d) factor.
Autodiff of that expression keeps the scores and the probabilities and makes
about a dozen passes over the [batch, heads, q, k] tensors; on a CPU those
passes, not the matmuls, set the speed (each 48 MiB pass at 512 tokens x 8
examples costs ~8 ms). The custom VJP below saves only the probabilities and
uses the identity ``sum_k dP * P = sum_d dO * O`` (as FlashAttention does), so
the backward pass reads each [b, h, q, k] tensor fewer times and the step's
peak memory drops (docs/performance.md).

Shapes: q [b, q, h, d], k and v [b, k, h, d]; ``bias`` and ``mask`` broadcast
against [b, h, q, k]. ``bias`` (the relative-position bias) gets a gradient
summed down to its own shape; ``mask`` (0 or a large negative number) is a
constant and gets none.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _scores(q, k, bias, mask):
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = s + mask
    return s


def attention_reference(q, k, v, bias, mask):
    """The same function written plainly, left to autodiff (tests, dropout)."""
    p = jax.nn.softmax(_scores(q, k, bias, mask), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v)


@jax.custom_vjp
def dot_product_attention(q, k, v, bias, mask):
    """softmax(q k^T + bias + mask) v, float32 softmax; returns [b, q, h, d]."""
    return _forward(q, k, v, bias, mask)[0]


def _forward(q, k, v, bias, mask):
    p = jax.nn.softmax(_scores(q, k, bias, mask), axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v)
    return out, (q, k, v, p, out, bias, mask)


def _sum_to_shape(x, shape):
    """Sums x over the axes where `shape` has size 1 (a broadcast's transpose)."""
    axes = tuple(i for i, (n, m) in enumerate(zip(shape, x.shape)) if n == 1 and m != 1)
    return jnp.sum(x, axis=axes, keepdims=True).astype(x.dtype) if axes else x


def _backward(residuals, d_out):
    q, k, v, p, out, bias, mask = residuals
    dt = v.dtype
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

