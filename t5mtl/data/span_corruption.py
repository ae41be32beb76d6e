"""T5's span-corruption objective as small, pure seqio preprocessors.

The pieces, each usable and testable alone:

- `plan_span_corruption_lengths`: pure python; how many raw tokens a chunk may
  have so that the corrupted inputs (plus EOS) fill `inputs_length` exactly,
  and how long the targets then are (512 -> 568 raw tokens, 114 targets;
  1024 -> 1137, 229).
- `random_spans_noise_mask`: exactly round(L * noise_density) noise tokens in
  round(noise / mean_noise_span_length) spans, the spans interleaved with
  non-noise spans and starting with non-noise.
- `sentinel_inputs` / `sentinel_targets`: each noise span becomes one unique
  sentinel in the inputs; the targets hold the matching sentinel followed by
  the span's tokens. Sentinels count down from the top of the vocabulary
  (`<extra_id_0>` first).
- `reduce_concat_tokens` / `split_tokens`: documents are concatenated and cut
  into chunks of the planned length, as T5 does.
- `span_corruption`: the preprocessor a Task lists (after tokenize, before
  append_eos_after_trim).

Example (T5's figure, sentinels written <X>, <Y>):
  original  "Thank you for inviting me to your party last week ."
  inputs    "Thank you <X> me to your party <Y> week ."
  targets   "<X> for inviting <Y> last"

Randomness: each chunk is seeded from the seqio seed and its own tokens (see
t5mtl/data/example_seeds.py), so results do not depend on sharding; the price
is that a repeated chunk (num_epochs > 1) gets the same corruption each pass.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Mapping

import seqio
import tensorflow as tf

from t5mtl.data import example_seeds
from t5mtl.errors import T5mtlError

NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0
DEFAULT_INPUTS_LENGTH = 512  # used when a pipeline is built without lengths


# ---------------------------------------------------------------------------
# Length planning (pure python).

def _noise_counts(num_tokens: int, noise_density: float,
                  mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for a chunk of `num_tokens`, as the mask makes them."""
    length = max(num_tokens, 2)
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    return num_noise, min(num_spans, length - num_noise)


@dataclasses.dataclass(frozen=True)
class SpanCorruptionLengths:
    tokens_length: int    # raw tokens per chunk
    inputs_length: int    # corrupted inputs, EOS included
    targets_length: int   # targets, EOS included
    num_noise_tokens: int
    num_noise_spans: int


def corrupted_lengths(tokens_length: int, noise_density: float = NOISE_DENSITY,
                      mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
                      ) -> SpanCorruptionLengths:
    """Lengths of the inputs and targets (EOS included) for a chunk of `tokens_length`."""
    num_noise, num_spans = _noise_counts(tokens_length, noise_density, mean_noise_span_length)
    return SpanCorruptionLengths(
        tokens_length=tokens_length,
        inputs_length=tokens_length - num_noise + num_spans + 1,
        targets_length=num_noise + num_spans + 1,
        num_noise_tokens=num_noise,
        num_noise_spans=num_spans)


def plan_span_corruption_lengths(inputs_length: int,
                                 noise_density: float = NOISE_DENSITY,
                                 mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
                                 ) -> SpanCorruptionLengths:
    """The longest chunk whose corrupted inputs (plus EOS) fit `inputs_length`.

    One sentinel per noise span in the inputs and in the targets, one EOS on
    each. The inputs length never shrinks as the chunk grows (it grows by 0,
    1 or 2 per raw token), so the search stops at the first chunk that overflows.
    """
    if not 0.0 < noise_density < 1.0:
        raise T5mtlError(f"noise_density must be in (0, 1), got {noise_density}")
    if mean_noise_span_length < 1.0:
        raise T5mtlError(
            f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}")
    plan = corrupted_lengths(2, noise_density, mean_noise_span_length)
    if plan.inputs_length > inputs_length:
        raise T5mtlError(
            f"inputs length {inputs_length} is too short for span corruption "
            f"(even a 2-token chunk needs {plan.inputs_length})")
    while True:
        longer = corrupted_lengths(plan.tokens_length + 1, noise_density,
                                   mean_noise_span_length)
        if longer.inputs_length > inputs_length:
            return plan
        plan = longer


# ---------------------------------------------------------------------------
# Noise mask.

def random_segmentation(num_items: tf.Tensor, num_segments: tf.Tensor,
                        seed: tf.Tensor) -> tf.Tensor:
    """Splits `num_items` into `num_segments` non-empty parts of random sizes.

    The cut points are a uniformly random subset of the num_items - 1 gaps.
    Returns int32 [num_segments] summing to num_items.
    """
    gaps = tf.range(1, num_items, dtype=tf.int32)
    cuts = tf.sort(seqio.utils.stateless_shuffle(gaps, seed)[:num_segments - 1])
    bounds = tf.concat([[0], cuts, [num_items]], axis=0)
    return bounds[1:] - bounds[:-1]


def random_spans_noise_mask(length: tf.Tensor, seed: tf.Tensor,
                            noise_density: float = NOISE_DENSITY,
                            mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
                            ) -> tf.Tensor:
    """A bool [length] mask: True marks noise tokens.

    Exactly round(length * noise_density) noise tokens (at least 1, at most
    length - 1) in round(noise / mean_noise_span_length) spans (at least 1).
    Spans alternate non-noise, noise, non-noise, ..., starting with
    non-noise and ending with noise; every span is non-empty. A chunk of one
    token is planned as two and cut back, so it has no noise.
    """
    length = tf.convert_to_tensor(length, tf.int32)
    planned = tf.maximum(length, 2)
    # float64 so the rounding agrees with python's in the length planner.
    num_noise = tf.cast(tf.round(tf.cast(planned, tf.float64) * noise_density), tf.int32)
    num_noise = tf.clip_by_value(num_noise, 1, planned - 1)
    num_spans = tf.cast(
        tf.round(tf.cast(num_noise, tf.float64) / mean_noise_span_length), tf.int32)
    num_spans = tf.minimum(tf.maximum(num_spans, 1), planned - num_noise)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    noise_lengths = random_segmentation(num_noise, num_spans, seeds[0])
    keep_lengths = random_segmentation(planned - num_noise, num_spans, seeds[1])
    span_lengths = tf.reshape(tf.stack([keep_lengths, noise_lengths], axis=1), [-1])
    span_is_noise = tf.tile([False, True], [num_spans])
    return tf.repeat(span_is_noise, span_lengths)[:length]


# ---------------------------------------------------------------------------
# Inputs and targets.

def _span_starts(mask: tf.Tensor) -> tf.Tensor:
    prev = tf.concat([[False], mask[:-1]], axis=0)
    return tf.logical_and(mask, tf.logical_not(prev))


def _span_sentinels(starts: tf.Tensor, top_sentinel: int, dtype) -> tf.Tensor:
    """At each position: the sentinel of the span it belongs to (the k-th span gets top - k)."""
    return tf.cast(top_sentinel, dtype) - (tf.cumsum(tf.cast(starts, dtype)) - 1)


def sentinel_inputs(tokens: tf.Tensor, noise_mask: tf.Tensor,
                    vocab: seqio.Vocabulary) -> tf.Tensor:
    """The tokens with the k-th noise span replaced by sentinel k (`<extra_id_k>`)."""
    starts = _span_starts(noise_mask)
    out = tf.where(starts, _span_sentinels(starts, _top_sentinel(vocab), tokens.dtype), tokens)
    return tf.boolean_mask(out, tf.logical_or(starts, tf.logical_not(noise_mask)))


def sentinel_targets(tokens: tf.Tensor, noise_mask: tf.Tensor,
                     vocab: seqio.Vocabulary) -> tf.Tensor:
    """Sentinel k followed by the tokens of the k-th noise span, for every span in order.

    Works for any mask (also one that starts with noise, as i.i.d. masks may).
    """
    starts = _span_starts(noise_mask)
    sentinels = _span_sentinels(starts, _top_sentinel(vocab), tokens.dtype)
    # Position i contributes (its span's sentinel if a span starts there, its token if noise).
    candidates = tf.reshape(tf.stack([sentinels, tokens], axis=1), [-1])
    keep = tf.reshape(tf.stack([starts, noise_mask], axis=1), [-1])
    return tf.boolean_mask(candidates, keep)


def _top_sentinel(vocab: seqio.Vocabulary) -> int:
    if vocab.extra_ids < 1:
        raise T5mtlError(
            f"span corruption needs sentinel ids but {vocab} has no extra ids "
            f"(use get_vocabulary(extra_ids=100))")
    return vocab.vocab_size - 1


# ---------------------------------------------------------------------------
# Chunking.

def reduce_concat_tokens(dataset: tf.data.Dataset, feature_key: str = "targets",
                         batch_size: int = 128) -> tf.data.Dataset:
    """Concatenates each run of `batch_size` consecutive documents into one.

    Only `feature_key` is kept. With split_tokens after it, this fills every
    chunk but the last of each run, as T5 does.
    """
    if batch_size < 1:
        raise T5mtlError(f"batch_size must be >= 1, got {batch_size}")
    tokens = dataset.map(lambda x: x[feature_key],
                         num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size == 1:
        return tokens.map(lambda t: {feature_key: t})
    return tokens.ragged_batch(batch_size).map(
        lambda r: {feature_key: r.flat_values}, num_parallel_calls=tf.data.AUTOTUNE)


def split_tokens(dataset: tf.data.Dataset, max_tokens: int,
                 feature_key: str = "targets") -> tf.data.Dataset:
    """Cuts each example's `feature_key` into chunks of `max_tokens` (the last may be shorter).

    Empty examples are dropped; only `feature_key` is kept.
    """
    if max_tokens < 1:
        raise T5mtlError(f"max_tokens must be >= 1, got {max_tokens}")

    def chunks(x):
        tokens = x[feature_key]
        n = tf.size(tokens)
        full, rest = n // max_tokens, n % max_tokens
        lengths = tf.concat([tf.fill([full], max_tokens),
                             tf.fill([tf.minimum(rest, 1)], rest)], axis=0)
        rows = tf.RaggedTensor.from_row_lengths(tokens, lengths)
        return tf.data.Dataset.from_tensor_slices({feature_key: rows})

    dataset = dataset.filter(lambda x: tf.size(x[feature_key]) > 0)
    return dataset.flat_map(chunks)


# ---------------------------------------------------------------------------
# The preprocessor.

def _inputs_and_targets_lengths(sequence_length: Mapping[str, int] | None
                                ) -> tuple[int, int | None]:
    sequence_length = sequence_length or {}
    inputs_length = sequence_length.get("inputs")
    if inputs_length is None:
        logging.info("no sequence_length['inputs']; planning span corruption for %d",
                     DEFAULT_INPUTS_LENGTH)
        inputs_length = DEFAULT_INPUTS_LENGTH
    return int(inputs_length), sequence_length.get("targets")


def span_corruption(dataset: tf.data.Dataset,
                    sequence_length: Mapping[str, int] | None,
                    output_features: Mapping[str, seqio.Feature],
                    noise_density: float = NOISE_DENSITY,
                    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
                    concat_batch_size: int = 128,
                    feature_key: str = "targets") -> tf.data.Dataset:
    """T5's span corruption over tokenized documents in `feature_key`.

    Documents are concatenated `concat_batch_size` at a time, cut into chunks
    of the planned raw length, and each chunk becomes {"inputs": tokens with
    noise spans replaced by sentinels, "targets": sentinels and the spans}.
    Add seqio.preprocessors.append_eos_after_trim after it; the results then
    fit sequence_length exactly for full chunks.

    Raises T5mtlError when sequence_length["targets"] is shorter than the
    planned targets, or the vocabulary lacks enough sentinels.
    """
    inputs_length, targets_length = _inputs_and_targets_lengths(sequence_length)
    plan = plan_span_corruption_lengths(inputs_length, noise_density, mean_noise_span_length)
    if targets_length is not None and targets_length < plan.targets_length:
        raise T5mtlError(
            f"sequence_length['targets']={targets_length} is too short for span "
            f"corruption with inputs {inputs_length}: the targets need "
            f"{plan.targets_length} tokens ({plan.num_noise_tokens} noise tokens, "
            f"{plan.num_noise_spans} sentinels, EOS)")
    vocab = output_features["targets"].vocabulary
    if plan.num_noise_spans > vocab.extra_ids:
        raise T5mtlError(
            f"span corruption with inputs {inputs_length} makes {plan.num_noise_spans} "
            f"noise spans but the vocabulary has only {vocab.extra_ids} sentinels")
    if output_features["inputs"].vocabulary != vocab:
        raise T5mtlError("span corruption needs the same vocabulary for inputs and targets")

    if concat_batch_size > 1:
        dataset = reduce_concat_tokens(dataset, feature_key, concat_batch_size)
    dataset = split_tokens(dataset, plan.tokens_length, feature_key)
    base_seed = example_seeds.draw_base_seed()

    def corrupt(x):
        tokens = x[feature_key]
        mask = random_spans_noise_mask(
            tf.size(tokens), example_seeds.example_seed(base_seed, tokens),
            noise_density, mean_noise_span_length)
        return {"inputs": sentinel_inputs(tokens, mask, vocab),
                "targets": sentinel_targets(tokens, mask, vocab)}

    return dataset.map(corrupt, num_parallel_calls=tf.data.AUTOTUNE)
