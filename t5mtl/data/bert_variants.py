"""BERT variants of text-to-text tasks: "<task>_bert" reads the same source
and renders the same T5-format text ("sst2 sentence: ..."), then tokenizes it
with a WordPiece vocabulary as [CLS] text [SEP] (data.bert_objective.bert_inputs);
the target is the label name's WordPiece ids, without EOS (BERT has none).
Metrics, postprocessor and TaskInfo are the base task's, so the
multi-head classifier (models.multi_head) trains and evaluates them as it
does the T5 tasks; a BERT classifier reads the [CLS] position through BERT's
pooler.

A task whose template names two input fields (a sentence pair: RTE's
hypothesis and premise, STS-B's two sentences) becomes BERT's
[CLS] a [SEP] b [SEP] instead, a and b the raw fields in the order the
template names them, with token types 0 up to the first [SEP] and 1 after,
truncated longest-first as HF's tokenizer does (`pairs=False` keeps the T5
text as one segment). "inputs_pretokenized" reads "a [SEP] b". Every variant
carries "token_types" (all 0 for one segment), so single and pair variants
mix in one mixture.

In gin (registered on demand):

    DataConfig.mixture_or_task_name = @register_bert_variants()
    register_bert_variants.tasks = ['glue_sst2', 'glue_cola', 'superglue_rte']
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import gin
import seqio
import tensorflow as tf

from t5mtl.data import bert_objective, files, task_info as task_info_lib
from t5mtl.errors import T5mtlError

SUFFIX = "_bert"


PAIR_KEYS = ("bert_text_a", "bert_text_b")


def pair_fields(dataset, template: files.Template):
    """seqio preprocessor: the template's two input fields as PAIR_KEYS, its
    target as "targets", and "a [SEP] b" as "inputs" (what
    inputs_pretokenized shows; the ids are bert_inputs')."""
    a, b = template.input_fields()

    def fn(ex):
        return {**ex, PAIR_KEYS[0]: ex[a], PAIR_KEYS[1]: ex[b],
                "inputs": tf.strings.join([ex[a], ex[b]], " [SEP] "),
                "targets": files.render_tf(template.targets, ex)}
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _text_steps(task: seqio.Task, pairs: bool) -> tuple[list, tuple[str, ...]]:
    """(the base's text preprocessors, the text keys bert_inputs reads): its
    template step becomes `pair_fields` when it names two input fields."""
    template = files.task_template(task)
    pair = pairs and template is not None and len(template.input_fields()) == 2
    steps = []
    for p in task.preprocessors:
        func = getattr(p, "func", p)
        if func in (seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim):
            break
        steps.append(functools.partial(pair_fields, template=template)
                     if pair and func is files.apply_template else p)
    return steps, (PAIR_KEYS if pair else ("inputs",))


def register_bert_variant(base: str, vocabulary: seqio.Vocabulary | None = None,
                          overwrite: bool = True, pairs: bool = True) -> str:
    """Registers "<base>_bert" and returns its name (`pairs`: a two-field
    template becomes [CLS] a [SEP] b [SEP], the module docstring)."""
    from t5mtl.data.vocab import get_vocabulary
    if base not in seqio.TaskRegistry.names():
        raise T5mtlError(f"unknown task {base!r}: no BERT variant")
    base_task = seqio.TaskRegistry.get(base)
    vocab = vocabulary or get_vocabulary("wordpiece_en")
    text_steps, text_keys = _text_steps(base_task, pairs)
    name = base + SUFFIX
    files.claim_task_name(name, overwrite)
    seqio.TaskRegistry.add(
        name, source=base_task.source,
        preprocessors=[*text_steps, seqio.preprocessors.tokenize,
                       functools.partial(bert_objective.bert_inputs, text_keys=text_keys)],
        output_features={"inputs": seqio.Feature(vocab, add_eos=False),
                         "targets": seqio.Feature(vocab, add_eos=False)},
        metric_fns=list(base_task.metric_fns), postprocess_fn=base_task.postprocess_fn)
    if task_info_lib.has_task_info(base):
        info = task_info_lib.get_task_info(base)
        task_info_lib.register_task_info(
            dataclasses.replace(info, name=name, base_task=base, variant="bert"),
            overwrite=True)
    return name


@gin.configurable
def register_bert_variants(tasks: Sequence[str] = gin.REQUIRED,
                           vocabulary: seqio.Vocabulary | None = None,
                           pairs: bool = True) -> list[str]:
    """Registers "<task>_bert" for each task; returns their names."""
    return [register_bert_variant(t, vocabulary, pairs=pairs) for t in tasks]
