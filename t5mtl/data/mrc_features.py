"""Machine-reading (PMR) data as seqio tasks, and their feature converter.

`register_mrc_task(name, {split: [MrcFeatures]}, vocabulary)` turns windows
made by data.pmr_data (SQuAD, Wiki-Anchor-Extraction-style pretraining,
classification as extraction) into a seqio Task of pre-tokenized features:

  inputs, token_types, context_mask   [n]   "[CLS] query [SEP] context [SEP]"
  span_starts, span_ends              [k]   gold spans, token index + 1
  cls_span, cls_label                 []    the [CLS] span in the loss / its label

`MrcFeatureConverter` pads them to the "inputs" length, one window per row
(the span features too: a window has at most as many gold spans as tokens),
for models.machine_reader.MachineReader. A "targets" feature of the same
vocabulary is declared (empty) because a run's model.json records the
vocabulary of "targets".
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from t5mtl.errors import T5mtlError

_INT = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
_SCALAR = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0)
SEQUENCE_FEATURES = ("inputs", "token_types", "context_mask", "span_starts", "span_ends")
MODEL_NAMES = {"inputs": "encoder_input_tokens", "token_types": "encoder_token_types",
               "context_mask": "context_mask", "span_starts": "span_starts",
               "span_ends": "span_ends", "cls_span": "cls_span", "cls_label": "cls_label"}


def window_record(f) -> dict[str, np.ndarray]:
    """One data.pmr_data.MrcFeatures window as the task's features."""
    n = len(f.input_ids)
    context = np.zeros(n, np.int32)
    context[f.context_start:f.context_end] = 1
    return {"inputs": np.asarray(f.input_ids, np.int32),
            "token_types": np.asarray(f.token_type_ids, np.int32),
            "context_mask": context,
            "span_starts": np.asarray([s + 1 for s, _ in f.spans], np.int32),
            "span_ends": np.asarray([e + 1 for _, e in f.spans], np.int32),
            "cls_span": np.int32(f.cls_label is not None),
            "cls_label": np.int32(bool(f.cls_label))}


def _dataset(records: Sequence[dict]) -> tf.data.Dataset:
    signature = {k: tf.TensorSpec([None], tf.int32) for k in SEQUENCE_FEATURES}
    signature.update(cls_span=tf.TensorSpec([], tf.int32), cls_label=tf.TensorSpec([], tf.int32),
                     targets=tf.TensorSpec([None], tf.int32))
    return tf.data.Dataset.from_generator(
        lambda: ({**r, "targets": np.zeros(0, np.int32)} for r in records),
        output_signature=signature)


def register_mrc_task(name: str, windows: Mapping[str, Sequence | Callable[[], Sequence]],
                      vocabulary: seqio.Vocabulary, overwrite: bool = True) -> seqio.Task:
    """A seqio Task over pre-tokenized MRC windows, one split per key: a
    list of windows, or a function making them, called once, when the split
    is first read (so registering costs nothing)."""
    made: dict[str, list] = {}

    def records(split):
        if split not in windows:
            raise T5mtlError(f"MRC task {name!r} has no split {split!r} ({sorted(windows)})")
        if split not in made:
            fs = windows[split]() if callable(windows[split]) else windows[split]
            if not fs:
                raise T5mtlError(f"MRC task {name!r}: split {split!r} has no windows")
            made[split] = [window_record(f) for f in fs]
        return made[split]

    if not windows:
        raise T5mtlError(f"MRC task {name!r}: no splits")
    for split, fs in windows.items():
        if not callable(fs):
            records(split)                # a given list is checked now

    def dataset_fn(split, shuffle_files=False, seed=None):
        return _dataset(records(split))

    if overwrite and name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    source = seqio.FunctionDataSource(dataset_fn, splits=tuple(windows))
    features = {"inputs": seqio.Feature(vocabulary, add_eos=False),
                "targets": seqio.Feature(vocabulary, add_eos=False, required=False)}
    return seqio.TaskRegistry.add(name, source=source, preprocessors=[],
                                  output_features=features)


class MrcFeatureConverter(seqio.FeatureConverter):
    """One MRC window per row, every sequence feature padded to the inputs length."""

    TASK_FEATURES = {"inputs": _INT, "token_types": _INT, "context_mask": _INT,
                     "span_starts": _INT, "span_ends": _INT, "cls_span": _SCALAR,
                     "cls_label": _SCALAR}
    MODEL_FEATURES = {MODEL_NAMES[k]: v for k, v in TASK_FEATURES.items()}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise T5mtlError("a machine reader reads one window per row: set "
                             "DataConfig.pack = False")
        super().__init__(pack=False, **kwargs)

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
                 ) -> tf.data.Dataset:
        """Only the "inputs" length counts (a "targets" length, as run
        configs carry, is ignored); every other feature follows it."""
        if "inputs" not in task_feature_lengths:
            raise T5mtlError(f"an MRC task needs an 'inputs' length, got "
                             f"{dict(task_feature_lengths)}")
        length = task_feature_lengths["inputs"]
        return super().__call__(ds, {k: length if k in SEQUENCE_FEATURES else 1
                                     for k in self.TASK_FEATURES})

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        length = task_feature_lengths["inputs"]
        ds = ds.map(lambda ex: {k: ex[k] for k in self.TASK_FEATURES})
        ds = self._pack_or_pad(ds, {k: length for k in SEQUENCE_FEATURES})
        return ds.map(lambda ex: {MODEL_NAMES[k]: v for k, v in ex.items()},
                      num_parallel_calls=tf.data.experimental.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        length = task_feature_lengths["inputs"]
        out = {MODEL_NAMES[k]: length for k in SEQUENCE_FEATURES}
        return {**out, "cls_span": 1, "cls_label": 1}
