"""Greedy and sampled decoding over a model's step callback (t5x style).

The model enters only through its first logits and one callback:

  step(state, tokens [b], position) -> (logits [b, V], state)

`state` is whatever the model carries between steps (for T5: the encoder
output, its mask and the per-layer KV caches). The search functions here and
in beam_search.py see only logits, so any model with such a callback can use
them.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from t5mtl.models.kernels.reference import NEG_INF


def filter_logits(logits, temperature: float, top_k: int, top_p: float):
    """Temperature, then top-k, then nucleus (top-p) filtering."""
    logits = logits / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (always the first).
        cum_before = jnp.cumsum(probs, axis=-1) - probs
        cutoff = jnp.min(jnp.where(cum_before < top_p, sorted_logits, jnp.inf), axis=-1,
                         keepdims=True)
        logits = jnp.where(logits < cutoff, NEG_INF, logits)
    return logits


def sample_loop(first_logits, state, step: Callable, max_new_tokens: int, rng,
                temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                eos_id: int = 1, pad_id: int = 0):
    """Greedy (temperature 0) or sampled decoding; returns ids [b, max_new_tokens].

    Tokens after a row's EOS are `pad_id`; the loop stops once every row has
    finished. `step(state, tokens, position)` gives the next logits.
    """
    b = first_logits.shape[0]

    def choose(logits, i):
        if temperature == 0.0:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        key = jax.random.fold_in(rng, i)
        return jax.random.categorical(key, filter_logits(logits, temperature, top_k, top_p)
                                      ).astype(jnp.int32)

    def cond(carry):
        i, _, finished, _, _ = carry
        return (i < max_new_tokens) & ~jnp.all(finished)

    def body(carry):
        i, out, finished, logits, state = carry
        token = jnp.where(finished, pad_id, choose(logits, i))
        out = out.at[:, i].set(token)
        finished = finished | (token == eos_id)
        # The decoder input at position i + 1 is the token chosen at step i.
        logits, state = jax.lax.cond(
            i + 1 < max_new_tokens, lambda: step(state, token, i + 1), lambda: (logits, state))
        return i + 1, out, finished, logits, state

    init = (jnp.int32(0), jnp.full((b, max_new_tokens), pad_id, jnp.int32),
            jnp.zeros((b,), bool), first_logits, state)
    return jax.lax.while_loop(cond, body, init)[1]
