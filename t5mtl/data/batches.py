"""Per-host batches: a seqio task or mixture -> feature converter -> numpy.

The trainer calls `host_batches(...)` on every host; each host reads its own
shard (seqio.ShardInfo(process_index, process_count)) and gets dicts of numpy
arrays of shape [batch_size_per_host, length], ready to be assembled into a
global jax.Array over the mesh's "data" axis.

Feature converters:
- "encdec": seqio.EncDecFeatureConverter (encoder_input_tokens,
  decoder_target_tokens, decoder_input_tokens, decoder_loss_weights, plus
  segment ids and positions when packed);
- "prefix_lm": seqio.PrefixLMFeatureConverter for decoder-only models on
  inputs/targets data (decoder_* features and decoder_causal_attention; its
  length is inputs + targets).

With `task_ids=True` every batch also says which task each token's example
came from ("encoder_task_ids", "decoder_task_ids"; see t5mtl.data.task_ids).
"""
from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import gin
import numpy as np
import seqio

from t5mtl.data import task_ids as task_ids_lib
from t5mtl.errors import T5mtlError

FEATURE_CONVERTERS = ("encdec", "prefix_lm")


def make_feature_converter(kind: str = "encdec", pack: bool = True,
                           task_ids: bool | Sequence[str] = False) -> seqio.FeatureConverter:
    """The seqio feature converter for `kind` ("encdec" or "prefix_lm"); with
    `task_ids` (True: all of them, or the names of those wanted, e.g.
    ("decoder_task_ids",)), its subclass that adds the task-id features."""
    if kind == "encdec":
        if not task_ids:
            return seqio.EncDecFeatureConverter(pack=pack)
        if task_ids is True:
            return task_ids_lib.EncDecTaskIdsConverter(pack=pack)
        return task_ids_lib.EncDecTaskIdsConverter(pack=pack, features=tuple(task_ids))
    if kind == "prefix_lm":
        cls = (task_ids_lib.PrefixLMTaskIdsConverter if task_ids
               else seqio.PrefixLMFeatureConverter)
        return cls(pack=pack)
    raise T5mtlError(f"unknown feature converter {kind!r}; choose one of {FEATURE_CONVERTERS}")


def default_shard_info() -> seqio.ShardInfo:
    """This process's shard: ShardInfo(jax.process_index(), jax.process_count())."""
    import jax  # pylint: disable=import-outside-toplevel
    return seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())


@gin.configurable(denylist=["shard_info"])
def host_batches(mixture_or_task_name: str,
                 task_feature_lengths: Mapping[str, int],
                 split: str = "train",
                 batch_size_per_host: int = 8,
                 shuffle: bool = True,
                 seed: int | None = 0,
                 pack: bool = True,
                 shard_info: seqio.ShardInfo | None = None,
                 num_epochs: int | None = None,
                 use_cached: bool = False,
                 feature_converter: str | seqio.FeatureConverter = "encdec",
                 task_ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Yields this host's batches of `mixture_or_task_name` as numpy dicts.

    Args:
      mixture_or_task_name: a registered seqio Task or Mixture.
      task_feature_lengths: e.g. {"inputs": 512, "targets": 114}.
      split: the split to read.
      batch_size_per_host: examples per batch on this host (global batch /
        process count); an incomplete last batch is dropped.
      shuffle: shuffle files and examples (seeded by `seed`).
      seed: makes shuffling, mixing and every stochastic preprocessor
        deterministic; None means fresh randomness each run.
      pack: pack several examples per row (segment ids and positions).
      shard_info: which shard this host reads; default: this JAX process's.
      num_epochs: passes over the data; None repeats forever.
      use_cached: read the task's offline cache (seqio cache_tasks_main).
      feature_converter: "encdec", "prefix_lm", or a converter object (a
        model's `feature_converter(pack, task_ids)`, which then decides
        packing and the task-id features).
      task_ids: add "encoder_task_ids" and "decoder_task_ids" (int32, like
        encoder_input_tokens and decoder_target_tokens): the index of each
        token's task in `task_ids.task_names(mixture_or_task_name)`, -1 at
        padding (token 0); per segment when packed. prefix_lm has only
        "decoder_task_ids". The other features are the same as without.
    """
    if batch_size_per_host < 1:
        raise T5mtlError(f"batch_size_per_host must be >= 1, got {batch_size_per_host}")
    converter = (feature_converter if isinstance(feature_converter, seqio.FeatureConverter)
                 else make_feature_converter(feature_converter, pack, task_ids))
    task_ids = bool(getattr(converter, "task_id_features", ()))
    try:
        provider = seqio.get_mixture_or_task(mixture_or_task_name)
    except ValueError as e:
        raise T5mtlError(f"no task or mixture named {mixture_or_task_name!r}: {e}") from e
    if task_ids:
        provider = task_ids_lib.with_task_index(provider)
    if shard_info is None:
        shard_info = default_shard_info()
    if not 0 <= shard_info.index < shard_info.num_shards:
        raise T5mtlError(f"bad shard {shard_info}: need 0 <= index < num_shards")
    ds = seqio.get_dataset(
        provider,
        task_feature_lengths=dict(task_feature_lengths),
        feature_converter=converter,
        dataset_split=split,
        use_cached=use_cached,
        shuffle=shuffle,
        num_epochs=num_epochs,
        shard_info=shard_info,
        seed=seed,
        batch_size=batch_size_per_host,
        verbose=False,
    )
    return ds.as_numpy_iterator()


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


def scoring_batch(inputs: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                  input_length: int | None = None,
                  target_length: int | None = None) -> dict[str, np.ndarray]:
    """Unpacked encoder-decoder features for scoring `targets` given `inputs`
    (id lists, EOS included): the decoder inputs are seqio's shift right of
    the targets, as EncDecFeatureConverter makes them."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if len(inputs) != len(targets):
        raise T5mtlError(f"got {len(inputs)} inputs but {len(targets)} targets")
    enc = pad_ids(inputs, input_length)
    tgt = pad_ids(targets, target_length)
    dec_in = np.stack([seqio.utils.make_autoregressive_inputs(tf.constant(row)).numpy()
                       for row in tgt]).astype(np.int32)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt, "decoder_loss_weights": (tgt > 0).astype(np.int32)}
