"""T5 building blocks in Flax Linen: norm, MLP, attention, relative position bias.

Every parameter carries logical axis names (`nn.with_logical_partitioning`);
one rule table (t5mtl.train.partitioning) maps them onto the device mesh.
Logical names: embed, mlp, heads, kv, vocab, relpos_buckets (and `layers`
for scanned stacks).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from t5mtl.models.attention import attention_scores, dot_product_attention
from t5mtl.models.ffn_output import activation, activation_dense
from t5mtl.models.weight_grad import dense

# A large finite negative number rather than -inf, so that a fully masked
# row (padding) gives a uniform softmax instead of NaN.
NEG_INF = -1e10


def _init(stddev: float, axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


class DenseGeneral(nn.Module):
    """x [..., *in] @ kernel [*in, *features], contracting the last `n_in` axes.

    Like nn.DenseGeneral, but the kernel is created in its final shape, so its
    logical axis names (one per kernel dimension) always match its rank.
    """
    features: tuple[int, ...]
    kernel_axes: tuple[str, ...]
    stddev: float
    n_in: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        in_shape = x.shape[-self.n_in:]
        kernel = self.param("kernel", _init(self.stddev, self.kernel_axes),
                            tuple(in_shape) + tuple(self.features), jnp.float32)
        return dense_2d(x.astype(self.dtype), kernel.astype(self.dtype), self.n_in)


def dense_2d(x, kernel, n_in: int = 1):
    """x [..., *in] @ kernel [*in, *out] as one 2-D matmul [tokens, in] @ [in, out].

    Same numbers as a dot_general over the 3-D activations, but on XLA CPU the
    gradient of a 3-D dot materializes transposed copies of its [tokens, out]
    cotangent (the weight-gradient dot is canonicalized that way); flattening
    halves an MLP block's backward time there (docs/performance.md). The
    weight gradient runs as a row-major matmul on CPU (models/weight_grad.py).
    """
    lead, ins, outs = x.shape[:x.ndim - n_in], x.shape[x.ndim - n_in:], kernel.shape[n_in:]
    y = dense(x.reshape(math.prod(lead), math.prod(ins)),
              kernel.reshape(math.prod(ins), math.prod(outs)))
    return y.reshape(lead + outs)


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no bias and no mean subtraction."""
    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale).astype(self.dtype)


class _MLPOutput(nn.Module):
    """act(pre) @ wo through the recomputing VJP (t5mtl.models.ffn_output)."""
    d_model: int
    gated: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pre):
        d_ff = pre[0].shape[-1]
        kernel = self.param("kernel", _init(d_ff ** -0.5, ("mlp", "embed")),
                            (d_ff, self.d_model), jnp.float32)
        flat = tuple(p.reshape(-1, d_ff) for p in pre)
        out = activation_dense(self.gated, flat, kernel.astype(self.dtype))
        return out.reshape(pre[0].shape[:-1] + (self.d_model,))


class MLP(nn.Module):
    """ReLU (T5 1.0) or gated-GELU (T5 1.1) feed-forward block."""
    d_ff: int
    gated: bool
    dropout_rate: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        d_model = x.shape[-1]
        dense = lambda feats, axes, std, name: DenseGeneral((feats,), axes, std, 1, self.dtype,
                                                            name=name)
        if self.gated:
            pre = (dense(self.d_ff, ("embed", "mlp"), d_model ** -0.5, "wi_0")(x),
                   dense(self.d_ff, ("embed", "mlp"), d_model ** -0.5, "wi_1")(x))
        else:
            pre = (dense(self.d_ff, ("embed", "mlp"), d_model ** -0.5, "wi")(x),)
        if deterministic or self.dropout_rate == 0.0:
            return _MLPOutput(d_model, self.gated, self.dtype, name="wo")(pre)
        h = nn.with_logical_constraint(activation(self.gated, pre), ("batch", "length", "mlp"))
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return dense(d_model, ("mlp", "embed"), self.d_ff ** -0.5, "wo")(h)


def relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int,
                             max_distance: int):
    """Maps key_pos - query_pos to a bucket: exact for small, log-spaced for far.

    Bidirectional (encoder): half the buckets for keys after the query.
    Causal (decoder): keys after the query share bucket 0 (they are masked anyway).
    """
    buckets = 0
    n = num_buckets
    if bidirectional:
        n //= 2
        buckets = (relative_position > 0).astype(jnp.int32) * n
        distance = jnp.abs(relative_position)
    else:
        distance = jnp.maximum(-relative_position, 0)
    max_exact = n // 2
    is_small = distance < max_exact
    # Clamp before the log: distance 0 goes through the "small" branch.
    far = max_exact + (
        jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
        / math.log(max_distance / max_exact) * (n - max_exact)).astype(jnp.int32)
    far = jnp.minimum(far, n - 1)
    return buckets + jnp.where(is_small, distance, far)


class RelativePositionBias(nn.Module):
    """One bias table per stack, shared by its layers: [buckets, heads]."""
    num_buckets: int
    max_distance: int
    num_heads: int
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions, key_positions):
        """positions: int [batch or 1, len]. Returns float32 [batch, heads, q, k]."""
        table = self.param("rel_embedding",
                           _init(1.0, ("relpos_buckets", "heads")),
                           (self.num_buckets, self.num_heads), jnp.float32)
        rel = key_positions[:, None, :] - query_positions[:, :, None]
        bucket = relative_position_bucket(rel, self.bidirectional, self.num_buckets,
                                          self.max_distance)
        values = jnp.take(table, bucket, axis=0)        # [b, q, k, h]
        return jnp.transpose(values, (0, 3, 1, 2))


class MultiHeadAttention(nn.Module):
    """T5 attention: no 1/sqrt(d) scaling (folded into the init), additive bias.

    With `decode=True` it keeps a cache: self-attention writes one step's
    keys/values at `cache_index` into a [batch, max_len, heads, kv] buffer;
    cross-attention projects the encoder output once and reuses it.
    """
    num_heads: int
    d_kv: int
    dropout_rate: float
    dtype: jnp.dtype = jnp.float32
    is_cross: bool = False

    @nn.compact
    def __call__(self, x_q, x_kv, bias, mask, *, deterministic: bool, decode: bool = False,
                 max_decode_length: int | None = None):
        """bias: relative-position bias or None; mask: additive 0 / NEG_INF; both
        broadcast against [batch, heads, q, k]."""
        d_model = x_q.shape[-1]
        inner = self.num_heads * self.d_kv
        proj = lambda name, std: DenseGeneral((self.num_heads, self.d_kv),
                                              ("embed", "heads", "kv"), std, 1, self.dtype,
                                              name=name)
        query = proj("query", (d_model * self.d_kv) ** -0.5)(x_q)

        if self.is_cross and decode and self.has_variable("cache", "cross_key"):
            key = self.get_variable("cache", "cross_key")
            value = self.get_variable("cache", "cross_value")
        else:
            key = proj("key", d_model ** -0.5)(x_kv)
            value = proj("value", d_model ** -0.5)(x_kv)
            if self.is_cross and decode:
                self.put_variable("cache", "cross_key", key)
                self.put_variable("cache", "cross_value", value)

        if decode and not self.is_cross:
            key, value = self._update_cache(key, value, max_decode_length)

        query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
        key = nn.with_logical_constraint(key, ("batch", "length", "heads", "kv"))
        value = nn.with_logical_constraint(value, ("batch", "length", "heads", "kv"))
        if deterministic or self.dropout_rate == 0.0:
            out = dot_product_attention(query, key, value, bias, mask)
        else:   # dropout on the attention weights: plain autodiff
            scores = attention_scores(query, key, bias, mask)
            weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
            weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
            out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        return DenseGeneral((d_model,), ("heads", "kv", "embed"), inner ** -0.5, 2, self.dtype,
                            name="out")(out)

    def _update_cache(self, key, value, max_decode_length):
        batch, _, heads, d_kv = key.shape
        shape = (batch, max_decode_length, heads, d_kv)
        cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        i = index.value
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, i, 0, 0))
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, i, 0, 0))
        index.value = i + key.shape[1]
        return cached_key.value, cached_value.value
