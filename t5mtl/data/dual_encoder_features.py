"""The dual encoder's feature converter: a text-to-text task as (query,
passage) pairs.

  task features:  inputs (the query), targets (the passage)
  model features: query_tokens [inputs length], passage_tokens [targets length]

One pair per row, each side padded with 0 to its own length (a longer one is
an error, as seqio's converters make it, unless the task trims). Lengths
come from the run's task_feature_lengths, e.g. {"inputs": 64, "targets": 192}.
"""
from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

from t5mtl.errors import T5mtlError

_INT = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
MODEL_NAMES = {"inputs": "query_tokens", "targets": "passage_tokens"}


class DualEncoderFeatureConverter(seqio.FeatureConverter):
    """Unpacked (query, passage) rows from "inputs" and "targets"."""

    TASK_FEATURES = {"inputs": _INT, "targets": _INT}
    MODEL_FEATURES = {"query_tokens": _INT, "passage_tokens": _INT}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise T5mtlError("a dual encoder reads one (query, passage) pair per row: set "
                             "DataConfig.pack = False")
        super().__init__(pack=False, **kwargs)

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        ds = ds.map(lambda ex: {k: ex[k] for k in self.TASK_FEATURES})
        ds = self._pack_or_pad(ds, task_feature_lengths)
        return ds.map(lambda ex: {MODEL_NAMES[k]: v for k, v in ex.items()},
                      num_parallel_calls=tf.data.experimental.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        return {MODEL_NAMES[k]: task_feature_lengths[k] for k in self.TASK_FEATURES}
