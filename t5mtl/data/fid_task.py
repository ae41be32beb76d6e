"""Atlas / Fusion-in-Decoder rows as a seqio task and its feature converter,
so that the trainer reads the retrieval rounds' batches like any task's.

  task features (per example)          model features
  inputs    [k, l]  reader rows    ->  encoder_input_tokens   [k, inputs length]
  queries   [lq]    the question   ->  query_tokens           [queries length]
  passages  [k, lp] the rows' passages  passage_tokens        [k, passages length]
  targets   [t]     the answer     ->  decoder_target_tokens  [targets length]
                                       decoder_input_tokens   (targets shifted right, 0 first)
                                       decoder_loss_weights   (1 on target ids)

k is the task's own (every example has k rows; padding rows are all 0);
the converter pads the last axis of each feature with 0 to the run's
task_feature_lengths {"inputs", "queries", "passages", "targets"} (a longer
feature is an error, as seqio's converters make it). Rows are never packed.

`register_fid_task(name, rows)` registers a task over in-memory rows in the
layout of t5mtl.data.fid_features.fid_batch (one round's retrieved batch):
a retrieval round re-registers its task with the new passages.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import seqio
import tensorflow as tf

from t5mtl.errors import T5mtlError

_ROWS = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=2, sequence_dim=1)
_SEQ = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
# fid_batch's names -> task feature names
TASK_NAMES = {"encoder_input_tokens": "inputs", "query_tokens": "queries",
              "passage_tokens": "passages", "decoder_target_tokens": "targets"}
MODEL_NAMES = {"inputs": "encoder_input_tokens", "queries": "query_tokens",
               "passages": "passage_tokens"}


def _pad_last(t: tf.Tensor, length: int) -> tf.Tensor:
    pad = [[0, 0]] * (len(t.shape) - 1) + [[0, length - tf.shape(t)[-1]]]
    out = tf.pad(t, pad)
    out.set_shape(t.shape[:-1].concatenate([length]))
    return out


class FiDFeatureConverter(seqio.FeatureConverter):
    """Unpacked FiD / Atlas rows (module docstring)."""

    TASK_FEATURES = {"inputs": _ROWS, "queries": _SEQ, "passages": _ROWS, "targets": _SEQ}
    MODEL_FEATURES = {"encoder_input_tokens": _ROWS, "query_tokens": _SEQ,
                      "passage_tokens": _ROWS, "decoder_input_tokens": _SEQ,
                      "decoder_target_tokens": _SEQ, "decoder_loss_weights": _SEQ}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise T5mtlError("Fusion-in-Decoder rows hold one question's passages each and are "
                             "not packed: set DataConfig.pack = False")
        super().__init__(pack=False, **kwargs)

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        def convert(ex):
            out = {MODEL_NAMES[n]: _pad_last(ex[n], task_feature_lengths[n])
                   for n in MODEL_NAMES}
            targets = _pad_last(ex["targets"], task_feature_lengths["targets"])
            out["decoder_target_tokens"] = targets
            out["decoder_input_tokens"] = seqio.utils.make_autoregressive_inputs(targets)
            out["decoder_loss_weights"] = seqio.non_padding_position(targets)
            return out
        return ds.map(convert, num_parallel_calls=tf.data.experimental.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        out = {MODEL_NAMES[n]: task_feature_lengths[n] for n in MODEL_NAMES}
        for name in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"):
            out[name] = task_feature_lengths["targets"]
        return out


def register_fid_task(name: str, rows: Mapping[str, np.ndarray], vocabulary,
                      splits=("train",)) -> seqio.Task:
    """A seqio task (re-registered under `name`) whose every split holds the
    examples of `rows` (fid_batch's arrays, one example per leading index)."""
    missing = sorted(set(TASK_NAMES) - set(rows))
    if missing:
        raise T5mtlError(f"register_fid_task({name!r}): rows lack {', '.join(missing)}")
    arrays = {TASK_NAMES[n]: np.asarray(rows[n], np.int32) for n in TASK_NAMES}
    sizes = {n: a.shape[0] for n, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise T5mtlError(f"register_fid_task({name!r}): features disagree on the number of "
                         f"examples: {sizes}")

    def dataset_fn(split: str, shuffle_files: bool, seed=None) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(arrays)

    features = {n: seqio.Feature(vocabulary, add_eos=False, rank=2 if a.ndim == 3 else 1)
                for n, a in arrays.items()}
    seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(dataset_fn, splits=list(splits)),
        preprocessors=[], output_features=features)
