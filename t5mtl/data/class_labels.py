"""Class labels as features: each example's target string -> its label index.

A classification task's targets are one of its `TaskInfo.label_names`. A
model with one output per label (t5mtl.models.multi_head) needs the index
of that label, not its tokens. Two pieces:

- `label_token_ids(task_names)`: per task, the token ids of each label (its
  target vocabulary's encoding, without EOS), the labels themselves and the
  vocabulary's EOS id, from the task registry and TaskInfo.
- `ClassLabelConverter`: a seqio feature converter (unpacked: one example
  per row) to
    encoder_input_tokens  int32 [b, inputs_length]
    encoder_token_types   int32 [b, inputs_length]  BERT's sentence A / B
                          ("token_types"; zeros for a task without them)
    task_ids              int32 [b]  the example's task (`task_ids.TASK_INDEX`)
    labels                int32 [b]  the index of its target among its task's labels
  It matches the target's tokens (EOS and padding stripped) against the
  label table of the example's task; a target that is none of them stops
  the pipeline with a tf assertion naming the labels. Targets cut by a too
  short `targets` length are refused before any data is read.

Like the task-id converters it has `task_id_features`, so
`batches.host_batches` gives it examples that carry TASK_INDEX.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import seqio
import tensorflow as tf

from t5mtl.data import task_ids as task_ids_lib
from t5mtl.errors import T5mtlError

LabelIds = Sequence[Sequence[Sequence[int]]]    # [task][label] -> token ids
_INT = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
_SCALAR = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0)


def label_token_ids(task_names: Sequence[str]
                    ) -> tuple[tuple[tuple[str, ...], ...], tuple, int]:
    """(labels [task][label], token ids [task][label][token], EOS id) of
    classification tasks, from their TaskInfo and target vocabulary."""
    from t5mtl.data.task_info import get_task_info
    labels, ids, eos = [], [], set()
    for name in task_names:
        info = get_task_info(name)
        if not info.label_names:
            raise T5mtlError(f"task {name!r} has no label_names (schema {info.schema!r}); "
                             f"a classifier needs classification tasks")
        try:
            vocab = seqio.get_mixture_or_task(name).output_features["targets"].vocabulary
        except (ValueError, KeyError) as e:
            raise T5mtlError(f"task {name!r}: no seqio task with a 'targets' feature") from e
        encoded = tuple(tuple(int(t) for t in vocab.encode(label)) for label in info.label_names)
        if len(set(encoded)) != len(encoded) or any(not e for e in encoded):
            raise T5mtlError(f"task {name!r}: labels {list(info.label_names)} do not encode "
                             f"to distinct, non-empty token ids")
        labels.append(tuple(info.label_names))
        ids.append(encoded)
        # A vocabulary without EOS (WordPiece): 0, i.e. nothing after the label.
        eos.add(0 if vocab.eos_id is None else int(vocab.eos_id))
    if len(eos) > 1:
        raise T5mtlError(f"tasks {list(task_names)} use vocabularies with different EOS ids "
                         f"{sorted(eos)}")
    return tuple(labels), tuple(ids), (eos.pop() if eos else 1)


def padded_table(label_ids: LabelIds) -> tuple[list, list, int]:
    """(ids [tasks][max labels][max length] padded with 0, lengths [tasks][max
    labels] (0 for absent labels), max length)."""
    width = max(len(ids) for task in label_ids for ids in task)
    n = max(len(task) for task in label_ids)
    table = [[list(ids) + [0] * (width - len(ids)) for ids in task]
             + [[0] * width] * (n - len(task)) for task in label_ids]
    lengths = [[len(ids) for ids in task] + [0] * (n - len(task)) for task in label_ids]
    return table, lengths, width


class ClassLabelConverter(seqio.FeatureConverter):
    """Unpacked encoder tokens, task id and label index (module docstring).

    `label_ids[t][k]`: the token ids (no EOS) of label k of the task whose
    TASK_INDEX is t; `labels` (names, for messages) in the same order.
    """

    TASK_FEATURES = {"inputs": _INT, "targets": _INT, "token_types": _INT}
    MODEL_FEATURES = {"encoder_input_tokens": _INT, "encoder_token_types": _INT,
                      "task_ids": _SCALAR, "labels": _SCALAR}
    PACKING_FEATURE_DTYPES = {}
    task_id_features = ("task_ids",)     # batches.host_batches: add TASK_INDEX

    def __init__(self, label_ids: LabelIds, eos_id: int = 1,
                 labels: Sequence[Sequence[str]] = (), pack: bool = False):
        if pack:
            raise T5mtlError("a classifier reads one example per row: set "
                             "DataConfig.pack = False")
        super().__init__(pack=False)
        self.label_ids = tuple(tuple(tuple(ids) for ids in task) for task in label_ids)
        self.labels = tuple(tuple(task) for task in labels)
        self.eos_id = int(eos_id)

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
                 ) -> tf.data.Dataset:
        if "token_types" not in ds.element_spec:
            ds = ds.map(lambda ex: {**ex, "token_types": tf.zeros_like(ex["inputs"])})
        lengths = {**task_feature_lengths, "token_types": task_feature_lengths["inputs"]}
        return super().__call__(ds, lengths)

    def _check_targets_length(self, length: int) -> None:
        for t, task in enumerate(self.label_ids):
            for k, ids in enumerate(task):
                if len(ids) + 1 > length:       # + EOS
                    name = self.labels[t][k] if self.labels else ids
                    raise T5mtlError(f"targets length {length} cuts label {name!r} "
                                     f"({len(ids)} tokens + EOS); raise the 'targets' "
                                     f"feature length to at least {len(ids) + 1}")

    def _label_index(self, targets: tf.Tensor, task: tf.Tensor) -> tf.Tensor:
        table, lengths, width = padded_table(self.label_ids)
        table = tf.constant(table, tf.int32)[task]                  # [labels, width]
        lengths = tf.constant(lengths, tf.int32)[task]
        tokens = tf.boolean_mask(targets, (targets != 0) & (targets != self.eos_id))
        n = tf.size(tokens)
        row = tf.pad(tokens[:width], [[0, width - tf.minimum(n, width)]])
        match = tf.reduce_all(table == row[None], axis=1) & (lengths == n) & (lengths > 0)
        names = self.labels or self.label_ids
        check = tf.debugging.Assert(
            tf.reduce_any(match),
            [f"a target is none of the labels of its task {[list(t) for t in names]} "
             f"(task index, target ids follow)", task, targets])
        with tf.control_dependencies([check]):
            index = tf.cast(tf.argmax(tf.cast(match, tf.int32), axis=0), tf.int32)
            return tf.ensure_shape(tf.identity(index), [])

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        task_ids_lib._check_has_index(ds)
        self._check_targets_length(task_feature_lengths["targets"])
        num_tasks = len(self.label_ids)

        def convert(ex):
            task = tf.cast(ex[task_ids_lib.TASK_INDEX], tf.int32)
            check = tf.debugging.Assert(task < num_tasks, [
                f"a task index is beyond the classifier's {num_tasks} tasks", task])
            with tf.control_dependencies([check]):
                task = tf.ensure_shape(tf.identity(task), [])
            return {"inputs": ex["inputs"], "token_types": ex["token_types"], "task_ids": task,
                    "labels": self._label_index(ex["targets"], task)}

        ds = ds.map(convert, num_parallel_calls=tf.data.experimental.AUTOTUNE)
        length = task_feature_lengths["inputs"]
        ds = self._pack_or_pad(ds, {"inputs": length, "token_types": length})
        return ds.map(lambda ex: {"encoder_input_tokens": ex["inputs"],
                                  "encoder_token_types": ex["token_types"],
                                  "task_ids": ex["task_ids"], "labels": ex["labels"]},
                      num_parallel_calls=tf.data.experimental.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        return {"encoder_input_tokens": task_feature_lengths["inputs"],
                "encoder_token_types": task_feature_lengths["inputs"], "task_ids": 1,
                "labels": 1}
