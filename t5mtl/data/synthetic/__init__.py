"""The built-in offline synthetic suite: small generated text-to-text tasks.

Each category lives in its own module; every task is registered as the seqio
Task "synth_<name>" (see base.py for splits and seeding), and all of them
together as the equal-rate seqio Mixture "synth_all".

    from t5mtl.data import synthetic
    synthetic.register_all()          # idempotent; t5mtl.data.registry calls it
    [t.task_name for t in synthetic.TASKS]
"""
from __future__ import annotations

import seqio

from t5mtl.data.synthetic import (arithmetic, classification, counting, extraction,
                                  ordering, sequence, string_edit)
from t5mtl.data.synthetic.base import (PREFIX, SPLIT_SIZES, SPLITS, SyntheticTask,
                                       generate, split_of)

MODULES = (string_edit, arithmetic, ordering, counting, classification, extraction, sequence)
TASKS: tuple[SyntheticTask, ...] = tuple(t for m in MODULES for t in m.TASKS)
CATEGORIES: tuple[str, ...] = tuple(m.CATEGORY for m in MODULES)
MIXTURE = "synth_all"

__all__ = ["TASKS", "CATEGORIES", "MIXTURE", "SPLITS", "SPLIT_SIZES", "SyntheticTask",
           "generate", "split_of", "get", "register_all", "task_names"]


def get(name: str) -> SyntheticTask:
    """The task spec by name, with or without the "synth_" prefix."""
    short = name[len(PREFIX):] if name.startswith(PREFIX) else name
    for t in TASKS:
        if t.name == short:
            return t
    from t5mtl.errors import T5mtlError
    raise T5mtlError(f"unknown synthetic task {name!r}")


def task_names(category: str | None = None) -> list[str]:
    return [t.task_name for t in TASKS if category is None or t.category == category]


def register_all(seed: int = 0, vocabulary: seqio.Vocabulary | None = None,
                 overwrite: bool = False) -> None:
    """Registers every synth_* task and the synth_all mixture (idempotent).

    With overwrite=True, tasks are registered again (e.g. with another
    vocabulary or seed).
    """
    from t5mtl.data.synthetic import base

    for t in TASKS:
        if overwrite or t.task_name not in seqio.TaskRegistry.names():
            base.register(t, seed=seed, vocabulary=vocabulary, overwrite=overwrite)
    if overwrite:
        seqio.MixtureRegistry.remove(MIXTURE)
    if MIXTURE not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(MIXTURE, task_names(), default_rate=1.0)
