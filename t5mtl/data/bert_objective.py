"""BERT's input format and masked-LM objective (Devlin et al. 2019) as seqio preprocessors.

- `bert_chunks`: cuts tokenized documents into chunks of length - 2 tokens,
  so that [CLS] chunk [SEP] fills the inputs length (pretraining text).
- `bert_inputs`: [CLS] a [SEP] for one text, [CLS] a [SEP] b [SEP] for a
  pair, and a "token_types" feature (0 up to and including the first [SEP],
  1 after it), truncated to the inputs length as HF's tokenizer does with
  truncation="longest_first" (see `pair_lengths`).
- `bert_mask`: every token but the special ones ([PAD] [UNK] [CLS] [SEP]
  [MASK]) is selected independently with probability 0.15 (as HF's
  DataCollatorForLanguageModeling); a selected token becomes [MASK] with
  probability 0.8, a random id with probability 0.1 (uniform over the
  non-special ids) and stays itself otherwise. "inputs" become the masked
  ids and "targets" hold the original id at selected positions and 0 (PAD)
  elsewhere.

The loss: BERT's masked-LM loss is taken at every selected position, so a
feature converter must weight the loss by `targets > 0` (targets are 0
exactly where nothing was selected; a selected token is never [PAD], id 0).
seqio 0.0.20's `EncoderFeatureConverter` instead weights `inputs == mask_id`:
with it the 10% random and 10% kept positions get no loss (only the 80% that
became [MASK] do), which is not BERT's objective. These features fit either.

Randomness: each example is seeded from one seed drawn from seqio's seed
stream (`seqio.map_over_dataset(num_seeds=1)`, so `get_dataset(seed=...)`
decides it) folded with a fingerprint of the example's own ids
(t5mtl/data/example_seeds.py): the same seed gives the same masks however
the data is sharded, and identical examples get identical masks.

Features are built for `add_eos=False` (BERT has no EOS; [SEP] is placed here).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import seqio
import tensorflow as tf

from t5mtl.data import example_seeds
from t5mtl.data import span_corruption as sc
from t5mtl.errors import T5mtlError

SELECT_PROB, MASK_PROB, RANDOM_PROB = 0.15, 0.8, 0.1
TOKEN_TYPES = "token_types"


def _bert_vocabulary(output_features: Mapping[str, seqio.Feature], key: str):
    if key not in output_features:
        raise T5mtlError(f"BERT preprocessors need an output feature {key!r}")
    vocab = output_features[key].vocabulary
    for attr in ("cls_id", "sep_id", "mask_id", "special_ids"):
        if not hasattr(vocab, attr):
            raise T5mtlError(
                f"feature {key!r} has vocabulary {vocab!r}, which has no {attr}: BERT "
                f"preprocessors need a WordPiece vocabulary (get_vocabulary('wordpiece_en'))")
    return vocab


def _length(sequence_length: Mapping[str, int] | None, key: str) -> int | None:
    length = (sequence_length or {}).get(key)
    return None if length is None else int(length)


def bert_chunks(dataset: tf.data.Dataset, sequence_length: Mapping[str, int] | None,
                feature_key: str = "inputs") -> tf.data.Dataset:
    """Cuts each tokenized document in `feature_key` into chunks of
    sequence_length[feature_key] - 2 ids (the last may be shorter), one
    example each; only `feature_key` is kept."""
    length = _length(sequence_length, feature_key)
    if length is None:
        raise T5mtlError(f"bert_chunks needs sequence_length[{feature_key!r}]")
    if length < 3:
        raise T5mtlError(
            f"sequence_length[{feature_key!r}]={length} is too short for [CLS] text [SEP]")
    return sc.split_tokens(dataset, length - 2, feature_key)


def pair_lengths(len_a: tf.Tensor, len_b: tf.Tensor, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
    """How many ids of a and b to keep so that both fit `budget` (HF's longest_first).

    As HF's tokenizers library truncates a pair: nothing is cut if both fit;
    otherwise the shorter keeps its length if it is at most half the budget
    and the longer is cut to the rest; otherwise each gets half, the longer
    (b on a tie) the odd one left over. Ids are cut from the end.
    """
    len_a = tf.convert_to_tensor(len_a, tf.int32)
    len_b = tf.convert_to_tensor(len_b, tf.int32)
    short = tf.minimum(len_a, len_b)
    both_cut = 2 * short > budget
    short_keep = tf.where(both_cut, budget // 2, short)
    long_keep = tf.where(both_cut, budget // 2 + budget % 2, budget - short)
    a_longer = len_a > len_b
    keep_a = tf.where(a_longer, long_keep, short_keep)
    keep_b = tf.where(a_longer, short_keep, long_keep)
    fits = len_a + len_b <= budget
    return tf.where(fits, len_a, keep_a), tf.where(fits, len_b, keep_b)


def bert_inputs(dataset: tf.data.Dataset, sequence_length: Mapping[str, int] | None,
                output_features: Mapping[str, seqio.Feature],
                text_keys: Sequence[str] = ("inputs",),
                output_key: str = "inputs") -> tf.data.Dataset:
    """BERT's [CLS] a [SEP] (b [SEP]) in `output_key`, with "token_types".

    Args:
      text_keys: one or two features, each a string (tokenized here with
        `output_key`'s vocabulary, no special tokens added) or a 1-D int
        tensor of ids. They are removed; other features pass through.
      output_key: the feature written; sequence_length[output_key] (if
        given) is the length to truncate to, [CLS] and [SEP]s included.
    """
    if len(text_keys) not in (1, 2):
        raise T5mtlError(f"bert_inputs takes one or two text keys, got {list(text_keys)}")
    vocab = _bert_vocabulary(output_features, output_key)
    length = _length(sequence_length, output_key)
    num_special = len(text_keys) + 1
    if length is not None and length <= num_special:
        raise T5mtlError(
            f"sequence_length[{output_key!r}]={length} leaves no room for text "
            f"after {num_special} special tokens")
    cls = tf.constant([vocab.cls_id], tf.int32)
    sep = tf.constant([vocab.sep_id], tf.int32)

    def ids_of(x, key):
        if key not in x:
            raise T5mtlError(f"bert_inputs: the examples have no feature {key!r}")
        value = x[key]
        if value.dtype == tf.string:
            value = vocab.encode_tf(value)
        return tf.cast(value, tf.int32)

    @tf.autograph.experimental.do_not_convert  # plain TF ops: nothing to convert
    def build(x):
        texts = [ids_of(x, k) for k in text_keys]
        if len(texts) == 1:
            a = texts[0] if length is None else texts[0][:length - 2]
            ids = tf.concat([cls, a, sep], 0)
            types = tf.zeros_like(ids)
        else:
            a, b = texts
            if length is not None:
                keep_a, keep_b = pair_lengths(tf.size(a), tf.size(b), length - 3)
                a, b = a[:keep_a], b[:keep_b]
            ids = tf.concat([cls, a, sep, b, sep], 0)
            types = tf.concat([tf.zeros([tf.size(a) + 2], tf.int32),
                               tf.ones([tf.size(b) + 1], tf.int32)], 0)
        out = {k: v for k, v in x.items() if k not in text_keys}
        out[output_key] = ids
        out[TOKEN_TYPES] = types
        return out

    return dataset.map(build, num_parallel_calls=tf.data.AUTOTUNE)


def mask_tokens(tokens: tf.Tensor, seed: tf.Tensor, mask_id: int,
                special_ids: Sequence[int], vocab_size: int,
                select_prob: float = SELECT_PROB, mask_prob: float = MASK_PROB,
                random_prob: float = RANDOM_PROB) -> tuple[tf.Tensor, tf.Tensor]:
    """BERT's masking of int ids `tokens` (any shape) from a stateless `seed`.

    Returns (masked inputs, targets): targets are the original ids where
    selected and 0 elsewhere. Ids in `special_ids` are never selected and
    never drawn as random replacements.
    """
    tokens = tf.cast(tokens, tf.int32)
    special_set = set(int(i) for i in special_ids)
    special = tf.constant(sorted(special_set), tf.int32)
    is_special = tf.reduce_any(tf.equal(tokens[..., tf.newaxis], special), axis=-1)
    regular = tf.constant([i for i in range(vocab_size) if i not in special_set], tf.int32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    shape = tf.shape(tokens)
    selected = tf.logical_and(
        tf.random.stateless_uniform(shape, seeds[0]) < select_prob, tf.logical_not(is_special))
    kind = tf.random.stateless_uniform(shape, seeds[1])
    random_ids = tf.gather(regular, tf.random.stateless_uniform(
        shape, seeds[2], minval=0, maxval=tf.size(regular), dtype=tf.int32))
    inputs = tf.where(tf.logical_and(selected, kind < mask_prob), mask_id, tokens)
    randomized = tf.logical_and(
        selected, tf.logical_and(kind >= mask_prob, kind < mask_prob + random_prob))
    inputs = tf.where(randomized, random_ids, inputs)
    return inputs, tf.where(selected, tokens, 0)


def bert_mask(dataset: tf.data.Dataset, sequence_length: Mapping[str, int] | None,
              output_features: Mapping[str, seqio.Feature],
              select_prob: float = SELECT_PROB, mask_prob: float = MASK_PROB,
              random_prob: float = RANDOM_PROB, feature_key: str = "inputs",
              targets_key: str = "targets") -> tf.data.Dataset:
    """BERT's masked-LM corruption of `feature_key` (see the module docstring).

    Writes the masked ids to `feature_key` and the targets (original ids at
    selected positions, 0 elsewhere) to `targets_key`; other features pass
    through. Put it after `bert_inputs` so [CLS] and [SEP] are never masked.
    """
    del sequence_length
    if not 0.0 < select_prob < 1.0:
        raise T5mtlError(f"select_prob must be in (0, 1), got {select_prob}")
    if min(mask_prob, random_prob) < 0 or mask_prob + random_prob > 1:
        raise T5mtlError(f"mask_prob ({mask_prob}) and random_prob ({random_prob}) must be "
                         f">= 0 and sum to at most 1")
    vocab = _bert_vocabulary(output_features, feature_key)
    if vocab.pad_id != 0:
        raise T5mtlError(f"bert_mask needs [PAD] = 0 (targets use 0 for 'no target'); "
                         f"{vocab!r} has {vocab.pad_id}")
    base_seed = example_seeds.draw_base_seed()

    @tf.autograph.experimental.do_not_convert  # plain TF ops: nothing to convert
    def corrupt(x):
        tokens = x[feature_key]
        inputs, targets = mask_tokens(
            tokens, example_seeds.example_seed(base_seed, tokens), vocab.mask_id,
            vocab.special_ids, vocab.vocab_size, select_prob, mask_prob, random_prob)
        return {**x, feature_key: inputs, targets_key: targets}

    return dataset.map(corrupt, num_parallel_calls=tf.data.AUTOTUNE)
