"""Soft prompt tuning (Lester et al., 2021): P learned vectors prepended to
the encoder's input embeddings of a frozen T5.

    EncoderDecoderModel.encoder_input = @PromptTuning()
    PromptTuning.length = 100
    PromptTuning.init = "class_labels"    # or "sampled_vocab", "random_uniform"
    train.trainable_patterns = ["encoder_input/.*"]
    CheckpointConfig.init_from = "/path/to/base"
    CheckpointConfig.save_trainable_only = True

The prompt is `encoder_input/vectors` [P, embed]: P * d_model parameters
(409,600 for P=100 on T5 XXL). The paper's three initializations:

  random_uniform   U(-init_range, init_range) (the paper's 0.5).
  sampled_vocab    rows of the base's token embedding table drawn (without
                   replacement when there are enough) from the first
                   `population` ids. SentencePiece vocabularies list pieces
                   roughly by frequency, so these are the 5,000 most frequent
                   tokens of T5's vocabulary.
  class_labels     row i is the mean embedding of the tokens of the run's
                   i-th label name (its tasks' TaskInfo.label_names, in task
                   order); the rows left over once the labels run out are
                   sampled vocabulary, as in the paper.

The two base-dependent inits need the base's embeddings, which exist only
once finetuning init has loaded them: the trainer calls the model's
`warm_start` then, and the model hands this module its own params and a
`WarmStart` (vocabulary, labels, rng, embedding). Without a base (no
init_from) every init is the random one its `initializer` draws.
"""
from __future__ import annotations

from typing import ClassVar

import gin
import jax
import jax.numpy as jnp
import numpy as np

from t5mtl.errors import T5mtlError
from t5mtl.models.base import WarmStart
from t5mtl.models.encoder_inputs import PrependVectors

INITS = ("random_uniform", "sampled_vocab", "class_labels")


@gin.configurable
class PromptTuning(PrependVectors):
    """A soft prompt with Lester et al.'s initializations (see module doc)."""
    length: int = 100
    init: str = "sampled_vocab"
    init_range: float = 0.5
    population: int = 5000
    init_fields: ClassVar[tuple[str, ...]] = ("stddev", "init", "init_range", "population")

    def __post_init__(self):
        if self.init not in INITS:
            raise T5mtlError(f"PromptTuning.init={self.init!r}: choose one of {', '.join(INITS)}")
        super().__post_init__()

    def initializer(self):
        r = self.init_range
        return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -r, r)

    def warm_start(self, own: dict, context: WarmStart) -> dict:
        """{"vectors": the init named by `init`} from the base's embeddings."""
        vectors = own["vectors"]
        if self.init == "random_uniform":
            return own
        embedding = jnp.asarray(context.embedding, jnp.float32)
        rows = sampled_rows(embedding, self.length, self.population, context.rng)
        if self.init == "class_labels":
            if context.vocabulary is None:
                raise T5mtlError("PromptTuning.init='class_labels' needs the run's vocabulary")
            labels = label_embeddings(embedding, context.vocabulary, context.labels)
            if not len(labels):
                raise T5mtlError("PromptTuning.init='class_labels': the run's tasks have no "
                                 "label names (TaskInfo.label_names); use 'sampled_vocab'")
            n = min(len(labels), self.length)
            rows = rows.at[:n].set(labels[:n])
        return {**own, "vectors": rows.astype(vectors.dtype)}


def sampled_rows(embedding, count: int, population: int, rng):
    """`count` rows of `embedding` drawn from its first `population` ids
    (without replacement when the population has enough)."""
    size = min(population, embedding.shape[0])
    ids = jax.random.choice(rng, size, (count,), replace=count > size)
    return embedding[ids]


def label_embeddings(embedding, vocabulary, labels) -> jnp.ndarray:
    """[len(labels), embed]: each label's token embeddings averaged."""
    rows = []
    for label in labels:
        ids = [i for i in vocabulary.encode(label) if 0 <= i < embedding.shape[0]]
        if not ids:
            raise T5mtlError(f"class label {label!r} encodes to no tokens")
        rows.append(embedding[np.asarray(ids)].mean(axis=0))
    return jnp.stack(rows) if rows else jnp.zeros((0, embedding.shape[1]), embedding.dtype)
