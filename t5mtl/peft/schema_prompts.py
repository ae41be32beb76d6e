"""Schema prompts (Zhong et al., 2022): learned key and task-type prompts
that replace the placeholder ids of schema-prompt tasks
(t5mtl.data.schema_prompts) in the encoder's input embeddings.

    EncoderDecoderModel.encoder_input = @SchemaPrompts()
    SchemaPrompts.length = 4                  # P, as the data's layout
    SchemaPrompts.vocab_size = 359            # the tasks' vocabulary (bytes: 359)
    DataConfig.mixture_or_task_name = 'schema_mtl'

Params: `encoder_input/types` [T, P, d_model] (one prompt per task type, the
TaskInfo category) and `encoder_input/keys` [K, P, d_model] (one per field
name, shared by every task with that field): (T + K) * P * d_model numbers.
The module reads the token ids the embeddings came from
(`EncoderInputs.tokens`); at each placeholder id it puts the matching
prompt row, everywhere else it keeps the token embedding. Segment ids and
task ids are unchanged and the sequence keeps its length, so packed rows
work too (each example carries its own placeholders).

`keys`, `types`, `length` and `vocab_size` are the placeholder layout: they
are recorded in model.json, so a new task whose fields and category are in
them composes its input zero-shot with the trained prompts.
"""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import gin
import jax.numpy as jnp

from t5mtl.data.schema_layout import DEFAULT_KEYS, DEFAULT_LENGTH, DEFAULT_TYPES, SchemaLayout
from t5mtl.errors import T5mtlError
from t5mtl.models.config import T5Config
from t5mtl.models.t5 import EncoderInputs


@gin.configurable
class SchemaPrompts(nn.Module):
    """Key and type prompts at the placeholder ids of schema tasks (module doc)."""
    keys: tuple = DEFAULT_KEYS
    types: tuple = DEFAULT_TYPES
    length: int = DEFAULT_LENGTH
    vocab_size: int = 0
    stddev: float = 0.5
    init_fields: ClassVar[tuple[str, ...]] = ("stddev",)   # not architecture

    def __post_init__(self):
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "types", tuple(self.types))
        if self.vocab_size <= 0:
            raise T5mtlError("SchemaPrompts.vocab_size must be the tasks' vocabulary size "
                             f"(byte vocabulary: 359), got {self.vocab_size}")
        self.layout()          # checks the names and that the ids fit
        super().__post_init__()

    def layout(self) -> SchemaLayout:
        return SchemaLayout(self.keys, self.types, self.length, self.vocab_size)

    @nn.compact
    def __call__(self, inputs: EncoderInputs, deterministic: bool = True) -> EncoderInputs:
        if inputs.tokens is None:
            raise T5mtlError("SchemaPrompts needs the encoder's token ids (EncoderInputs.tokens); "
                             "place it first on the encoder-input seam")
        d = inputs.embedded.shape[-1]
        init = nn.initializers.normal(self.stddev)
        types = self.param("types", nn.with_logical_partitioning(
            init, (None, "prompt", "embed")), (len(self.types), self.length, d), jnp.float32)
        keys = self.param("keys", nn.with_logical_partitioning(
            init, (None, "prompt", "embed")), (len(self.keys), self.length, d), jnp.float32)
        table = jnp.concatenate([types.reshape(-1, d), keys.reshape(-1, d)], axis=0)
        row = self.vocab_size - 1 - inputs.tokens
        is_prompt = (row >= 0) & (row < table.shape[0])
        prompts = table[jnp.clip(row, 0, table.shape[0] - 1)].astype(inputs.embedded.dtype)
        embedded = jnp.where(is_prompt[..., None], prompts, inputs.embedded)
        return EncoderInputs(embedded, inputs.segment_ids, inputs.task_ids, inputs.packed,
                             inputs.tokens)


def schema_prompt_params(config: T5Config, num_keys: int = len(DEFAULT_KEYS),
                         num_types: int = len(DEFAULT_TYPES),
                         length: int = DEFAULT_LENGTH) -> int:
    """Trainable parameters of SchemaPrompts: (num_types + num_keys) * P * d_model."""
    return (num_types + num_keys) * length * config.d_model
