"""Texts -> one vector each: a T5 encoder's states mean-pooled over the
non-padding tokens, in fixed-shape batches (one compile). Used by Go-tuning's
selection (t5mtl.mtl.go_tuning) and for passage and query embeddings
(t5mtl.retrieval.index).

On one device (`encoder_embedding_fn`, the default) or over a mesh
(`mesh_embedding_fn`, `embed_texts(..., mesh=mesh)`): each batch's rows
split over the mesh's batch axes ("data", "fsdp"; t5mtl.train.partitioning),
the params placed by their logical axis names (replicated on a mesh of data
parallelism alone), the embeddings returned whole to every process
(t5mtl.infer.sharded).
"""
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


def _pooled_encoder(model):
    """(params, tokens [b, l]) -> [b, d], not jitted: the model's T5 encoder
    (through its seams and weight adapter) mean-pooled over non-padding tokens."""
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.models.encoder_backbone import mean_pool
    if not isinstance(model, EncoderDecoderModel):
        raise T5mtlError(f"texts are embedded with a T5 encoder (EncoderDecoderModel), got "
                         f"{type(model).__name__}")

    def embed(params, tokens):
        return mean_pool(model.encode_batch(model.weights(params),
                                            {"encoder_input_tokens": tokens}))
    return embed


def encoder_embedding_fn(model):
    """jitted (params, tokens [b, l]) -> float32 [b, d]: the model's T5 encoder
    (through its seams and weight adapter) mean-pooled over non-padding tokens."""
    import jax
    return jax.jit(_pooled_encoder(model))


class MeshEmbedding:
    """`encoder_embedding_fn` over a mesh: called with params on the mesh
    (`place_params`) and numpy tokens [b, l] (the same on every process), it
    pads the rows to a multiple of `shards` (copies of row 0), splits them
    over the mesh's batch axes, and returns numpy [b, d] trimmed back to b."""

    def __init__(self, model, mesh, rules=None):
        from t5mtl.infer import sharded
        self.model, self.mesh, self.rules = model, mesh, rules
        self.shards = sharded.num_batch_shards(mesh)
        pooled = _pooled_encoder(model)
        self._fn = sharded.MeshFunction(lambda params, batch: pooled(params, batch["tokens"]),
                                        mesh, rules)

    def place_params(self, params):
        """`params` on the mesh by their logical axis names (kept as they
        are when already there)."""
        from t5mtl.infer import sharded
        return sharded.place_params(self.model, params, self.mesh, self.rules)

    def __call__(self, params, tokens: np.ndarray) -> np.ndarray:
        return self._fn(params, {"tokens": np.asarray(tokens, np.int32)})


def mesh_embedding_fn(model, mesh, rules=None) -> MeshEmbedding:
    """The embedding over `mesh` (a jax.sharding.Mesh with t5mtl's axes,
    `t5mtl.train.partitioning.create_mesh`); `rules`: logical axis rules
    (default: the run's)."""
    return MeshEmbedding(model, mesh, rules)


def embed_texts(model, params, texts: Sequence[str], vocabulary, length: int = EMBED_LENGTH,
                batch_size: int = 64, embed_fn=None, mesh=None) -> np.ndarray:
    """float32 [len(texts), d]: each text's mean-pooled encoder states, in
    fixed-shape batches (one compile; the last batch padded and trimmed).
    `embed_fn`: an `encoder_embedding_fn(model)` or `mesh_embedding_fn(model,
    mesh)` to reuse across calls (its compiled program with it); by default
    a new one. `mesh`: embed over it (a new `mesh_embedding_fn` unless
    `embed_fn` is one on this mesh); each batch then holds `batch_size`
    rounded up to a multiple of the mesh's batch shards rows."""
    import jax
    if not texts:
        raise T5mtlError("embed_texts got no texts")
    if length < 2 or batch_size < 1:
        raise T5mtlError(f"need length >= 2 and batch_size >= 1, got {length}, {batch_size}")
    if mesh is not None and embed_fn is None:
        embed_fn = mesh_embedding_fn(model, mesh)
    embed = embed_fn or encoder_embedding_fn(model)
    if isinstance(embed, MeshEmbedding):
        if mesh is not None and embed.mesh != mesh:
            raise T5mtlError(f"embed_fn is for mesh {dict(embed.mesh.shape)}, not the mesh "
                             f"given, {dict(mesh.shape)}")
        params = embed.place_params(params)
        batch_size = -(-batch_size // embed.shards) * embed.shards
    elif mesh is not None:
        raise T5mtlError("embed_fn is a one-device function but a mesh was given: pass "
                         "mesh_embedding_fn(model, mesh), or no embed_fn")
    else:
        params = jax.device_put(params)
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        n = len(chunk)
        tokens = tokenize(chunk + [chunk[0]] * (batch_size - n), vocabulary, length)
        out.append(np.asarray(embed(params, tokens))[:n])
    return np.concatenate(out).astype(np.float32)
