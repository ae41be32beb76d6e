"""Per-task parameters indexed by the run's task list.

Modules with one set of parameters per task (the multi-head classifier's
heads, HyperPrompt's task embeddings, ATTEMPT's target prompts, Match-Prompt's
task prompts) are indexed by the task id the data carries: a task's position
in the mixture's sorted task list (data/task_ids.py). Two checks keep the
module and the data in step, raised as one line naming both lists or the
task: training data must have exactly the module's tasks in that order, and
evaluating one task gives every row that task's index.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from t5mtl.errors import T5mtlError


def check_task_order(owner: str, what: str, tasks: Sequence[str],
                     task_names: Sequence[str]) -> None:
    """The data's tasks must be `tasks`, in this order. `owner` is the
    module's class name, `what` its per-task parameters ("heads", ...)."""
    if list(task_names) != list(tasks):
        raise T5mtlError(f"{owner} has {what} for tasks {list(tasks)} but the data's tasks are "
                         f"{list(task_names)} (task ids index this list in this order); set "
                         f"{owner}.tasks to the mixture's task list")


def task_index(owner: str, what: str, tasks: Sequence[str], task_name: str,
               hint: str = "") -> int:
    """`task_name`'s position in `tasks`; `what` names one task's parameters
    ("head", ...)."""
    if task_name not in tasks:
        raise T5mtlError(f"{owner} has no {what} for task {task_name!r} (its tasks: "
                         f"{list(tasks)}){hint}")
    return list(tasks).index(task_name)


def task_id_rows(index: int, batch_size: int, per_row_shape: tuple[int, ...] = (1,)):
    """int32 [batch_size, *per_row_shape] filled with one task's index."""
    return np.full((batch_size, *per_row_shape), index, np.int32)
