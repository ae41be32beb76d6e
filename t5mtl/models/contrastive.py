"""InfoNCE with in-batch negatives over the *global* batch: the loss of dual
encoders (CLIP's image-text pairs, a retriever's question-passage pairs).

For a batch of N pairs (q_i, k_i), logits L = scale * Q K^T ([N, N]); pair i
is the positive of row i and every other key of the batch a negative:

    rows    = mean_i [ logsumexp_j L_ij - L_ii ]        (query -> key)
    columns = mean_j [ logsumexp_i L_ij - L_jj ]        (key -> query)
    loss    = (rows + columns) / 2   symmetric (CLIP, Radford et al. 2021)
            = rows                   one-directional (a retriever: DPR,
                                     Contriever, Atlas)

The negatives are the whole global batch, not one device's share: with N
pairs over n data-parallel devices, every query sees N - 1 negatives.

Two forms, equal to each other (tested on 8 CPU devices to 1e-6):

* `info_nce`: the global computation. Under `jax.jit` with the batch
  sharded (GSPMD) it is already the global-batch loss; XLA inserts the
  collectives and may hold the [N, N] logits in full.
* `info_nce_sharded`: `shard_map` over the mesh's data axes; each device
  gathers the keys (and, symmetric, the queries) of all devices, scores its
  own N/n rows against them ([N/n, N] logits per device, as big_vision's
  contrastive losses do) and the row sums are added across devices. The
  gradient flows back through the gather to every device's keys.

Pitfall: under gradient accumulation each microbatch has its own negatives,
so the loss is not the full batch's (it needs the whole batch in one step).

`valid` ([N] bool) drops padding pairs: an invalid pair is neither a query
nor anybody's negative, and the means run over the valid pairs. Logits are
computed in float32 whatever the embeddings' dtype. Embeddings are used as
given; `l2_normalize` them first for cosine similarity (CLIP), and make the
scale from a learned log-scale with `logit_scale` (CLIP: exp, capped at 100).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from t5mtl.errors import T5mtlError

MAX_LOGIT_SCALE = 100.0


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """x / max(|x|, eps) along the last axis."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
    return (x / jnp.maximum(norm, eps)).astype(x.dtype)


def logit_scale(log_scale: jax.Array, max_scale: float = MAX_LOGIT_SCALE) -> jax.Array:
    """CLIP's temperature: exp(log_scale), at most `max_scale`."""
    return jnp.minimum(jnp.exp(log_scale.astype(jnp.float32)), max_scale)


def _check(queries, keys, valid):
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape != keys.shape:
        raise T5mtlError(f"contrastive loss: queries and keys must both be [batch, dim], got "
                         f"{tuple(queries.shape)} and {tuple(keys.shape)}")
    if valid is not None and tuple(valid.shape) != (queries.shape[0],):
        raise T5mtlError(f"contrastive loss: valid must be [{queries.shape[0]}], got "
                         f"{tuple(valid.shape)}")


def _row_losses(logits: jax.Array, positive: jax.Array, row_valid: jax.Array,
                col_valid: jax.Array) -> jax.Array:
    """[rows]: logsumexp over the valid columns minus the positive's logit;
    0 at invalid rows. `positive[r]` is row r's positive column."""
    masked = jnp.where(col_valid[None, :], logits, -jnp.inf)
    masked = jnp.where(row_valid[:, None], masked, 0.0)        # no NaN from all-masked rows
    picked = jnp.take_along_axis(masked, positive[:, None], axis=1)[:, 0]
    return jnp.where(row_valid, jax.nn.logsumexp(masked, axis=1) - picked, 0.0)


def info_nce(queries: jax.Array, keys: jax.Array, scale: jax.Array | float = 1.0,
             symmetric: bool = True, valid: Optional[jax.Array] = None) -> jax.Array:
    """The loss of the module docstring over the (global) batch given."""
    _check(queries, keys, valid)
    n = queries.shape[0]
    valid = jnp.ones((n,), bool) if valid is None else valid.astype(bool)
    logits = jnp.asarray(scale, jnp.float32) * jnp.einsum(
        "qd,kd->qk", queries.astype(jnp.float32), keys.astype(jnp.float32))
    count = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    diag = jnp.arange(n)
    loss = jnp.sum(_row_losses(logits, diag, valid, valid)) / count
    if symmetric:
        loss = 0.5 * (loss + jnp.sum(_row_losses(logits.T, diag, valid, valid)) / count)
    return loss


def info_nce_sharded(queries: jax.Array, keys: jax.Array, scale: jax.Array | float,
                     mesh: Mesh, data_axes: Sequence[str] = ("data",),
                     symmetric: bool = True, valid: Optional[jax.Array] = None) -> jax.Array:
    """`info_nce` with the batch split over `data_axes` of `mesh` (module
    docstring); the batch must divide by their total size."""
    _check(queries, keys, valid)
    axes = tuple(data_axes)
    missing = [a for a in axes if a not in mesh.axis_names]
    if missing:
        raise T5mtlError(f"contrastive loss: mesh axes {missing} not in {mesh.axis_names}")
    shards = 1
    for a in axes:
        shards *= mesh.shape[a]
    n = queries.shape[0]
    if n % shards:
        raise T5mtlError(f"contrastive loss: batch {n} does not divide over {shards} devices "
                         f"of mesh axes {axes}")
    valid = jnp.ones((n,), bool) if valid is None else valid.astype(bool)
    scale = jnp.asarray(scale, jnp.float32)

    def local(q, k, v, s):
        gather = lambda x: jax.lax.all_gather(x, axes, tiled=True)   # noqa: E731
        rows = q.shape[0]
        first = jax.lax.axis_index(axes) * rows
        positive = first + jnp.arange(rows)
        all_v = gather(v)
        count = jnp.maximum(jax.lax.psum(jnp.sum(v.astype(jnp.float32)), axes), 1.0)
        q32, k32 = q.astype(jnp.float32), k.astype(jnp.float32)
        total = jnp.sum(_row_losses(s * q32 @ gather(k32).T, positive, v, all_v))
        if symmetric:
            back = jnp.sum(_row_losses(s * k32 @ gather(q32).T, positive, v, all_v))
            total = 0.5 * (total + back)
        return jax.lax.psum(total, axes) / count

    spec = P(axes)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec, P()),
                         out_specs=P())(queries, keys, valid, scale)
