"""Schema-prompt variants of tasks (Zhong et al., 2022, "Improving Task
Generalization via Unified Schema Prompt"): the data side.

A task's input is organised by its schema rather than by a hand-written
template: a task-type prompt, then for each input field (TaskInfo.fields
without the target field) that field's key prompt followed by the field's
text. The prompts are learned vectors (t5mtl.peft.SchemaPrompts); here they
are runs of reserved placeholder ids, one run of `length` ids per key and per
type, which the encoder-input module replaces with the learned vectors:

    inputs  = [type(category) x P] [key(f1) x P] text(f1) [key(f2) x P] text(f2) ...
    targets = the target field's text (TaskInfo: "label", or "answer")

Key prompts are shared by every task with that field name (SST-2's and
CoLA's "sentence"), type prompts by every task of a category (the paper's
task types: NLI, QA, sentiment, ...). A task whose fields and category are
all in the layout composes its prompt zero-shot, with no new parameters.

Placeholder ids are the vocabulary's extra ids (span-corruption sentinels),
counted down from the top like them: row r of the prompt table (types
first, then keys; P rows each) is id `vocab_size - 1 - r`. Text never
tokenizes to an extra id, so a placeholder is never a word. The layout (key
and type lists, P, vocab_size) is recorded in model.json as the module's
fields, so the ids mean the same to a model loaded later.

`register()` (gin: `@register_schema_mtl()`) registers "schema_<task>" for
every synthetic, GLUE and SuperGLUE task (`base_tasks()`), and the mixture
"schema_mtl" over those with a train split except the held-out
HELDOUT_TASKS, whose fields and categories the mixture's tasks all cover.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import gin
import seqio
import tensorflow as tf

from t5mtl.data import files, glue, superglue, synthetic
from t5mtl.data import task_info as task_info_lib
from t5mtl.data.schema_layout import (DEFAULT_KEYS, DEFAULT_LENGTH, DEFAULT_TYPES,
                                      TARGET_FIELDS, SchemaLayout)
from t5mtl.errors import T5mtlError

PREFIX = "schema_"
MIXTURE = "schema_mtl"

# Held out of schema_mtl: a synthetic task of a seen category (arithmetic)
# and a SuperGLUE task whose keys (hypothesis, premise) and type (nli) CB has.
HELDOUT_TASKS = ("synth_add", "superglue_rte")


def base_tasks() -> tuple[str, ...]:
    return (*synthetic.task_names(), *glue.TASKS, *superglue.TASKS)


def layout_for(vocabulary: seqio.Vocabulary, keys=DEFAULT_KEYS, types=DEFAULT_TYPES,
               length: int = DEFAULT_LENGTH) -> SchemaLayout:
    """The layout over `vocabulary`'s extra ids (refused if they are too few)."""
    layout = SchemaLayout(keys, types, length, vocabulary.vocab_size)
    extra = getattr(vocabulary, "extra_ids", 0)
    if layout.rows > extra:
        raise T5mtlError(f"schema prompts need {layout.rows} placeholder ids "
                         f"({len(types)} types + {len(keys)} keys, {length} each); the "
                         f"vocabulary has {extra} extra ids")
    return layout


def fields_of(info: task_info_lib.TaskInfo) -> tuple[tuple[str, ...], str]:
    """(input fields, target field) of a task, from its TaskInfo.fields."""
    if not info.fields:
        raise T5mtlError(f"task {info.name!r} has no TaskInfo fields: schema prompts are "
                         f"built from them")
    target = next((f for f in TARGET_FIELDS if f in info.fields), None)
    if target is None:
        raise T5mtlError(f"task {info.name!r}: no target field among its fields "
                         f"{info.fields} (expected one of {TARGET_FIELDS})")
    return tuple(f for f in info.fields if f != target), target


def render_ids(texts: Sequence[list[int]], fields: Sequence[str], category: str,
               layout: SchemaLayout, task: str = "") -> list[int]:
    """The input ids of one example from its fields' token ids (plain Python:
    the reference the tf preprocessor is tested against)."""
    ids = list(layout.type_ids(category, task))
    for field, text in zip(fields, texts):
        ids += layout.key_ids(field, task) + list(text)
    return ids


def render(dataset: tf.data.Dataset, output_features, fields: tuple[str, ...], target: str,
           category: str, layout: SchemaLayout, task: str = "") -> tf.data.Dataset:
    """seqio preprocessor: raw fields -> "inputs" (ids: placeholders and
    field tokens) and "targets" (the target field's tokens), with their
    "_pretokenized" texts (placeholder runs shown as "<name>")."""
    vocab = output_features["inputs"].vocabulary
    type_run = tf.constant(layout.type_ids(category, task), tf.int32)
    key_runs = [tf.constant(layout.key_ids(f, task), tf.int32) for f in fields]
    marks = [f"<{category}>"] + [f"<{f}>" for f in fields]

    def fn(ex):
        parts, shown = [type_run], [marks[0]]
        for field, run, mark in zip(fields, key_runs, marks[1:]):
            text = tf.strings.as_string(ex[field]) if ex[field].dtype != tf.string else ex[field]
            parts += [run, tf.cast(vocab.encode_tf(text), tf.int32)]
            shown += [mark, text]
        out = {k: v for k, v in ex.items()}
        out["inputs"] = tf.concat(parts, axis=0)
        out["inputs_pretokenized"] = tf.strings.join(shown, " ")
        target_text = (tf.strings.as_string(ex[target]) if ex[target].dtype != tf.string
                       else ex[target])
        out["targets_pretokenized"] = target_text
        out["targets"] = tf.cast(vocab.encode_tf(target_text), tf.int32)
        return out
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def schema_task_name(base: str) -> str:
    return PREFIX + base


def register_schema_task(base: str, layout: SchemaLayout | None = None,
                         name: str | None = None, vocabulary: seqio.Vocabulary | None = None,
                         overwrite: bool = False) -> seqio.Task:
    """Registers "schema_<base>": `base`'s source and raw-field preprocessors,
    then `render`; its metrics, postprocessor and TaskInfo are the base's."""
    from t5mtl.data.instruction_tasks import raw_preprocessors
    if base not in seqio.TaskRegistry.names():
        raise T5mtlError(f"unknown task {base!r}: no schema variant")
    base_task = seqio.TaskRegistry.get(base)
    try:
        info = task_info_lib.get_task_info(base)
    except T5mtlError as e:
        raise T5mtlError(f"task {base!r} has no TaskInfo: schema prompts need its fields") from e
    vocab = vocabulary or base_task.output_features["inputs"].vocabulary
    layout = layout or layout_for(vocab)
    fields, target = fields_of(info)
    for f in fields:                      # fail at registration, naming the field
        layout.key_ids(f, base)
    layout.type_ids(info.category, base)
    name = name or schema_task_name(base)
    preprocess = functools.partial(render, fields=fields, target=target,
                                   category=info.category, layout=layout, task=base)
    schema_info = dataclasses.replace(
        info, name=name, base_task=base, variant="schema",
        description=f"schema prompt ({info.category}: {', '.join(fields)}): "
                    f"{info.description or info.instruction}")
    files.claim_task_name(name, overwrite)
    # files.register_task would tokenize "inputs" again: render tokenizes.
    task = seqio.TaskRegistry.add(
        name, source=base_task.source,
        preprocessors=[*raw_preprocessors(base_task), preprocess,
                       seqio.preprocessors.append_eos_after_trim],
        output_features=files.output_features(vocab), metric_fns=list(base_task.metric_fns),
        postprocess_fn=base_task.postprocess_fn)
    task_info_lib.register_task_info(schema_info, overwrite=overwrite)
    return task


def train_tasks(heldout: Sequence[str] = HELDOUT_TASKS) -> list[str]:
    """The schema tasks of schema_mtl: every base task with a train split,
    less the held-out ones."""
    return [schema_task_name(t) for t in base_tasks()
            if t not in heldout and "train" in seqio.TaskRegistry.get(t).splits]


def register(vocabulary: seqio.Vocabulary | None = None, overwrite: bool = False) -> None:
    """Registers every schema task and the schema_mtl mixture (idempotent).

    Not called at import: the schema tasks exist once a run asks for them
    (`register_schema_mtl` in gin), so task listings stay as they were."""
    for base in base_tasks():
        if overwrite or schema_task_name(base) not in seqio.TaskRegistry.names():
            register_schema_task(base, vocabulary=vocabulary, overwrite=overwrite)
    if overwrite:
        seqio.MixtureRegistry.remove(MIXTURE)
    if MIXTURE not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(MIXTURE, train_tasks(), default_rate=1.0)


def unregister() -> None:
    """Removes every schema task and the mixture (no error if absent)."""
    seqio.MixtureRegistry.remove(MIXTURE)
    for base in base_tasks():
        seqio.TaskRegistry.remove(schema_task_name(base))
        task_info_lib.remove_task_info(schema_task_name(base))


@gin.configurable
def register_schema_mtl() -> str:
    """gin: `DataConfig.mixture_or_task_name = @register_schema_mtl()`
    registers the schema tasks (with the run's vocabulary) and returns the
    mixture's name."""
    register()
    return MIXTURE
