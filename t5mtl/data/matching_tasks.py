"""Trainable copies of the text-matching tasks that ship a validation split
alone (QNLI's dev.tsv, BoolQ's val.jsonl), for Match-Prompt (docs/peft.md).

  match_qnli   glue_qnli's validation rows: every 5th (index 0, 5, 10, ...)
               is the copy's validation split, the other four of five its
               train split (4,370 / 1,093 examples)
  match_boolq  superglue_boolq's, split the same way (2,616 / 654)

Same template, label set, metrics and category as the original task; the
split is by row index in the file, so it is fixed and disjoint.

Registered on demand, not at import (`register()`, gin:
`DataConfig.mixture_or_task_name = @register_matching_tasks()`), and as
variants of their originals (variant "resplit"), not base tasks: they train
on the originals' validation rows, so they must not join the mixtures built
from every supervised base task (ExMix), nor change what an import leaves
registered.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import gin
import seqio

import t5mtl.data.registry  # noqa: F401  (the original tasks)
from t5mtl.data.files import PythonSource, register_task
from t5mtl.data.task_info import get_task_info, remove_task_info

HELD_OUT_EVERY = 5
COPIES = {"match_qnli": "glue_qnli", "match_boolq": "superglue_boolq"}


def split_source(source: seqio.DataSource, every: int = HELD_OUT_EVERY) -> PythonSource:
    """`source`'s validation rows as a train split (rows i with i % every != 0)
    and a validation split (the others)."""
    def rows(split: str):
        for i, ex in enumerate(source.iter_examples("validation")):
            if (i % every == 0) == (split == "validation"):
                yield ex
    return PythonSource(("train", "validation"), rows, source.dtypes)


def register() -> None:
    """Registers COPIES (once)."""
    own = (seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim)
    for name, original in COPIES.items():
        if name in seqio.TaskRegistry.names():
            continue
        task = seqio.get_mixture_or_task(original)
        info = get_task_info(original)
        register_task(
            name, split_source(task.source),
            [p for p in task.preprocessors if p not in own],
            dataclasses.replace(info, name=name, splits=("train", "validation"),
                                base_task=original, variant="resplit",
                                description=f"{info.description} ({original}'s validation "
                                            f"rows, 4 of 5 for training)"),
            metric_fns=task.metric_fns, postprocess_fn=task.postprocessor,
            vocabulary=task.output_features["targets"].vocabulary)


def unregister() -> None:
    """Removes COPIES (no error if absent)."""
    for name in COPIES:
        seqio.TaskRegistry.remove(name)
        remove_task_info(name)


@gin.configurable
def register_matching_tasks(tasks: Sequence[str]) -> list[str]:
    """Registers COPIES and returns `tasks`, for a run's task list in gin."""
    register()
    return list(tasks)
