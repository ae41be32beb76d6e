"""Importing this module registers every built-in task and mixture.

Registration builds seqio Tasks and TaskInfo records only; no file is read
until a dataset is built, so importing works without a data_dir. Tasks take
their vocabulary from t5mtl.data.vocab.get_vocabulary() when they register:
parse gin before importing this module, or call
`register_all(vocabulary=..., overwrite=True)` to register them again.

    import t5mtl.data.registry  # noqa: F401  (registers tasks)
    seqio.get_mixture_or_task("synth_all")
"""
from __future__ import annotations

import importlib

import seqio

from t5mtl.data import synthetic

# Task modules register their tasks on import and expose register(**kwargs).
TASK_MODULES = (
    "t5mtl.data.glue",
    "t5mtl.data.superglue",
    "t5mtl.data.squad",
    "t5mtl.data.generation_tasks",
)
# Modules another part of the data layer owns; skipped while absent.
OPTIONAL_TASK_MODULES = ("t5mtl.data.pretraining_tasks",)


def _import_optional(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        return None


def register_all(vocabulary: seqio.Vocabulary | None = None, overwrite: bool = False) -> None:
    """Registers the synthetic suite and the real tasks (again, with overwrite=True).

    With `vocabulary`, tasks use it instead of get_vocabulary()'s. The
    optional pretraining tasks are only imported, not re-registered.
    """
    synthetic.register_all(vocabulary=vocabulary, overwrite=overwrite)
    for name in TASK_MODULES:
        module = importlib.import_module(name)
        if overwrite:
            module.register(vocabulary=vocabulary, overwrite=True)


register_all()
for _name in OPTIONAL_TASK_MODULES:
    _import_optional(_name)
