"""BERT variants of text-to-text tasks: "<task>_bert" reads the same source
and renders the same T5-format text ("sst2 sentence: ..."), then tokenizes it
with a WordPiece vocabulary as [CLS] text [SEP] (data.bert_objective.bert_inputs);
the target is the label name's WordPiece ids, without EOS (BERT has none).
Metrics, postprocessor and TaskInfo are the base task's, so the
multi-head classifier (models.multi_head) trains and evaluates them as it
does the T5 tasks; a BERT classifier reads the [CLS] position through BERT's
pooler.

Sentence pairs stay one segment in T5's text format (token types all 0),
not BERT's [CLS] a [SEP] b [SEP]: the variants reuse every task's own
template.

In gin (registered on demand):

    DataConfig.mixture_or_task_name = @register_bert_variants()
    register_bert_variants.tasks = ['glue_sst2', 'glue_cola']
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import gin
import seqio

from t5mtl.data import bert_objective, files, task_info as task_info_lib
from t5mtl.errors import T5mtlError

SUFFIX = "_bert"


def _drop_token_types(dataset):
    """Keeps "inputs" and "targets" (one segment: its token types are all 0)."""
    return dataset.map(lambda ex: {k: v for k, v in ex.items()
                                   if k != bert_objective.TOKEN_TYPES})


def register_bert_variant(base: str, vocabulary: seqio.Vocabulary | None = None,
                          overwrite: bool = True) -> str:
    """Registers "<base>_bert" and returns its name."""
    from t5mtl.data.vocab import get_vocabulary
    if base not in seqio.TaskRegistry.names():
        raise T5mtlError(f"unknown task {base!r}: no BERT variant")
    base_task = seqio.TaskRegistry.get(base)
    vocab = vocabulary or get_vocabulary("wordpiece_en")
    text_steps = []
    for p in base_task.preprocessors:
        if getattr(p, "func", p) in (seqio.preprocessors.tokenize,
                                     seqio.preprocessors.append_eos_after_trim):
            break
        text_steps.append(p)
    name = base + SUFFIX
    files.claim_task_name(name, overwrite)
    seqio.TaskRegistry.add(
        name, source=base_task.source,
        preprocessors=[*text_steps, seqio.preprocessors.tokenize,
                       functools.partial(bert_objective.bert_inputs, text_keys=("inputs",)),
                       _drop_token_types],
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
                           vocabulary: seqio.Vocabulary | None = None) -> list[str]:
    """Registers "<task>_bert" for each task; returns their names."""
    return [register_bert_variant(t, vocabulary) for t in tasks]
