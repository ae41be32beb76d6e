"""The masked-LM feature converter: seqio's EncoderFeatureConverter with the
loss on every position the objective selected.

seqio.EncoderFeatureConverter weights the loss where the input is the mask
id, which leaves out BERT's randomly replaced and kept tokens (10% + 10% of
the selected ones; Devlin et al. 2019 predict those too). Here the objective
(t5mtl.data.bert_objective.bert_mask) writes the original id at each selected
position of "targets" and 0 elsewhere, so the weight is `targets > 0`; an
optional "token_types" feature (sentence A / B) comes along as
encoder_token_types (zeros for tasks without one).

  task features:  inputs, targets [, token_types]
  model features: encoder_input_tokens, encoder_target_tokens,
                  encoder_loss_weights, encoder_token_types

One example per row (no packing): BERT's absolute positions and [CLS]
pooler are per sequence.

`EncDecTokenTypesConverter` is seqio's EncDecFeatureConverter plus
encoder_token_types for tasks that have "token_types" (evaluation reads
BERT sentence pairs through it; a task without them converts exactly as
with seqio's).
"""
from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

from t5mtl.errors import T5mtlError

_INT = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)


class MaskedLMFeatureConverter(seqio.EncoderFeatureConverter):
    """Unpacked masked-LM features weighted at every selected position."""

    TASK_FEATURES = {"inputs": _INT, "targets": _INT, "token_types": _INT}
    MODEL_FEATURES = {"encoder_input_tokens": _INT, "encoder_target_tokens": _INT,
                      "encoder_loss_weights": _INT, "encoder_token_types": _INT}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise T5mtlError("a masked LM reads one example per row: set DataConfig.pack = False")
        super().__init__(mask_id=-1, pack=False, **kwargs)

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
                 ) -> tf.data.Dataset:
        """"targets" (and "token_types", when given) must be as long as
        "inputs"; a task without token types gets zeros."""
        length = task_feature_lengths["inputs"]
        unaligned = {k: v for k, v in task_feature_lengths.items() if v != length}
        if unaligned:
            raise T5mtlError(f"a masked LM's features are aligned: every length must equal "
                             f"'inputs' ({length}), got {dict(task_feature_lengths)}")
        if "token_types" not in ds.element_spec:
            ds = ds.map(lambda ex: {**ex, "token_types": tf.zeros_like(ex["inputs"])})
        return super().__call__(ds, {k: length for k in self.TASK_FEATURES})

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        ds = self._pack_or_pad(ds.map(lambda ex: {k: ex[k] for k in self.TASK_FEATURES}),
                               task_feature_lengths)
        return ds.map(lambda ex: {"encoder_input_tokens": ex["inputs"],
                                  "encoder_target_tokens": ex["targets"],
                                  "encoder_loss_weights": tf.cast(ex["targets"] > 0, tf.int32),
                                  "encoder_token_types": ex["token_types"]},
                      num_parallel_calls=tf.data.experimental.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        length = task_feature_lengths["inputs"]
        return {k: length for k in self.MODEL_FEATURES}


class EncDecTokenTypesConverter(seqio.EncDecFeatureConverter):
    """seqio.EncDecFeatureConverter, plus "token_types" as encoder_token_types
    when the converted task has them (padded like "inputs").

    Whether a task has them is read from each dataset it converts, so the
    model features are set per call: one conversion at a time, as
    seqio.Evaluator does them.
    """

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
                 ) -> tf.data.Dataset:
        self.token_types = "token_types" in ds.element_spec
        self.MODEL_FEATURES = {**seqio.EncDecFeatureConverter.MODEL_FEATURES,
                               **({"encoder_token_types": _INT} if self.token_types else {})}
        return super().__call__(ds, task_feature_lengths)

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        if self.token_types:
            task_feature_lengths = {**task_feature_lengths,
                                    "token_types": task_feature_lengths["inputs"]}
        return super()._convert_features(ds, task_feature_lengths)

    def _convert_example(self, features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        d = dict(super()._convert_example(features))
        if self.token_types:
            d["encoder_token_types"] = features["token_types"]
        return d

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
        if getattr(self, "token_types", False):
            lengths["encoder_token_types"] = task_feature_lengths["inputs"]
        return lengths
