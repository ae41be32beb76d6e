"""Per-example random seeds that do not depend on an example's position.

seqio's `map_over_dataset(num_seeds=k)` hands each example the next seed of a
stream, so an example's randomness depends on where it sits in the stream:
shard the data two ways and the same chunk of text gets another corruption.
The objectives here instead seed each example with

    stateless_fold_in(base_seed, fingerprint(example tokens))

where `base_seed` is one draw from seqio's seed stream (so
`get_dataset(seed=...)` still decides everything, and each preprocessor gets
its own draw). The result is a pure function of (seed, tokens): the same seed
gives the same examples, and sharding 1 way or N ways gives the same union.
Without a seed (`seed=None`) the base seed is random, as in seqio.

One consequence: repeating a dataset (num_epochs > 1) repeats each chunk's
corruption too; vary the seed per epoch to get fresh noise.
"""
from __future__ import annotations

import seqio
import tensorflow as tf


def draw_base_seed() -> tf.Tensor:
    """One seed pair (int64 [2]) from seqio's map-seed stream.

    Called while a preprocessor builds its pipeline; inside
    `Task.get_dataset(seed=s)` the draw is a function of `s`.
    """
    @seqio.map_over_dataset(num_seeds=1)
    def take_seed(unused_element, seed):
        return tf.cast(seed, tf.int64)

    return take_seed(tf.data.Dataset.from_tensors(0)).get_single_element()


def fingerprint(tokens: tf.Tensor) -> tf.Tensor:
    """A 64-bit fingerprint (int64 scalar) of a 1-D token tensor."""
    digest = tf.fingerprint(tf.expand_dims(tf.cast(tokens, tf.int32), 0))[0]
    return tf.bitcast(digest, tf.int64)


def example_seed(base_seed: tf.Tensor, tokens: tf.Tensor) -> tf.Tensor:
    """The seed (int64 [2]) for one example: `base_seed` folded with its tokens."""
    return tf.random.experimental.stateless_fold_in(
        tf.cast(base_seed, tf.int64), fingerprint(tokens))
