"""Beam search over the decoder's KV cache with T5's length penalty.

Scores are log p(sequence) / ((5 + length) / 6) ** alpha (Wu et al. 2016, as
T5 uses with alpha 0.6). Each step keeps 2k candidates so that k live beams
survive even when some candidates end in EOS; finished hypotheses are kept
apart and the search stops once no live beam can beat the worst finished one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from t5mtl.models.kernels.reference import NEG_INF


def length_penalty(length, alpha: float):
    return ((5.0 + length) / 6.0) ** alpha


def _gather_beams(tree, origin, batch: int, beams: int, batch_axis: int):
    """Reorders the beam rows of every cache leaf: origin [b, k] indexes beams.
    Leaves of rank < 3 (cache indices) are the same for every beam."""
    flat = (origin + jnp.arange(batch)[:, None] * beams).reshape(-1)

    def gather(x):
        if x.ndim < 3:       # cache indices: identical across beams
            return x
        return jnp.take(x, flat, axis=batch_axis)
    return jax.tree_util.tree_map(gather, tree)


def beam_search(first_logits, state, step, batch: int, beams: int, max_new_tokens: int,
                alpha: float = 0.6, eos_id: int = 1, pad_id: int = 0, cache_batch_axis: int = 0):
    """first_logits [b*k, V] (rows of one example repeated k times) -> (ids [b, N], scores [b])."""
    vocab = first_logits.shape[-1]
    n = max_new_tokens
    alive_seq = jnp.full((batch, beams, n), pad_id, jnp.int32)
    alive_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (beams - 1)), (batch, 1))
    fin_seq = jnp.full((batch, beams, n), pad_id, jnp.int32)
    fin_score = jnp.full((batch, beams), NEG_INF)

    def cond(carry):
        i, _, alive_logp, _, fin_score, _, _ = carry
        best_possible = alive_logp[:, 0] / length_penalty(n, alpha)
        can_improve = jnp.any(best_possible > jnp.min(fin_score, axis=1))
        return (i < n) & can_improve

    def body(carry):
        i, alive_seq, alive_logp, fin_seq, fin_score, logits, state = carry
        logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, beams, vocab)
        cand = (alive_logp[:, :, None] + logp).reshape(batch, beams * vocab)
        top_logp, top_idx = jax.lax.top_k(cand, 2 * beams)
        origin, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(alive_seq, origin[:, :, None], axis=1)
        seqs = seqs.at[:, :, i].set(token)
        is_eos = token == eos_id
        # Finished candidates compete with the finished set.
        new_fin = jnp.where(is_eos, top_logp / length_penalty(i + 1.0, alpha), NEG_INF)
        all_seq = jnp.concatenate([fin_seq, seqs], axis=1)
        all_score = jnp.concatenate([fin_score, new_fin], axis=1)
        fin_score, keep = jax.lax.top_k(all_score, beams)
        fin_seq = jnp.take_along_axis(all_seq, keep[:, :, None], axis=1)
        # Live candidates: the best k that did not end.
        live_logp = jnp.where(is_eos, NEG_INF, top_logp)
        alive_logp, keep = jax.lax.top_k(live_logp, beams)
        alive_seq = jnp.take_along_axis(seqs, keep[:, :, None], axis=1)
        origin = jnp.take_along_axis(origin, keep, axis=1)
        tokens = jnp.take_along_axis(token, keep, axis=1).reshape(-1)
        state = state._replace(cache=_gather_beams(state.cache, origin, batch, beams,
                                                   cache_batch_axis))
        logits, state = jax.lax.cond(i + 1 < n, lambda: step(state, tokens, i + 1),
                                     lambda: (logits, state))
        return i + 1, alive_seq, alive_logp, fin_seq, fin_score, logits, state

    init = (jnp.int32(0), alive_seq, alive_logp, fin_seq, fin_score, first_logits, state)
    _, alive_seq, alive_logp, fin_seq, fin_score, _, _ = jax.lax.while_loop(cond, body, init)
    # Rows that finished nothing fall back to their best live beam.
    any_fin = fin_score[:, 0] > NEG_INF / 2
    best = jnp.where(any_fin[:, None], fin_seq[:, 0], alive_seq[:, 0])
    score = jnp.where(any_fin, fin_score[:, 0], alive_logp[:, 0] / length_penalty(n, alpha))
    return best, score
