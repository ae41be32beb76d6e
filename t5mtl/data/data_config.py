"""What a run trains on: a seqio task or mixture, its lengths and batching.

`DataConfig` is the gin edge (`train.data = @DataConfig()`); `resolve_mixture`
turns a list of task names into an equal-rate mixture; `example_input`
gives a task's first validation input for hints.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import gin
import numpy as np
import seqio

from t5mtl.errors import T5mtlError


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The training data: a seqio task or mixture and how to batch it.

    `mixture_or_task_name` may also be a list of task names: they are mixed
    at equal rates.
    """
    mixture_or_task_name: str | Sequence[str] = ""
    task_feature_lengths: dict = dataclasses.field(
        default_factory=lambda: {"inputs": 64, "targets": 16})
    batch_size: int = 32            # global, over all processes
    split: str = "train"
    pack: bool = True
    shuffle: bool = True
    seed: int = 0
    # At start, `t5mtl train` counts the examples of each task (among its
    # first N) that the feature lengths cut, and warns above 1%
    # (t5mtl.data.truncation); 0 skips the check.
    truncation_check_examples: int = 200


def resolve_mixture(name_or_names: str | Sequence[str]) -> str:
    """A registered task/mixture name; a list of task names becomes an
    equal-rate mixture registered under a name derived from the list."""
    names = [name_or_names] if isinstance(name_or_names, str) else list(name_or_names)
    for name in names:
        try:
            seqio.get_mixture_or_task(name)
        except ValueError as e:
            raise T5mtlError(f"unknown task or mixture {name!r}") from e
    if isinstance(name_or_names, str):
        return name_or_names
    mixture = "equal:" + "+".join(names)
    if mixture not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(mixture, names, default_rate=1.0)
    return mixture


TOKEN_FEATURES = ("encoder_input_tokens", "decoder_target_tokens",   # text-to-text, encoders
                  "query_tokens", "passage_tokens",                   # retrievers
                  "text_tokens")                                      # image-text


def count_tokens(batch) -> int:
    """Real (non-pad) tokens of a batch: those of its `TOKEN_FEATURES` (encoder
    tokens alone for a classifier's batch, query and passage tokens for a
    retriever's)."""
    return int(sum(np.sum(batch[k] > 0) for k in TOKEN_FEATURES if k in batch))


def example_input(task_name: str) -> str:
    """The first validation input of a task, as text ("..." if there is none)."""
    task = seqio.get_mixture_or_task(task_name)
    if not isinstance(task, seqio.Task) or "validation" not in task.splits:
        return "..."
    ds = task.get_dataset(None, split="validation", shuffle=False, num_epochs=1)
    for ex in ds.take(1).as_numpy_iterator():
        if "inputs_pretokenized" in ex:
            return ex["inputs_pretokenized"].decode()
    return "..."
