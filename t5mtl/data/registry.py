"""Importing this module registers every built-in task and mixture.

Registration builds seqio Tasks and TaskInfo records only; no file is read
until a dataset is built, so importing works without a data_dir. Tasks take
their vocabulary from t5mtl.data.vocab.get_vocabulary() when they register:
parse gin before importing this module, or call
`register_all(vocabulary=..., overwrite=True)` to register them again.

    import t5mtl.data.registry  # noqa: F401  (registers tasks)
    seqio.get_mixture_or_task("synth_all")

Besides the task modules' base tasks this registers their instruction
variants ("<task>_zs", "_fs", "_opt", "_cot", "_inv"; t5mtl.data.instruction_tasks)
and the built-in mixtures (exmix, ext5_pretrain, flan_mix, synth_seen_train,
...; t5mtl.data.mixtures). The schema-prompt variants ("schema_<task>",
mixture schema_mtl; t5mtl.data.schema_prompts) register on demand:
`@register_schema_mtl()` in gin, `schema_prompts.register()` in Python; so
does BERT's masked LM over raw_text_en (t5mtl.data.bert_tasks:
`@register_bert_mlm()`, `bert_tasks.register()`).
"""
from __future__ import annotations

import importlib

import seqio

from t5mtl.data import instruction_tasks, mixtures, synthetic
from t5mtl.data import schema_prompts  # noqa: F401  (gin: register_schema_mtl)
from t5mtl.data import bert_tasks  # noqa: F401  (gin: register_bert_mlm)

# Task modules register their tasks on import and expose register(**kwargs).
TASK_MODULES = (
    "t5mtl.data.glue",
    "t5mtl.data.superglue",
    "t5mtl.data.squad",
    "t5mtl.data.generation_tasks",
    "t5mtl.data.pretraining_tasks",
)


def register_all(vocabulary: seqio.Vocabulary | None = None, overwrite: bool = False) -> None:
    """Registers every built-in task, instruction variant and mixture.

    With overwrite=True everything is registered again (mixtures hold their
    Task objects, so they are rebuilt too); with `vocabulary`, tasks use it
    instead of get_vocabulary()'s.
    """
    synthetic.register_all(vocabulary=vocabulary, overwrite=overwrite)
    for name in TASK_MODULES:
        module = importlib.import_module(name)
        if overwrite:
            module.register(vocabulary=vocabulary, overwrite=True)
    instruction_tasks.register_instruction_tasks(vocabulary=vocabulary, overwrite=overwrite)
    mixtures.register(overwrite=overwrite)


register_all()
