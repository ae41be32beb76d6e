"""Encoder-input modules: what the encoder sees, between embedding and encoding.

An encoder-input module is a Flax module called as
`module(inputs: EncoderInputs, deterministic=...) -> EncoderInputs`
(t5mtl.models.t5). It may change the vectors and the sequence's length, and
returns the segment ids (the mask every later layer and the decoder use) and
task ids to match. Select one with gin:

    EncoderDecoderModel.encoder_input = @PrependVectors()
    PrependVectors.length = 20

Its fields must be JSON values: model.json records them to rebuild it.
"""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import gin
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models.t5 import EncoderInputs


@gin.configurable
class PrependVectors(nn.Module):
    """Prepends `length` learned vectors (params `encoder_input/vectors`
    [length, embed]) to every row: the shape of soft prompt tuning.

    Rows must be unpacked (a packed row holds several examples, and one
    prefix cannot belong to each). The vectors get segment id 1, so every
    token of the row attends to them and the decoder cross-attends to them;
    their task id is the row's (its first position's). Relative positions
    run over the longer sequence: the first token sits at index `length`.
    """
    length: int
    stddev: float = 1.0
    init_fields: ClassVar[tuple[str, ...]] = ("stddev",)   # not architecture

    def initializer(self):
        """The vectors' fresh init (before any `warm_start` from a base)."""
        return nn.initializers.normal(self.stddev)

    @nn.compact
    def __call__(self, inputs: EncoderInputs, deterministic: bool = True) -> EncoderInputs:
        if inputs.packed:
            raise T5mtlError("PrependVectors needs unpacked rows: set DataConfig.pack=False")
        b, _, d = inputs.embedded.shape
        vectors = self.param("vectors", nn.with_logical_partitioning(
            self.initializer(), ("prompt", "embed")), (self.length, d), jnp.float32)
        prefix = jnp.broadcast_to(vectors.astype(inputs.embedded.dtype)[None], (b, self.length, d))
        segment_ids = jnp.concatenate(
            [jnp.ones((b, self.length), inputs.segment_ids.dtype), inputs.segment_ids], axis=1)
        task_ids = inputs.task_ids
        if task_ids is not None:
            task_ids = jnp.concatenate(
                [jnp.broadcast_to(task_ids[:, :1], (b, self.length)), task_ids], axis=1)
        return EncoderInputs(jnp.concatenate([prefix, inputs.embedded], axis=1), segment_ids,
                             task_ids, inputs.packed)
