"""Task ids: which task of a mixture each token's example came from.

seqio's mixing forgets where an example came from, and its
`passthrough_features` refuse packing. Here a batch gets two more int32
features, packed (per segment) or padded like the tokens they describe:

- "encoder_task_ids" [batch, inputs_length]: at every position where
  encoder_input_tokens != 0, the index of its example's task in
  `task_names(mixture_or_task_name)`; -1 where the token is 0 (padding);
- "decoder_task_ids" [batch, targets_length]: the same for
  decoder_target_tokens (for "prefix_lm", whose decoder holds inputs and
  targets, it is the only one, [batch, inputs_length + targets_length]).

Two pieces do it, so seqio's sampling, rates, seeds and packing are untouched:

- `with_task_index(provider)`: a shallow copy of the Task or Mixture whose
  examples carry a scalar "task_index". For a Mixture the copy's
  `get_task_dataset` (the per-task dataset seqio's `Mixture.get_dataset`
  samples from) wraps seqio's and adds it; for a Task it is 0.
- `EncDecTaskIdsConverter` / `PrefixLMTaskIdsConverter`: seqio's feature
  converters that first turn the scalar into token-level features sized
  like the tokens (index + 1 at non-zero tokens, 0 elsewhere), let seqio
  pad or pack them with the rest (it reads a feature's length from its
  non-zero values, the same for tokens and ids, so rows pack exactly as
  without them), then subtract 1 and drop the segment ids and positions
  seqio made for them.

`host_batches(..., task_ids=True)` (t5mtl.data.batches) uses both.
"""
from __future__ import annotations

import copy
from typing import Mapping

import seqio
import tensorflow as tf

from t5mtl.data import mixing
from t5mtl.errors import T5mtlError

TASK_INDEX = "task_index"  # the scalar per-example feature, before conversion
ENCODER_TASK_IDS = "encoder_task_ids"
DECODER_TASK_IDS = "decoder_task_ids"
_INT = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)

Provider = mixing.Provider


def task_names(mixture_or_task_name: str) -> list[str]:
    """The tasks a task id indexes: a Mixture's leaf tasks in seqio's order
    (sorted by name, nested mixtures flattened), or [name] for a Task."""
    return _names(mixing.resolve(mixture_or_task_name))


def _names(provider: Provider) -> list[str]:
    if isinstance(provider, seqio.Mixture):
        return [t.name for t in provider.tasks]
    return [provider.name]


def with_task_index(provider: Provider) -> Provider:
    """A shallow copy of `provider` whose examples carry TASK_INDEX (int32).

    The copy shares everything with the original but one method, so it
    samples, shuffles and seeds exactly as the original does.
    """
    if TASK_INDEX in provider.output_features:
        raise T5mtlError(f"{provider.name!r} has an output feature named {TASK_INDEX!r}; "
                         f"task ids need that name")
    marked = copy.copy(provider)
    if isinstance(provider, seqio.Mixture):
        index = {name: i for i, name in enumerate(_names(provider))}
        get_task_dataset = marked.get_task_dataset

        def task_dataset(task, *args, **kwargs):
            return _add_index(get_task_dataset(task, *args, **kwargs), index[task.name],
                              task.name)

        marked.get_task_dataset = task_dataset
    else:
        get_dataset = marked.get_dataset

        def dataset(*args, **kwargs):
            return _add_index(get_dataset(*args, **kwargs), 0, provider.name)

        marked.get_dataset = dataset
    return marked


def _add_index(ds: tf.data.Dataset, index: int, task_name: str) -> tf.data.Dataset:
    if TASK_INDEX in ds.element_spec:
        raise T5mtlError(f"task {task_name!r} already has a feature named {TASK_INDEX!r}; "
                         f"task ids need that name")
    value = tf.constant(index, tf.int32)
    return ds.map(lambda ex: {**ex, TASK_INDEX: value},
                  num_parallel_calls=tf.data.experimental.AUTOTUNE)


def _token_ids(tokens: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """index + 1 where tokens != 0, else 0: shaped like tokens, and as long
    as seqio's packing reads them (their number of non-zero values)."""
    return tf.cast(tf.not_equal(tokens, 0), tf.int32) * (tf.cast(index, tf.int32) + 1)


def _check_has_index(ds: tf.data.Dataset) -> None:
    if TASK_INDEX not in ds.element_spec:
        raise T5mtlError(f"the dataset has no {TASK_INDEX!r} feature; build it from "
                         f"with_task_index(provider)")


class EncDecTaskIdsConverter(seqio.EncDecFeatureConverter):
    """seqio.EncDecFeatureConverter plus encoder_task_ids and/or decoder_task_ids.

    `features` names the task-id features to add (both by default): each one
    is packed with the tokens, so a run pays only for those it uses. Input
    examples need TASK_INDEX (see `with_task_index`).
    """

    _TOKENS = {ENCODER_TASK_IDS: "inputs", DECODER_TASK_IDS: "targets"}

    def __init__(self, pack: bool = True,
                 features: tuple[str, ...] = (ENCODER_TASK_IDS, DECODER_TASK_IDS), **kwargs):
        unknown = sorted(set(features) - set(self._TOKENS))
        if unknown or not features:
            raise T5mtlError(f"task-id features {list(features)}: choose from "
                             f"{sorted(self._TOKENS)}")
        self.task_id_features = tuple(features)
        self.MODEL_FEATURES = {**seqio.EncDecFeatureConverter.MODEL_FEATURES,
                               **{f: _INT for f in features}}
        super().__init__(pack=pack, **kwargs)

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        _check_has_index(ds)

        def add_token_ids(ex):
            ex = dict(ex)
            index = ex.pop(TASK_INDEX)
            for feature in self.task_id_features:
                tokens = self._TOKENS[feature]
                ex[f"{tokens}_task_ids"] = _token_ids(ex[tokens], index)
            return ex

        ds = ds.map(add_token_ids, num_parallel_calls=tf.data.experimental.AUTOTUNE)
        lengths = dict(task_feature_lengths)
        for feature in self.task_id_features:
            tokens = self._TOKENS[feature]
            lengths[f"{tokens}_task_ids"] = task_feature_lengths[tokens]
        return super()._convert_features(ds, lengths)

    def _convert_example(self, features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        d = dict(super()._convert_example(features))
        for feature in self.task_id_features:
            d[feature] = features[f"{self._TOKENS[feature]}_task_ids"] - 1
        return d

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
        for feature in self.task_id_features:
            lengths[feature] = task_feature_lengths[self._TOKENS[feature]]
        return lengths


class PrefixLMTaskIdsConverter(seqio.PrefixLMFeatureConverter):
    """seqio.PrefixLMFeatureConverter plus decoder_task_ids (over inputs and
    targets, like decoder_target_tokens).

    Input examples need TASK_INDEX (see `with_task_index`).
    """

    MODEL_FEATURES = {**seqio.PrefixLMFeatureConverter.MODEL_FEATURES,
                      DECODER_TASK_IDS: _INT}
    task_id_features = (DECODER_TASK_IDS,)

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        _check_has_index(ds)
        return super()._convert_features(ds, task_feature_lengths)

    def _concat_and_add_masks(self, features: Mapping[str, tf.Tensor]
                              ) -> Mapping[str, tf.Tensor]:
        d = dict(super()._concat_and_add_masks(features))
        d["targets_task_ids"] = _token_ids(d["targets"], features[TASK_INDEX])
        return d

    def _concat_task_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                     ) -> Mapping[str, int]:
        lengths = dict(super()._concat_task_feature_lengths(task_feature_lengths))
        lengths["targets_task_ids"] = lengths["targets"]
        return lengths

    def _convert_example(self, features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        d = dict(super()._convert_example(features))
        d[DECODER_TASK_IDS] = features["targets_task_ids"] - 1
        return d

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
        lengths[DECODER_TASK_IDS] = lengths["decoder_target_tokens"]
        return lengths
