"""The image-text feature converter: (pixels, caption) pairs, one per row.

  task features:  <image_feature> float32 [H, W, C] (or [T, H, W, C]),
                  targets (text ids)
  model features: <image_feature> float32 [b, H, W, C] as the task gives it,
                  text_tokens int32 [b, targets length], padded with 0

For CLIP on t5mtl.data.vision_tasks' clip_* tasks
(`ImageTextFeatureConverter()`), or any image/video task with a text
"targets" (`ImageTextFeatureConverter("video")`). Only the "targets" length
of the run's task_feature_lengths counts (an "inputs" length is ignored);
longer targets are cut to it by the task, as seqio does.

The pixels must be float32 of `image_shape` (default: vision_data's
IMAGE_SHAPE for "image", VIDEO_SHAPE for "video"): a task whose feature has
another dtype, rank or static shape is a T5mtlError naming the feature when
the converter is applied; dimensions a task leaves unknown are asserted per
example (a tf.errors.InvalidArgumentError with the same message when read).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import seqio
import tensorflow as tf

from t5mtl.data import vision_data
from t5mtl.errors import T5mtlError

_INT = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
TEXT_TOKENS = "text_tokens"
DEFAULT_SHAPES = {"image": vision_data.IMAGE_SHAPE, "video": vision_data.VIDEO_SHAPE}


def _shape_text(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class ImageTextFeatureConverter(seqio.FeatureConverter):
    """Unpacked (pixels, text) rows from `image_feature` and "targets"."""

    TASK_FEATURES = {}          # set per instance (the pixel feature's name and rank)
    MODEL_FEATURES = {}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, image_feature: str = "image",
                 image_shape: Sequence[int] | None = None, pack: bool = False, **kwargs):
        if pack:
            raise T5mtlError("an image-text model reads one (image, text) pair per row: set "
                             "DataConfig.pack = False")
        if image_shape is None:
            if image_feature not in DEFAULT_SHAPES:
                raise T5mtlError(f"feature {image_feature!r}: give image_shape (defaults exist "
                                 f"for {tuple(DEFAULT_SHAPES)})")
            image_shape = DEFAULT_SHAPES[image_feature]
        if image_feature in ("targets", TEXT_TOKENS):
            raise T5mtlError(f"the image feature cannot be named {image_feature!r}")
        self.image_feature = image_feature
        self.image_shape = tuple(int(d) for d in image_shape)
        spec = seqio.FeatureConverter.FeatureSpec(dtype=tf.float32, rank=len(self.image_shape))
        self.TASK_FEATURES = {image_feature: spec, "targets": _INT}
        self.MODEL_FEATURES = {image_feature: spec, TEXT_TOKENS: _INT}
        super().__init__(pack=False, **kwargs)

    def check_spec(self, element_spec: Mapping[str, tf.TensorSpec]) -> None:
        """Raises T5mtlError naming the feature unless the dataset's pixels are
        float32 of image_shape (unknown dimensions are left to the per-example
        check) and it has "targets"."""
        name, want = self.image_feature, self.image_shape
        expected = f"expected float32 pixels {_shape_text(want)}"
        if name not in element_spec:
            raise T5mtlError(f"feature {name!r}: missing from the task's examples "
                             f"(it has {sorted(element_spec)}); {expected}")
        spec = element_spec[name]
        shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else None
        if (spec.dtype != tf.float32 or shape is None or len(shape) != len(want)
                or any(d is not None and d != w for d, w in zip(shape, want))):
            got = "unknown rank" if shape is None else _shape_text(shape)
            raise T5mtlError(f"feature {name!r}: {expected}, got {spec.dtype.name} {got}")
        if "targets" not in element_spec:
            raise T5mtlError(f"feature 'targets': missing from the task's examples (it has "
                             f"{sorted(element_spec)})")

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
                 ) -> tf.data.Dataset:
        """Only the "targets" length counts; the pixels keep their shape."""
        if "targets" not in task_feature_lengths:
            raise T5mtlError(f"an image-text task needs a 'targets' length, got "
                             f"{dict(task_feature_lengths)}")
        self.check_spec(ds.element_spec)
        return super().__call__(ds, {self.image_feature: self.image_shape[0],
                                     "targets": task_feature_lengths["targets"]})

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        name, shape = self.image_feature, self.image_shape
        message = f"feature {name!r}: expected float32 pixels {_shape_text(shape)}"

        def select(ex):
            pixels = ex[name]
            if not pixels.shape.is_fully_defined():
                with tf.control_dependencies([tf.debugging.assert_equal(
                        tf.shape(pixels), tf.constant(shape, tf.int32), message=message)]):
                    pixels = tf.identity(pixels)
                pixels = tf.ensure_shape(pixels, shape)
            return {name: pixels, "targets": ex["targets"]}

        ds = ds.map(select, num_parallel_calls=tf.data.experimental.AUTOTUNE)
        ds = self._pack_or_pad(ds, {"targets": task_feature_lengths["targets"]})
        return ds.map(lambda ex: {name: ex[name], TEXT_TOKENS: ex["targets"]},
                      num_parallel_calls=tf.data.experimental.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        return {self.image_feature: self.image_shape[0],
                TEXT_TOKENS: task_feature_lengths["targets"]}
