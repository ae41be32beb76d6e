"""Instruction variants as seqio Tasks: "<base>_<variant>" for each base task
and variant its template table allows (t5mtl.data.templates renders them).

    register_instruction_task("glue_sst2", "fs", k=5, name="glue_sst2_fs5")
    register_instruction_tasks()          # every variant of every table
    instruction_task_names("zs")          # what is registered
    answer_options("glue_sst2_opt")       # the label strings rank classification scores

A variant task reads its base task's source, runs the base's raw-field
preprocessors, then `templates.instruct` with the variant's spec; its
metrics are the base task's (inverted tasks: the table's), its TaskInfo the
base's with the variant's name, schema and labels.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import seqio

from t5mtl.data import files
from t5mtl.data import task_info as task_info_lib
from t5mtl.data.templates import (DEFAULT_POOL_SIZE, SHOT_SEPARATOR, VARIANTS,
                                  AnswerPostprocessor, InstructionSpec, TaskTemplates,
                                  instruct, variant_name)
from t5mtl.errors import T5mtlError


def raw_preprocessors(task: seqio.Task) -> tuple[Callable, ...]:
    """The base task's preprocessors that make raw fields: those before
    tokenization, without the T5-format template."""
    steps = []
    for p in task.preprocessors:
        func = getattr(p, "func", p)
        if func in (seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim,
                    seqio.preprocessors.append_eos,
                    seqio.preprocessors.tokenize_and_append_eos):
            break
        if func is files.apply_template:
            continue
        steps.append(p)
    return tuple(steps)


def register_instruction_task(base: str, variant: str, table: TaskTemplates | None = None, *,
                              k: int | None = None, seed: int = 0,
                              pool_size: int = DEFAULT_POOL_SIZE, name: str | None = None,
                              vocabulary: seqio.Vocabulary | None = None,
                              overwrite: bool = False) -> seqio.Task:
    """Registers the instruction variant `variant` of the task `base`.

    Args:
      base: a registered task with a TaskInfo.
      variant: one of VARIANTS.
      table: its templates (default: template_tables.get(base)).
      k: few-shot exemplars (default: table.fewshot_k); only for "fs".
      seed: salts the template draw and the exemplar choice.
      pool_size: how many train examples few-shot exemplars are drawn from.
      name: the task name (default "<base>_<variant>").
      vocabulary: default: the base task's.
      overwrite: replace a task of the same name.

    Metrics are the base task's (inverted tasks: table.inverse_metrics).
    """
    if variant not in VARIANTS:
        raise T5mtlError(f"unknown instruction variant {variant!r}; choose from "
                         f"{', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    if base not in seqio.TaskRegistry.names():
        from t5mtl.data.mixing import resolve
        resolve(base)  # raises, naming close names
    base_task = seqio.TaskRegistry.get(base)
    info = task_info_lib.get_task_info(base)
    if table is None:
        from t5mtl.data import template_tables
        table = template_tables.get(base)
    name = name or variant_name(base, variant)
    templates = table.templates_for(variant)
    if not templates:
        raise T5mtlError(f"task {base!r} has no {variant} templates")
    for t in templates:
        if SHOT_SEPARATOR in t.inputs or SHOT_SEPARATOR in t.targets:
            raise T5mtlError(f"task {base!r}: template {t.inputs!r} -> {t.targets!r} contains "
                             f"the few-shot separator {SHOT_SEPARATOR!r}")
    if v.options and not table.label_field:
        raise T5mtlError(f"task {base!r} is not a classification task: no options to list")
    if v.fewshot and "train" not in base_task.splits:
        raise T5mtlError(f"task {base!r} has no train split to draw few-shot exemplars from "
                         f"(it has {', '.join(base_task.splits)})")
    if k is not None and not v.fewshot:
        raise T5mtlError(f"k is only for few-shot variants, not {variant!r}")
    k = (table.fewshot_k if k is None else k) if v.fewshot else 0
    if v.fewshot and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise T5mtlError(f"k must be a positive number of exemplars, got {k!r}")
    label_names = info.label_names if table.label_field else ()
    verbalizers = (table.verbalizers or label_names) if table.label_field else ()
    if len(verbalizers) != len(label_names) or len(set(verbalizers)) != len(verbalizers):
        raise T5mtlError(f"task {base!r}: verbalizers {verbalizers} do not match the labels "
                         f"{label_names} one to one")
    source = base_task.source
    fields = list(info.fields)
    if v.cot:
        source = table.cot_source() if table.cot_source else source
        fields.append("rationale")
    known = set(fields) | set(source.dtypes if isinstance(source, files.PythonSource) else ())
    spec = InstructionSpec(
        task_name=name, base_task=base, variant=variant, templates=tuple(templates),
        label_field=table.label_field if not v.inverted or table.label_field in known else "",
        label_names=label_names, verbalizers=verbalizers, options=v.options, k=k, seed=seed,
        pool_size=pool_size, train_source=base_task.source if v.fewshot else None,
        raw_preprocessors=raw_preprocessors(base_task),
        output_features=base_task.output_features)
    spec.check_fields(sorted(known))  # fail at registration, not in tf.data
    vocab = vocabulary or base_task.output_features["inputs"].vocabulary
    if v.inverted:
        metric_fns = list(table.inverse_metrics)
        postprocess = AnswerPostprocessor()
        schema, labels = "text_to_text", ()
        metric_names = tuple(getattr(f, "__name__", str(f)) for f in metric_fns)
    else:
        metric_fns = list(base_task.metric_fns)
        postprocess = AnswerPostprocessor(base=base_task.postprocess_fn, label_names=label_names,
                                          verbalizers=verbalizers, cot=v.cot)
        schema = "text_to_text" if v.cot else info.schema
        labels = () if v.cot else (verbalizers or info.label_names)
        metric_names = info.metrics
    variant_info = dataclasses.replace(
        info, name=name, schema=schema, label_names=labels, metrics=metric_names,
        fields=tuple(fields), base_task=base, variant=variant,
        description=f"{v.description} ({len(templates)} templates"
                    f"{f', k={k}' if k else ''}): {info.description or info.instruction}")
    return files.register_task(
        name, source, [*spec.raw_preprocessors, functools.partial(instruct, spec=spec)],
        variant_info, metric_fns=metric_fns, postprocess_fn=postprocess, vocabulary=vocab,
        overwrite=overwrite)


def register_instruction_tasks(vocabulary: seqio.Vocabulary | None = None,
                               overwrite: bool = False, seed: int = 0) -> list[str]:
    """Registers every variant every template table allows; returns their names.

    Tables of tasks that are not registered are skipped; tasks already
    registered are kept unless `overwrite`.
    """
    from t5mtl.data import template_tables

    names = []
    for base, table in template_tables.tables().items():
        if base not in seqio.TaskRegistry.names():
            continue
        splits = seqio.TaskRegistry.get(base).splits
        for variant in VARIANTS:
            if not table.has_variant(variant, splits):
                continue
            name = variant_name(base, variant)
            if overwrite or name not in seqio.TaskRegistry.names():
                register_instruction_task(base, variant, table, seed=seed, vocabulary=vocabulary,
                                          overwrite=overwrite)
            names.append(name)
    return names


def instruction_task_names(variant: str | None = None,
                           base_tasks: Sequence[str] | None = None,
                           custom: bool = False) -> list[str]:
    """Registered instruction variants (of `base_tasks`, of kind `variant`), sorted.

    Only the standard "<base>_<variant>" tasks, unless `custom` (then also
    variants registered under other names, e.g. with another k or seed).
    """
    infos = task_info_lib.list_task_infos(variant=variant, variants=True)
    wanted = None if base_tasks is None else set(base_tasks)
    registered = set(seqio.TaskRegistry.names())
    return [i.name for i in infos
            if i.base_task and i.name in registered
            and (wanted is None or i.base_task in wanted)
            and (custom or i.name == f"{i.base_task}_{i.variant}")]


def remove_instruction_task(name: str) -> None:
    """Unregisters a variant task and its TaskInfo (no error if absent)."""
    seqio.TaskRegistry.remove(name)
    task_info_lib.remove_task_info(name)


def answer_options(task: str) -> tuple[str, ...]:
    """The answer strings of a classification task or variant, in label order
    (what rank classification scores)."""
    info = task_info_lib.get_task_info(task)
    if not info.label_names:
        raise T5mtlError(f"task {task!r} has no closed label set")
    return info.label_names
