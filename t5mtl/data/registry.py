"""Importing this module registers every built-in task and mixture.

Registration builds seqio Tasks and TaskInfo records only; no file is read
until a dataset is built, so importing works without a data_dir.

    import t5mtl.data.registry  # noqa: F401  (registers tasks)
    seqio.get_mixture_or_task("synth_all")
"""
from __future__ import annotations

import importlib

from t5mtl.data import synthetic

# Task modules register their tasks on import.
TASK_MODULES = (
    "t5mtl.data.glue",
    "t5mtl.data.superglue",
    "t5mtl.data.squad",
    "t5mtl.data.generation_tasks",
)
# Modules another part of the data layer may not have written yet.
OPTIONAL_TASK_MODULES = ("t5mtl.data.pretraining_tasks",)

synthetic.register_all()
for _name in TASK_MODULES:
    importlib.import_module(_name)
for _name in OPTIONAL_TASK_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as e:
        if e.name != _name:
            raise
