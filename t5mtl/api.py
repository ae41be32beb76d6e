"""The Python API for notebooks and scripts: `t5mtl.load(path)`.

  m = t5mtl.load("/tmp/model")       # a t5mtl model_dir or an HF T5 directory
  m.logits(encoder_ids, decoder_input_ids)   # np.ndarray [batch, length, vocab]
  m.generate(["translate ..."], max_new_tokens=32)   # strings in, strings out
  m.score(inputs, targets)                   # per-example log-likelihood
"""
from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from t5mtl.errors import T5mtlError
from t5mtl.models.config import T5Config
from t5mtl.models.t5 import Transformer

EOS_ID = 1


def make_vocabulary(spec: dict | None):
    """A seqio vocabulary from model.json's `vocabulary` entry (None: none known)."""
    if not spec:
        return None
    import seqio
    kind = spec.get("kind")
    if kind == "byte":
        return seqio.ByteVocabulary(extra_ids=spec.get("extra_ids", 100))
    if kind == "sentencepiece":
        if not os.path.isfile(spec.get("path", "")):
            raise T5mtlError(f"sentencepiece model {spec.get('path')!r} not found")
        return seqio.SentencePieceVocabulary(spec["path"], extra_ids=spec.get("extra_ids", 100))
    raise T5mtlError(f"unknown vocabulary kind {kind!r} (byte or sentencepiece)")


def pad_ids(rows: Sequence[Sequence[int]], length: int | None = None,
            multiple: int = 8) -> np.ndarray:
    """Right-pads ragged id lists with 0 into an int32 array [len(rows), length].

    Without `length`, the longest row rounded up to `multiple` (so nearby
    lengths share one compiled shape); longer rows are cut to `length`.
    """
    if length is None:
        length = max(1, max(len(r) for r in rows))
        length = -(-length // multiple) * multiple
    out = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        r = list(r)[:length]
        out[i, :len(r)] = r
    return out


class Model:
    """A T5 config, its params (nested dict) and, when known, its vocabulary."""

    def __init__(self, config: T5Config, params: dict, vocabulary=None):
        self.config = config
        self.params = params
        self.vocabulary = vocabulary
        self.module = Transformer(config)
        self._logits = jax.jit(lambda p, e, d: self.module.apply({"params": p}, e, d))

    # -- text helpers ------------------------------------------------------
    def _ids(self, items, add_eos: bool) -> list[list[int]]:
        if isinstance(items, np.ndarray):
            items = items.tolist()
        out = []
        for item in items:
            if isinstance(item, str):
                if self.vocabulary is None:
                    raise T5mtlError("this model has no known vocabulary; pass token ids")
                ids = list(self.vocabulary.encode(item))
                out.append(ids + [EOS_ID] if add_eos else ids)
            else:
                out.append([int(t) for t in item if int(t) != 0])
        return out

    # -- the API -----------------------------------------------------------
    def logits(self, encoder_ids, decoder_input_ids) -> np.ndarray:
        """Float32 logits [batch, dec_len, vocab]; pad id 0 in encoder_ids is masked."""
        enc = np.asarray(encoder_ids, np.int32)
        dec = np.asarray(decoder_input_ids, np.int32)
        if enc.ndim != 2 or dec.ndim != 2 or enc.shape[0] != dec.shape[0]:
            raise T5mtlError(f"logits wants [batch, len] id arrays with equal batch; got "
                             f"encoder_ids {enc.shape} and decoder_input_ids {dec.shape}")
        return np.asarray(self._logits(self.params, enc, dec))

    def score(self, inputs, targets) -> np.ndarray:
        """Sum of log p(target token) per example; strings get EOS appended."""
        enc = pad_ids(self._ids(inputs, add_eos=True))
        tgt = pad_ids(self._ids(targets, add_eos=True))
        if enc.shape[0] != tgt.shape[0]:
            raise T5mtlError(f"score got {enc.shape[0]} inputs but {tgt.shape[0]} targets")
        dec_in = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)
        logp = jax.nn.log_softmax(jnp.asarray(self.logits(enc, dec_in)), axis=-1)
        tok = jnp.take_along_axis(logp, jnp.asarray(tgt)[..., None], axis=-1)[..., 0]
        return np.asarray(jnp.sum(jnp.where(tgt > 0, tok, 0.0), axis=-1))

    def generate(self, inputs, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0):
        """Greedy (temperature 0) or sampled decoding with the KV cache.

        Strings in -> strings out (needs a vocabulary); id rows in -> an id
        array [batch, max_new_tokens], 0 after EOS.
        """
        from t5mtl.infer.decoding import compiled_sampler
        texts = [isinstance(x, str) for x in inputs]
        enc = pad_ids(self._ids(inputs, add_eos=True))
        run = compiled_sampler(self.module, int(max_new_tokens), float(temperature), int(top_k),
                               float(top_p), EOS_ID)
        ids = np.asarray(run(self.params, enc, jax.random.PRNGKey(seed)))
        if not any(texts):
            return ids
        out = []
        for row in ids:
            row = row.tolist()
            row = row[:row.index(EOS_ID)] if EOS_ID in row else row
            out.append(self.vocabulary.decode(row))
        return out


def load(path: str, step: int | None = None) -> Model:
    """Loads a t5mtl model_dir (latest or given checkpoint) or an HF T5 directory."""
    from t5mtl.train import model_dir
    if not os.path.isdir(path):
        raise T5mtlError(f"{path}: not a directory")
    if model_dir.is_model_dir(path):
        config, vocab_spec = model_dir.read_model_json(path)
        params = model_dir.restore_params(path, config, step)
        return Model(config, params, make_vocabulary(vocab_spec))
    if os.path.isfile(os.path.join(path, "config.json")):
        from t5mtl.convert.hf import hf_vocabulary_spec, import_hf
        config, params = import_hf(path)
        return Model(config, params, make_vocabulary(hf_vocabulary_spec(path)))
    raise T5mtlError(f"{path}: neither a t5mtl model directory (model.json) nor an HF "
                     f"directory (config.json)")
