"""PMR's machine-reading tasks, registered on demand (gin or Python):

  pmr_squad   SQuAD v1.1 as MRC: <data_dir>/squad_v1.1/dev-v1.1.json split by
              article (the train file is not in ../shared/data): 80% of the
              articles train, the rest is "validation"; one window per question,
              training windows whose answer the window cut off are dropped
  pmr_wae     Wiki-Anchor-Extraction-style pretraining from <data_dir>/raw_text_en
              (data/wae_data.py: anchors, queries, positives, negatives), 10% of
              the anchors held out as "validation"

Both use the shipped WordPiece vocabulary (wordpiece_en) and windows of
`length` tokens ([CLS] query [SEP] context [SEP], queries cut to 48 tokens).
In gin:

    DataConfig.mixture_or_task_name = @register_pmr_squad()
    DataConfig.task_feature_lengths = {'inputs': 256}
"""
from __future__ import annotations

import functools
import os

import gin

from t5mtl.data import mrc_features, pmr_data, wae_data
from t5mtl.data.data_dir import data_path
from t5mtl.data.vocab import get_vocabulary

SQUAD_TASK, WAE_TASK = "pmr_squad", "pmr_wae"
MAX_QUERY_LENGTH = 48


def layout(length: int = 256) -> pmr_data.MrcLayout:
    vocab = get_vocabulary("wordpiece_en")
    return pmr_data.MrcLayout(vocab, vocab.cls_id, vocab.sep_id, max_length=length,
                              max_query_length=MAX_QUERY_LENGTH)


def windows_of(examples, mrc_layout: pmr_data.MrcLayout, answered_only: bool = False) -> list:
    """Every example's windows (only those with a gold span or a positive
    [CLS] label when `answered_only`)."""
    out = []
    for ex in examples:
        for w in pmr_data.encode_mrc(ex, mrc_layout):
            if not answered_only or w.spans or w.cls_label:
                out.append(w)
    return out


def squad_split(seed: int = 0, eval_fraction: float = 0.2):
    """(train, validation) MrcExamples of SQuAD dev, split by article."""
    examples = pmr_data.read_squad_mrc(data_path("squad_v1.1", "dev-v1.1.json"))
    return pmr_data.split_by_group(examples, eval_fraction, seed)


def wae_split(seed: int = 0, positives_per_anchor: int = 10, eval_fraction: float = 0.1):
    """(train, validation) WAE-style MrcExamples of raw_text_en, split by anchor."""
    root = data_path("raw_text_en")
    paths = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files
                   if f.endswith(".txt"))
    docs = wae_data.read_text_documents(paths)
    examples = wae_data.wae_examples(
        docs, wae_data.WaeConfig(positives_per_anchor=positives_per_anchor, seed=seed))
    return pmr_data.split_by_group(examples, eval_fraction, seed)


@gin.configurable
def register_pmr_squad(length: int = 256, seed: int = 0) -> str:
    """Registers pmr_squad (again, if it exists) and returns its name; the
    windows are made when a split is first read."""
    mrc_layout = layout(length)
    split = functools.lru_cache(None)(lambda: squad_split(seed))
    mrc_features.register_mrc_task(SQUAD_TASK, {
        "train": lambda: windows_of(split()[0], mrc_layout, answered_only=True),
        "validation": lambda: windows_of(split()[1], mrc_layout)}, mrc_layout.vocab)
    return SQUAD_TASK


@gin.configurable
def register_pmr_wae(length: int = 256, seed: int = 0, positives_per_anchor: int = 10) -> str:
    """Registers pmr_wae (again, if it exists) and returns its name; the
    windows are made when a split is first read."""
    mrc_layout = layout(length)
    split = functools.lru_cache(None)(lambda: wae_split(seed, positives_per_anchor))
    mrc_features.register_mrc_task(WAE_TASK, {
        "train": lambda: windows_of(split()[0], mrc_layout),
        "validation": lambda: windows_of(split()[1], mrc_layout)}, mrc_layout.vocab)
    return WAE_TASK
