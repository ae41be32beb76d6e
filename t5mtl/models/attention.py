"""Unscaled dot-product attention with a hand-written backward pass.

T5 attention is ``softmax(q k^T + bias + mask) v`` with no 1/sqrt(d) factor.
Autodiff of that expression keeps both the scores and the probabilities of
every layer for the backward pass (at 8 x 512 tokens, 48 MiB per tensor per
layer). The custom VJP below keeps only the probabilities and uses the
identity ``sum_k dP * P = sum_d dO * O`` for the softmax gradient, so the
backward pass needs neither the scores nor a [b, h, q, k] reduction.

Recomputing the probabilities in the backward pass from each row's
log-normalizer (as FlashAttention does) would save another ~420 MiB at
8 x 512 tokens, but costs a matmul and an exp per layer: the train step is
~7% slower on the 2-core CPU, and t5mtl's peak memory is below HF PyTorch's
either way (docs/performance.md).

Shapes: q [b, q, h, d], k and v [b, k, h, d]; ``bias`` and ``mask`` broadcast
against [b, h, q, k]. ``bias`` (the relative-position bias) gets a gradient
summed down to its own shape; ``mask`` (0 or a large negative number) is a
constant and gets none.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_scores(q, k, bias, mask):
    """float32 q k^T + bias + mask: [b, h, q, k]."""
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = s + mask
    return s


def attention_reference(q, k, v, bias, mask):
    """The same function written plainly, left to autodiff (tests, dropout)."""
    p = jax.nn.softmax(attention_scores(q, k, bias, mask), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v)


@jax.custom_vjp
def dot_product_attention(q, k, v, bias, mask):
    """softmax(q k^T + bias + mask) v, float32 softmax; returns [b, q, h, d]."""
    return _forward(q, k, v, bias, mask)[0]


def _forward(q, k, v, bias, mask):
    s = attention_scores(q, k, bias, mask)
    e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    p = e * (1.0 / jnp.sum(e, axis=-1, keepdims=True))
    out = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v)
    return out, (q, k, v, p, out, bias, mask)


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

