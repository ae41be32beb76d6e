"""LAVENDER's feature converter: every video-text task as a masked-LM row.

  task features:  video (float32 [T, H, W, C]), inputs, targets (wordpiece_en ids)
  model features: video, encoder_input_tokens, encoder_target_tokens,
                  encoder_loss_weights (int32 [L], L = the "inputs" length)

A row is built from each example by what it holds:

  inputs not empty (QA, retrieval):
      [CLS] inputs [SEP] [MASK] * k      targets: the k target ids at the [MASK]s
      (a one-token answer, or "true"/"false": k = 1; a longer question is cut
      to fit)
  inputs empty (captioning):
      c = targets + [SEP] (targets cut to L - 2 ids); a cut t drawn uniformly
      from 0 .. len(c) - 1:
      [CLS] c_0 .. c_{t-1} [MASK]        target c_t at the [MASK]
      and each of c_0 .. c_{t-1} replaced by [MASK] with probability
      `mask_rate` (their ids are targets too).

The caption row always ends in the [MASK] being predicted with nothing after
it: the state iterative masked decoding (`Lavender.decode_captions`) is in at
every step, so training and decoding see the same rows; the extra masks are
MLM on randomly masked caption tokens. The weights are 1 at every [MASK].

Randomness: example i of the converted stream uses the stateless seed
fold_in((seed, 0), i); the stream is repeated before conversion, so each
epoch draws new cuts. `answer_row` and `caption_row` are the same builders
in numpy (evaluation rows and tests).

Rows are unpacked (one example, one video per row).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import seqio
import tensorflow as tf

from t5mtl.errors import T5mtlError

PAD, CLS, SEP, MASK = 0, 2, 3, 4        # wordpiece_en
_INT = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
TEXT_FEATURES = ("encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights")


def answer_row(question: Sequence[int], answer: Sequence[int], length: int
               ) -> tuple[list[int], list[int]]:
    """(inputs, targets) of "[CLS] question [SEP] [MASK]*k", unpadded."""
    k = len(answer)
    if k < 1 or length < k + 3:
        raise T5mtlError(f"an answer row needs 1 <= answer ids and length >= answer ids + 3; "
                         f"got {k} answer ids, length {length}")
    q = list(question)[:length - 3 - k]
    return ([CLS] + q + [SEP] + [MASK] * k, [PAD] * (len(q) + 2) + list(answer))


def caption_row(caption: Sequence[int], cut: int, length: int, masked: Sequence[int] = ()
                ) -> tuple[list[int], list[int]]:
    """(inputs, targets) of "[CLS] c_0 .. c_{cut-1} [MASK]" (c = caption +
    [SEP]), with the prefix positions in `masked` also [MASK]ed."""
    c = list(caption)[:length - 2] + [SEP]
    if not 0 <= cut < len(c):
        raise T5mtlError(f"caption cut {cut} outside 0 .. {len(c) - 1}")
    inputs, targets = [CLS] + c[:cut] + [MASK], [PAD] * (cut + 1) + [c[cut]]
    for i in masked:
        if not 0 <= i < cut:
            raise T5mtlError(f"masked caption position {i} outside the prefix 0 .. {cut - 1}")
        inputs[i + 1], targets[i + 1] = MASK, c[i]
    return inputs, targets


def _tf_row(ex, seed, length: int, mask_rate: float):
    inputs = tf.boolean_mask(ex["inputs"], ex["inputs"] > 0)
    targets = tf.boolean_mask(ex["targets"], ex["targets"] > 0)
    k = tf.size(targets)
    q = inputs[:tf.maximum(length - 3 - k, 0)]
    qa_in = tf.concat([[CLS], q, [SEP], tf.fill([k], MASK)], 0)
    qa_tg = tf.concat([tf.zeros([tf.size(q) + 2], tf.int32), targets], 0)

    c = tf.concat([targets[:length - 2], [SEP]], 0)
    n = tf.size(c)
    u = tf.random.stateless_uniform([], seed)
    cut = tf.minimum(tf.cast(u * tf.cast(n, tf.float32), tf.int32), n - 1)
    masked = tf.random.stateless_uniform([cut], tf.random.experimental.stateless_fold_in(
        seed, 1)) < mask_rate
    prefix = c[:cut]
    cap_in = tf.concat([[CLS], tf.where(masked, MASK, prefix), [MASK]], 0)
    cap_tg = tf.concat([[PAD], tf.where(masked, prefix, 0), [c[cut]]], 0)

    is_caption = tf.equal(tf.size(inputs), 0)
    row_in = tf.cond(is_caption, lambda: cap_in, lambda: qa_in)
    row_tg = tf.cond(is_caption, lambda: cap_tg, lambda: qa_tg)
    pad = [[0, length - tf.size(row_in)]]
    row_in = tf.ensure_shape(tf.pad(row_in, pad), [length])
    row_tg = tf.ensure_shape(tf.pad(row_tg, pad), [length])
    return row_in, row_tg


class LavenderFeatureConverter(seqio.FeatureConverter):
    """Unpacked masked-LM rows with the video (module docstring)."""

    TASK_FEATURES = {"inputs": _INT, "targets": _INT}
    MODEL_FEATURES = {"encoder_input_tokens": _INT, "encoder_target_tokens": _INT,
                      "encoder_loss_weights": _INT}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = False, video_feature: str = "video",
                 mask_rate: float = 0.15, seed: int = 0, **kwargs):
        if pack:
            raise T5mtlError("LAVENDER reads one example (one video) per row: set "
                             "DataConfig.pack = False")
        if not 0.0 <= mask_rate < 1.0:
            raise T5mtlError(f"mask_rate must be in [0, 1), got {mask_rate}")
        self.video_feature, self.mask_rate, self.seed = video_feature, float(mask_rate), int(seed)
        self.video_shape = None
        super().__init__(pack=False, **kwargs)

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
                 ) -> tf.data.Dataset:
        spec = ds.element_spec.get(self.video_feature)
        if spec is None:
            raise T5mtlError(f"feature {self.video_feature!r}: missing from the task's examples "
                             f"(it has {sorted(ds.element_spec)})")
        shape = spec.shape
        if not spec.dtype.is_floating or shape.rank is None or not shape.is_fully_defined():
            raise T5mtlError(f"feature {self.video_feature!r}: expected float pixels of a fixed "
                             f"shape, got {spec.dtype.name} {shape}")
        self.video_shape = tuple(shape.as_list())
        self.MODEL_FEATURES = {
            **LavenderFeatureConverter.MODEL_FEATURES,
            self.video_feature: seqio.FeatureConverter.FeatureSpec(
                dtype=tf.float32, rank=len(self.video_shape))}
        return super().__call__(ds, task_feature_lengths)

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        length = int(task_feature_lengths["inputs"])
        if length < 4:
            raise T5mtlError(f"LAVENDER rows need an 'inputs' length >= 4, got {length}")
        video, rate, base = self.video_feature, self.mask_rate, self.seed

        @tf.autograph.experimental.do_not_convert
        def convert(i, ex):
            seed = tf.random.experimental.stateless_fold_in(
                tf.constant([base, 0], tf.int64), i)
            row_in, row_tg = _tf_row(ex, seed, length, rate)
            return {video: tf.cast(ex[video], tf.float32), "encoder_input_tokens": row_in,
                    "encoder_target_tokens": row_tg,
                    "encoder_loss_weights": tf.cast(row_tg > 0, tf.int32)}

        return ds.enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        length = task_feature_lengths["inputs"]
        out = {k: length for k in TEXT_FEATURES}
        if self.video_shape is not None:
            out[self.video_feature] = self.video_shape[0]
        return out
