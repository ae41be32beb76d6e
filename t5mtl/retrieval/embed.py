"""Texts -> one vector each: a T5 encoder's states mean-pooled over the
non-padding tokens, in fixed-shape batches (one compile). Used by Go-tuning's
selection (t5mtl.mtl.go_tuning) and for passage and query embeddings
(t5mtl.retrieval.index)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from t5mtl.errors import T5mtlError

EMBED_LENGTH = 128


def tokenize(texts: Sequence[str], vocabulary, length: int) -> np.ndarray:
    """int32 [len(texts), length]: each text's ids cut to length - 1, then EOS,
    then padding (0), as task inputs are made."""
    rows = np.zeros((len(texts), length), np.int32)
    for i, text in enumerate(texts):
        ids = list(vocabulary.encode(text))[:length - 1] + [1]
        rows[i, :len(ids)] = ids
    return rows


def encoder_embedding_fn(model):
    """jitted (params, tokens [b, l]) -> float32 [b, d]: the model's T5 encoder
    (through its seams and weight adapter) mean-pooled over non-padding tokens."""
    import jax
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.models.encoder_backbone import mean_pool
    if not isinstance(model, EncoderDecoderModel):
        raise T5mtlError(f"texts are embedded with a T5 encoder (EncoderDecoderModel), got "
                         f"{type(model).__name__}")

    @jax.jit
    def embed(params, tokens):
        return mean_pool(model.encode_batch(model.weights(params),
                                            {"encoder_input_tokens": tokens}))
    return embed


def embed_texts(model, params, texts: Sequence[str], vocabulary, length: int = EMBED_LENGTH,
                batch_size: int = 64, embed_fn=None) -> np.ndarray:
    """float32 [len(texts), d]: each text's mean-pooled encoder states, in
    fixed-shape batches (one compile; the last batch padded and trimmed).
    `embed_fn`: an `encoder_embedding_fn(model)` to reuse across calls (its
    compiled program with it); by default a new one."""
    import jax
    if not texts:
        raise T5mtlError("embed_texts got no texts")
    if length < 2 or batch_size < 1:
        raise T5mtlError(f"need length >= 2 and batch_size >= 1, got {length}, {batch_size}")
    embed = embed_fn or encoder_embedding_fn(model)
    params = jax.device_put(params)
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        n = len(chunk)
        tokens = tokenize(chunk + [chunk[0]] * (batch_size - n), vocabulary, length)
        out.append(np.asarray(embed(params, tokens))[:n])
    return np.concatenate(out).astype(np.float32)
