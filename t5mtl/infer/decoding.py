"""Autoregressive decoding with the decoder's KV cache, as pure jitted functions.

The model enters only through two callbacks (t5x style):

  prefill(encoder_tokens) -> (logits [b, V] for position 0, state)
  step(state, tokens [b], position) -> (logits [b, V], state)

`state` carries the encoder output and the per-layer caches. Search
functions (greedy/temperature sampling here, beam search in beam_search.py)
only see logits, so they share the cache logic.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from t5mtl.models.t5 import Transformer

NEG_INF = -1e10


class DecodeState(NamedTuple):
    encoded: jax.Array
    encoder_tokens: jax.Array
    cache: dict


def make_decode_fns(model: Transformer, max_decode_length: int):
    """Returns (prefill, step) closures over `model` (params passed at call)."""

    def prefill(params, encoder_tokens):
        encoded = model.apply({"params": params}, encoder_tokens, method=Transformer.encode)
        b = encoder_tokens.shape[0]
        start = jnp.zeros((b, 1), jnp.int32)          # decoder start token = pad = 0
        logits, variables = model.apply(
            {"params": params}, encoded, encoder_tokens, start,
            decoder_positions=jnp.zeros((b, 1), jnp.int32), decode=True,
            max_decode_length=max_decode_length, mutable=["cache"], method=Transformer.decode)
        return logits[:, 0], DecodeState(encoded, encoder_tokens, variables["cache"])

    def step(params, state: DecodeState, tokens, position):
        b = tokens.shape[0]
        logits, variables = model.apply(
            {"params": params, "cache": state.cache}, state.encoded, state.encoder_tokens,
            tokens[:, None], decoder_positions=jnp.full((b, 1), position, jnp.int32),
            decode=True, max_decode_length=max_decode_length, mutable=["cache"],
            method=Transformer.decode)
        return logits[:, 0], state._replace(cache=variables["cache"])

    return prefill, step


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


@functools.lru_cache(maxsize=32)
def compiled_sampler(model: Transformer, max_new_tokens: int, temperature: float, top_k: int,
                     top_p: float, eos_id: int):
    """A jitted `(params, encoder_tokens, rng) -> ids` for one decoding setup."""
    prefill, step = make_decode_fns(model, max_new_tokens)

    @jax.jit
    def run(params, encoder_tokens, rng):
        logits, state = prefill(params, encoder_tokens)
        return sample_loop(logits, state, functools.partial(step, params), max_new_tokens, rng,
                           temperature, top_k, top_p, eos_id)
    return run
