"""The Python API for notebooks and scripts: `t5mtl.load(path)`.

  m = t5mtl.load("/tmp/model")       # a t5mtl model_dir or an HF T5 directory
  m.logits(encoder_ids, decoder_input_ids)   # np.ndarray [batch, length, vocab]
  m.generate(["translate ..."], max_new_tokens=32)   # strings in, strings out
  m.score(inputs, targets)                   # per-example log-likelihood
  a = m.with_adapter("/tmp/pt")              # an adapter of m, sharing m's arrays

`m.model` is the model object that wrote the directory (any class behind
t5mtl.models.base), `m.params` its params, `m.tasks` the task list of the
mixture it was trained on (a task's index is its position).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from t5mtl.data.batches import pad_ids, scoring_batch
from t5mtl.errors import T5mtlError
from t5mtl.models.base import BaseModel

EOS_ID = 1


class Model:
    """A model object, its params (nested dict) and, when known, its vocabulary."""

    def __init__(self, model: BaseModel, params: dict, vocabulary=None,
                 tasks: list[str] | None = None):
        self.model = model
        self.params = params
        self.vocabulary = vocabulary
        self.tasks = tasks
        self._logits = None
        self._score = jax.jit(lambda p, b: self.model.score_batch(p, b))

    @property
    def config(self) -> Any:
        """The model's architecture config (a T5Config for T5 models)."""
        return getattr(self.model, "config", None)

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
        if not hasattr(self.model, "logits"):
            raise T5mtlError(f"{type(self.model).__name__} has no logits")
        enc = np.asarray(encoder_ids, np.int32)
        dec = np.asarray(decoder_input_ids, np.int32)
        if enc.ndim != 2 or dec.ndim != 2 or enc.shape[0] != dec.shape[0]:
            raise T5mtlError(f"logits wants [batch, len] id arrays with equal batch; got "
                             f"encoder_ids {enc.shape} and decoder_input_ids {dec.shape}")
        if self._logits is None:
            self._logits = jax.jit(lambda p, b: self.model.logits(p, b))
        batch = {"encoder_input_tokens": enc, "decoder_input_tokens": dec}
        return np.asarray(self._logits(self.params, batch))

    def score(self, inputs, targets) -> np.ndarray:
        """Sum of log p(target token) per example; strings get EOS appended."""
        batch = scoring_batch(self._ids(inputs, add_eos=True), self._ids(targets, add_eos=True))
        return np.asarray(self._score(self.params, batch))

    def generate(self, inputs, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0):
        """Greedy (temperature 0) or sampled decoding.

        Strings in -> strings out (needs a vocabulary); id rows in -> an id
        array [batch, max_new_tokens], 0 after EOS.
        """
        from t5mtl.models.encoder_decoder import DecodeConfig
        texts = [isinstance(x, str) for x in inputs]
        decode = DecodeConfig(max_decode_length=int(max_new_tokens),
                              method="greedy" if temperature == 0.0 else "sample",
                              temperature=float(temperature) or 1.0, top_k=int(top_k),
                              top_p=float(top_p), eos_id=EOS_ID)
        batch = {"encoder_input_tokens": pad_ids(self._ids(inputs, add_eos=True))}
        ids = np.asarray(self.model.predict_batch(self.params, batch, decode,
                                                  jax.random.PRNGKey(seed)))
        if not any(texts):
            return ids
        return [self.decode_text(row) for row in ids]

    def decode_text(self, ids) -> str:
        """Text of one decoded id row (cut at EOS)."""
        row = [int(t) for t in ids]
        row = row[:row.index(EOS_ID)] if EOS_ID in row else row
        return self.vocabulary.decode(row)


    def with_adapter(self, path: str, step: int | None = None) -> "Model":
        """The adapter directory `path` (a run with save_trainable_only) joined
        to this model's params, which must be the base it was trained on
        (checked by fingerprint). The returned model shares this one's arrays:
        several adapters are served from one base held once."""
        from t5mtl.data.vocab import vocabulary_from_spec
        from t5mtl.train import model_dir
        info = model_dir.read_model_json(path)
        params = model_dir.restore_params(path, step, base_params=self.params)
        vocabulary = vocabulary_from_spec(info.vocabulary) if info.vocabulary else self.vocabulary
        return Model(info.model, params, vocabulary, info.tasks)


def load(path: str, step: int | None = None) -> Model:
    """Loads a t5mtl model_dir (latest or given checkpoint) or an HF T5 directory."""
    from t5mtl import paths
    from t5mtl.data.vocab import vocabulary_from_spec
    from t5mtl.train import model_dir
    if not paths.isdir(path):
        paths.check_bucket(path)
        raise T5mtlError(f"{path}: not a directory")
    model, params = model_dir.load_params(path, step)
    info = model_dir.describe(path)
    return Model(model, params, vocabulary_from_spec(info["vocabulary"]), info["tasks"])
