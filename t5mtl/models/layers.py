"""T5 building blocks in Flax Linen: norm, MLP, attention, relative position bias.

Every parameter carries logical axis names (`nn.with_logical_partitioning`);
one rule table (t5mtl.train.partitioning) maps them onto the device mesh.
Logical names: embed, mlp, heads, kv, vocab, relpos_buckets (and `layers`
for scanned stacks).

Layers take `kernels` (a resolved setting of t5mtl.models.kernels): which
implementation differentiates their matmuls and attention. It never changes
what they compute.
"""
from __future__ import annotations

import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from t5mtl.models import kernels as kernels_lib
from t5mtl.models.kernels.reference import NEG_INF, activation, attention_scores

__all__ = ["NEG_INF", "DenseGeneral", "dense_2d", "RMSNorm", "MLP", "KVPrefix",
           "relative_position_bucket", "RelativePositionBias", "MultiHeadAttention",
           "CROSS_ATTENTION", "value_weighted_attention"]

# The name cross-attention layers sow their `value_weighted_attention` under,
# in the "intermediates" collection (only when the caller makes it mutable).
CROSS_ATTENTION = "cross_attention"


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
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x):
        in_shape = x.shape[-self.n_in:]
        kernel = self.param("kernel", _init(self.stddev, self.kernel_axes),
                            tuple(in_shape) + tuple(self.features), jnp.float32)
        return dense_2d(x.astype(self.dtype), kernel.astype(self.dtype), self.n_in,
                        self.kernels)


def dense_2d(x, kernel, n_in: int = 1, kernels: str = "xla"):
    """x [..., *in] @ kernel [*in, *out] as one 2-D matmul [tokens, in] @ [in, out].

    Same numbers as a dot_general over the 3-D activations, but on XLA CPU the
    gradient of a 3-D dot materializes transposed copies of its [tokens, out]
    cotangent (the weight-gradient dot is canonicalized that way); flattening
    avoids them (docs/performance.md).
    """
    lead, ins, outs = x.shape[:x.ndim - n_in], x.shape[x.ndim - n_in:], kernel.shape[n_in:]
    y = kernels_lib.get(kernels).dense(x.reshape(math.prod(lead), math.prod(ins)),
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
    """act(pre) @ wo as one kernel (the CPU one recomputes act in its VJP)."""
    d_model: int
    gated: bool
    dtype: jnp.dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, pre):
        d_ff = pre[0].shape[-1]
        kernel = self.param("kernel", _init(d_ff ** -0.5, ("mlp", "embed")),
                            (d_ff, self.d_model), jnp.float32)
        flat = tuple(p.reshape(-1, d_ff) for p in pre)
        out = kernels_lib.get(self.kernels).activation_dense(self.gated, flat,
                                                             kernel.astype(self.dtype))
        return out.reshape(pre[0].shape[:-1] + (self.d_model,))


class MLP(nn.Module):
    """ReLU (T5 1.0) or gated-GELU (T5 1.1) feed-forward block."""
    d_ff: int
    gated: bool
    dropout_rate: float
    dtype: jnp.dtype = jnp.float32
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x, deterministic: bool):
        d_model = x.shape[-1]
        dense = lambda feats, axes, std, name: DenseGeneral((feats,), axes, std, 1, self.dtype,
                                                            self.kernels, name=name)
        if self.gated:
            pre = (dense(self.d_ff, ("embed", "mlp"), d_model ** -0.5, "wi_0")(x),
                   dense(self.d_ff, ("embed", "mlp"), d_model ** -0.5, "wi_1")(x))
        else:
            pre = (dense(self.d_ff, ("embed", "mlp"), d_model ** -0.5, "wi")(x),)
        if deterministic or self.dropout_rate == 0.0:
            return _MLPOutput(d_model, self.gated, self.dtype, self.kernels, name="wo")(pre)
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


@flax.struct.dataclass
class KVPrefix:
    """Keys and values prepended to a self-attention layer's own, after the
    projections (prefix tuning, HyperPrompt): an argument of attention, so it
    reaches the encoder and the decoder, packed rows, scanned stacks and the
    decoder's KV cache alike.

      key, value  [b or 1, P, heads, kv]   (one layer) or with a leading
                  [layers] axis when given to a stack
      mask        bool [b or 1, P]: the slots a query may attend to

    Every query of a row may attend to every unmasked slot of its prefix
    (causal masking does not apply to it). The relative-position bias of a
    prefix slot is 0: the slots are memory without a position.
    """
    key: jax.Array
    value: jax.Array
    mask: jax.Array

    @property
    def length(self) -> int:
        return self.key.shape[-3]

    def layer(self, i: int) -> "KVPrefix":
        """Layer i's prefix, from a stack's prefix with a leading [layers] axis."""
        return jax.tree.map(lambda x: x[i], self)


def _with_prefix(prefix: KVPrefix, key, value, bias, mask):
    """Prepends a prefix's slots to keys/values and extends bias (with 0) and
    the additive mask (0 / NEG_INF from prefix.mask) to match."""
    b, _, heads, d_kv = key.shape
    p = prefix.length
    key = jnp.concatenate(
        [jnp.broadcast_to(prefix.key, (b, p, heads, d_kv)).astype(key.dtype), key], axis=1)
    value = jnp.concatenate(
        [jnp.broadcast_to(prefix.value, (b, p, heads, d_kv)).astype(value.dtype), value], axis=1)
    slot_mask = jnp.where(prefix.mask, 0.0, NEG_INF).astype(jnp.float32)[:, None, None, :]
    if mask is None:
        mask = jnp.zeros((1, 1, 1, key.shape[1] - p), jnp.float32)
    rows = max(mask.shape[0], slot_mask.shape[0])
    mask = jnp.concatenate(
        [jnp.broadcast_to(slot_mask, (rows, 1, mask.shape[2], p)),
         jnp.broadcast_to(mask, (rows,) + mask.shape[1:])], axis=-1)
    if bias is not None:
        bias = jnp.concatenate([jnp.zeros(bias.shape[:-1] + (p,), bias.dtype), bias], axis=-1)
    return key, value, bias, mask


def value_weighted_attention(query, key, value, bias, mask):
    """float32 [b, q, k]: the attention probability of each key times the L2
    norm of its value vector, averaged over heads, mean_h alpha_hqk |v_hk|
    (Atlas's attention-distillation quantity; the probabilities before any
    attention dropout). query [b, q, h, d], key and value [b, k, h, d]."""
    weights = jax.nn.softmax(attention_scores(query, key, bias, mask), axis=-1)
    norms = jnp.sqrt(jnp.sum(jnp.square(value.astype(jnp.float32)), axis=-1))   # [b, k, h]
    return jnp.mean(weights * jnp.transpose(norms, (0, 2, 1))[:, :, None, :], axis=1)


class MultiHeadAttention(nn.Module):
    """T5 attention: no 1/sqrt(d) scaling (folded into the init), additive bias.

    With `decode=True` it keeps a cache: self-attention writes one step's
    keys/values at `cache_index` into a [batch, max_len, heads, kv] buffer;
    cross-attention projects the encoder output once and reuses it. A
    `kv_prefix` (self-attention only) is prepended after the cache, so the
    cache holds only the sequence's own keys and values.

    Seam: a cross-attention layer sows `value_weighted_attention` ([b, q, k])
    as "intermediates"/CROSS_ATTENTION when the caller applies the model with
    `mutable=["intermediates"]` (Atlas's attention distillation reads it);
    otherwise it is not computed.
    """
    num_heads: int
    d_kv: int
    dropout_rate: float
    dtype: jnp.dtype = jnp.float32
    is_cross: bool = False
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x_q, x_kv, bias, mask, *, deterministic: bool, decode: bool = False,
                 max_decode_length: int | None = None, kv_prefix: KVPrefix | None = None):
        """bias: relative-position bias or None; mask: additive 0 / NEG_INF; both
        broadcast against [batch, heads, q, k]."""
        d_model = x_q.shape[-1]
        inner = self.num_heads * self.d_kv
        proj = lambda name, std: DenseGeneral((self.num_heads, self.d_kv),
                                              ("embed", "heads", "kv"), std, 1, self.dtype,
                                              self.kernels, name=name)
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
        if kv_prefix is not None:
            key, value, bias, mask = _with_prefix(kv_prefix, key, value, bias, mask)

        query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
        key = nn.with_logical_constraint(key, ("batch", "length", "heads", "kv"))
        value = nn.with_logical_constraint(value, ("batch", "length", "heads", "kv"))
        if deterministic or self.dropout_rate == 0.0:
            out = kernels_lib.get(self.kernels).attention(query, key, value, bias, mask)
        else:   # dropout on the attention weights: plain autodiff
            scores = attention_scores(query, key, bias, mask)
            weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
            weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
            out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        if self.is_cross and self.is_mutable_collection("intermediates"):
            self.sow("intermediates", CROSS_ATTENTION,
                     value_weighted_attention(query, key, value, bias, mask))
        return DenseGeneral((d_model,), ("heads", "kv", "embed"), inner ** -0.5, 2, self.dtype,
                            self.kernels, name="out")(out)

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
