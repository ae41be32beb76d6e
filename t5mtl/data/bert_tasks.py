"""BERT tasks: masked-LM pretraining over raw_text_en with the wordpiece_en vocabulary.

    bert_mlm_raw_text_en   raw_text_en (t5mtl.data.pretraining_tasks' train
                           and validation books), each book tokenized whole,
                           cut into chunks of length - 2 ids, then
                           [CLS] chunk [SEP] and BERT's 15% / 80-10-10 masking
                           (t5mtl/data/bert_objective.py)

Features (all int32, no EOS): "inputs" (masked ids), "targets" (original ids
at selected positions, 0 elsewhere: the loss weight is targets > 0) and
"token_types" (all 0 here). Lengths e.g. {"inputs": 128, "targets": 128,
"token_types": 128} (`MLM_LENGTHS`); every chunk but a book's last fills them.

Registered on demand, not at import (`register()`, gin:
`DataConfig.mixture_or_task_name = @register_bert_mlm()`), so importing the
registry is unchanged and the vocabulary file is read only when asked for.
"""
from __future__ import annotations

import functools

import gin
import seqio

from t5mtl.data import bert_objective, task_info
from t5mtl.data.pretraining_tasks import raw_text_en_source
from t5mtl.data.vocab import get_vocabulary

MLM_TASK = "bert_mlm_raw_text_en"
MLM_LENGTHS = {"inputs": 128, "targets": 128, bert_objective.TOKEN_TYPES: 128}


def bert_output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    """The features of a BERT masked-LM task: ids without EOS, and token types."""
    return {
        "inputs": seqio.Feature(vocabulary, add_eos=False),
        "targets": seqio.Feature(vocabulary, add_eos=False),
        bert_objective.TOKEN_TYPES: seqio.Feature(
            seqio.PassThroughVocabulary(2), add_eos=False),
    }


def register(vocabulary: seqio.Vocabulary | None = None, overwrite: bool = False,
             data_dir: str | None = None) -> None:
    """Registers bert_mlm_raw_text_en (a no-op if it exists, unless `overwrite`).

    Args:
      vocabulary: a WordPiece vocabulary (default: get_vocabulary("wordpiece_en")).
      data_dir: where raw_text_en lives (default: the process-wide data_dir,
        resolved when data is read).
    """
    if MLM_TASK in seqio.TaskRegistry.names():
        if not overwrite:
            return
        seqio.TaskRegistry.remove(MLM_TASK)
        task_info.remove_task_info(MLM_TASK)
    vocab = vocabulary or get_vocabulary("wordpiece_en")
    preprocessors = [
        functools.partial(seqio.preprocessors.rekey, key_map={"inputs": "text"}),
        seqio.preprocessors.tokenize,
        bert_objective.bert_chunks,
        bert_objective.bert_inputs,
        bert_objective.bert_mask,
    ]
    seqio.TaskRegistry.add(
        MLM_TASK, source=raw_text_en_source(data_dir), preprocessors=preprocessors,
        output_features=bert_output_features(vocab), shuffle_buffer_size=10_000,
        metric_fns=[])
    task_info.register_task_info(task_info.TaskInfo(
        name=MLM_TASK, category="pretraining", schema="text_to_text", fields=("text",),
        splits=("train", "validation"), suite="pretraining", source="raw_text_en",
        license="public domain (see raw_text_en/PROVENANCE.md)",
        citation="Devlin et al. 2019, NAACL",
        description="BERT masked LM (15% selected; 80% [MASK], 10% random, 10% kept) "
                    "over raw_text_en (13 books), wordpiece_en vocabulary"), overwrite=True)


def unregister() -> None:
    """Removes the BERT tasks (no error if absent)."""
    seqio.TaskRegistry.remove(MLM_TASK)
    task_info.remove_task_info(MLM_TASK)


@gin.configurable
def register_bert_mlm() -> str:
    """Registers bert_mlm_raw_text_en and returns its name, for a run's task in gin."""
    register()
    return MLM_TASK
