"""Two more pretraining objectives as seqio preprocessors: i.i.d. denoising and prefix LM.

iid_denoising, the BERT-style masked-token objective in text-to-text form:
exactly round(L * noise_density) token positions are picked uniformly at
random (as BERT picks its 15%), then

- replacement="mask" (default): each picked token becomes the mask token with
  probability `mask_fraction`, a random regular token with probability
  `random_fraction`, and stays as it is otherwise (BERT's 80/10/10 is
  mask_fraction=0.8, random_fraction=0.1). The targets are the original
  chunk, as in the T5 paper's "BERT-style" objective.
- replacement="sentinel": each run of picked tokens becomes one unique
  sentinel and the targets hold the sentinels and the runs, as in span
  corruption (the T5 paper's "replace corrupted spans" with i.i.d. noise).

prefix_lm: a chunk is cut at a uniformly random point; the prefix is the input
and the continuation the target. With seqio.EncDecFeatureConverter the prefix
feeds the encoder; with seqio.PrefixLMFeatureConverter a decoder-only model
reads the prefix with full attention and predicts the continuation.

Both chunk documents as span corruption does (reduce_concat_tokens then
split_tokens) and seed each chunk from the seqio seed and its own tokens.
"""
from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

from t5mtl.data import example_seeds
from t5mtl.data import span_corruption as sc
from t5mtl.data.vocab import sentinel_id
from t5mtl.errors import T5mtlError

REPLACEMENTS = ("mask", "sentinel")
FIRST_REGULAR_ID = 3  # after PAD, EOS, UNK in T5's layout and seqio's byte vocabulary


def iid_noise_mask(length: tf.Tensor, seed: tf.Tensor,
                   noise_density: float = sc.NOISE_DENSITY) -> tf.Tensor:
    """A bool [length] mask with exactly round(length * noise_density) True
    positions (at least 1 when length > 0), chosen uniformly at random."""
    length = tf.convert_to_tensor(length, tf.int32)
    num_noise = tf.cast(tf.round(tf.cast(length, tf.float64) * noise_density), tf.int32)
    num_noise = tf.minimum(tf.maximum(num_noise, 1), length)
    order = seqio.utils.stateless_shuffle(tf.range(length), seed)
    return tf.scatter_nd(order[:num_noise, tf.newaxis],
                         tf.ones([num_noise], tf.bool), [length])


def replace_noise_tokens(tokens: tf.Tensor, noise_mask: tf.Tensor, seed: tf.Tensor,
                         mask_id: int, random_id_range: tuple[int, int],
                         mask_fraction: float = 0.8,
                         random_fraction: float = 0.1) -> tf.Tensor:
    """Replaces each noise token by `mask_id` (probability mask_fraction), by a
    uniform random id in [low, high) (probability random_fraction), or keeps it."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    u = tf.random.stateless_uniform(tf.shape(tokens), seeds[0], dtype=tf.float32)
    low, high = random_id_range
    random_ids = tf.random.stateless_uniform(
        tf.shape(tokens), seeds[1], minval=low, maxval=high, dtype=tf.int32)
    masked = tf.logical_and(noise_mask, u < mask_fraction)
    randomized = tf.logical_and(
        noise_mask, tf.logical_and(u >= mask_fraction, u < mask_fraction + random_fraction))
    out = tf.where(masked, tf.cast(mask_id, tokens.dtype), tokens)
    return tf.where(randomized, tf.cast(random_ids, tokens.dtype), out)


def _chunks(dataset, tokens_length, concat_batch_size, feature_key):
    if concat_batch_size > 1:
        dataset = sc.reduce_concat_tokens(dataset, feature_key, concat_batch_size)
    return sc.split_tokens(dataset, tokens_length, feature_key)


def _lengths(sequence_length: Mapping[str, int] | None) -> tuple[int, int]:
    sequence_length = sequence_length or {}
    inputs = sequence_length.get("inputs") or sc.DEFAULT_INPUTS_LENGTH
    targets = sequence_length.get("targets") or inputs
    return int(inputs), int(targets)


def iid_denoising(dataset: tf.data.Dataset,
                  sequence_length: Mapping[str, int] | None,
                  output_features: Mapping[str, seqio.Feature],
                  noise_density: float = sc.NOISE_DENSITY,
                  replacement: str = "mask",
                  mask_fraction: float = 0.8,
                  random_fraction: float = 0.1,
                  mask_id: int | None = None,
                  concat_batch_size: int = 128,
                  feature_key: str = "targets") -> tf.data.Dataset:
    """BERT-style masked-token denoising over tokenized documents in `feature_key`.

    Chunks hold sequence_length["inputs"] - 1 tokens (room for EOS). For
    replacement="mask" the targets (the original chunk, plus EOS) need
    sequence_length["targets"] >= sequence_length["inputs"]; for "sentinel"
    they need 2 * round(chunk * noise_density) + 1. A shorter targets length,
    fractions outside [0, 1], or too few sentinels raise T5mtlError.

    Args:
      mask_id: the mask token for replacement="mask"; default `<extra_id_0>`
        (T5's vocabularies have no [MASK] piece).
    """
    if replacement not in REPLACEMENTS:
        raise T5mtlError(f"unknown replacement {replacement!r}; choose one of {REPLACEMENTS}")
    if not 0.0 < noise_density < 1.0:
        raise T5mtlError(f"noise_density must be in (0, 1), got {noise_density}")
    if min(mask_fraction, random_fraction) < 0 or mask_fraction + random_fraction > 1:
        raise T5mtlError(
            f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) "
            f"must be >= 0 and sum to at most 1")
    vocab = output_features["targets"].vocabulary
    inputs_length, targets_length = _lengths(sequence_length)
    tokens_length = inputs_length - 1
    if tokens_length < 1:
        raise T5mtlError(f"inputs length {inputs_length} is too short for iid_denoising")
    num_noise = max(int(round(tokens_length * noise_density)), 1)
    if replacement == "mask":
        needed = tokens_length + 1
        if mask_id is None:
            mask_id = sentinel_id(vocab, 0)
        random_range = (FIRST_REGULAR_ID, vocab.vocab_size - vocab.extra_ids)
    else:
        needed = 2 * num_noise + 1
        if num_noise > vocab.extra_ids:
            raise T5mtlError(
                f"iid_denoising with sentinels may need {num_noise} sentinels but the "
                f"vocabulary has {vocab.extra_ids}")
    if targets_length < needed:
        raise T5mtlError(
            f"sequence_length['targets']={targets_length} is too short for iid_denoising "
            f"(replacement={replacement!r}) with inputs {inputs_length}: the targets "
            f"need {needed} tokens")

    dataset = _chunks(dataset, tokens_length, concat_batch_size, feature_key)
    base_seed = example_seeds.draw_base_seed()

    def corrupt(x):
        tokens = x[feature_key]
        seeds = tf.random.experimental.stateless_split(
            example_seeds.example_seed(base_seed, tokens), 2)
        mask = iid_noise_mask(tf.size(tokens), seeds[0], noise_density)
        if replacement == "sentinel":
            return {"inputs": sc.sentinel_inputs(tokens, mask, vocab),
                    "targets": sc.sentinel_targets(tokens, mask, vocab)}
        return {"inputs": replace_noise_tokens(tokens, mask, seeds[1], mask_id, random_range,
                                               mask_fraction, random_fraction),
                "targets": tokens}

    return dataset.map(corrupt, num_parallel_calls=tf.data.AUTOTUNE)


def prefix_lm(dataset: tf.data.Dataset,
              sequence_length: Mapping[str, int] | None,
              output_features: Mapping[str, seqio.Feature],
              concat_batch_size: int = 128,
              feature_key: str = "targets") -> tf.data.Dataset:
    """Prefix LM: {"inputs": chunk[:k], "targets": chunk[k:]} for a random k.

    Chunks hold L = min(inputs, targets) tokens and k is uniform in [1, L-1]
    (in [1, n-1] for a shorter last chunk of n >= 2 tokens; a 1-token chunk
    gives an empty target). With EOS appended both fit their lengths.
    """
    del output_features
    inputs_length, targets_length = _lengths(sequence_length)
    tokens_length = min(inputs_length, targets_length)
    if tokens_length < 2:
        raise T5mtlError(
            f"prefix_lm needs inputs and targets lengths >= 2, got "
            f"{inputs_length} and {targets_length}")
    dataset = _chunks(dataset, tokens_length, concat_batch_size, feature_key)
    base_seed = example_seeds.draw_base_seed()

    def split(x):
        tokens = x[feature_key]
        n = tf.size(tokens)
        k = tf.random.stateless_uniform(
            [], example_seeds.example_seed(base_seed, tokens),
            minval=1, maxval=tf.maximum(n, 2), dtype=tf.int32)
        return {"inputs": tokens[:k], "targets": tokens[k:]}

    return dataset.map(split, num_parallel_calls=tf.data.AUTOTUNE)
