"""Fusion-in-Decoder / Atlas batches for few-shot QA examples
(t5mtl.data.fewshot_qa.QAExample) as fixed-shape numpy arrays, the layout of
t5mtl.models.atlas.AtlasModel (FusionInDecoder reads the first and the
decoder features):

  encoder_input_tokens   [b, k, l]   reader rows
  query_tokens           [b, lq]     the question, for the retriever
  passage_tokens         [b, k, lp]  the rows' passages, for the retriever
  decoder_input_tokens   [b, t]      the targets shifted right, 0 first
  decoder_target_tokens  [b, t]      the first gold answer
  decoder_loss_weights   [b, t]      1 on target tokens, 0 on padding

Reader rows are FiD's text: "question: {q} context: {passage text}", with
`title=True` "question: {q} title: {title} context: {text}" (FiD's
"question:" is glued to the question, "question:What ..."; here a space
follows every prefix). Settings, k rows each:

  "closed_book"  row 0 is "question: {q}" alone, no passage (passage row 0
                 is padding); use k=1
  "gold"         row 0 the gold passage
  "retrieved"    the first k of the example's retrieved ids, best first

Rows past the passages (and ids "", a faiss miss) are padding rows: all
zeros, which the models' masks ignore. Every text is cut as t5mtl's
tokenize (t5mtl.retrieval.embed.tokenize): ids to length - 1, then EOS (1),
then 0s. The retriever sees the question as written and the passage text
(with `title=True`, "{title} {text}"). The answer is not retokenized
with T5's SQuAD punctuation padding: metrics normalize it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from t5mtl.data.fewshot_qa import QAExample
from t5mtl.data.passages import Passage
from t5mtl.errors import T5mtlError
from t5mtl.retrieval.embed import tokenize

SETTINGS = ("closed_book", "gold", "retrieved")
DEFAULT_LENGTHS = {"inputs": 256, "query": 64, "passages": 200, "targets": 32}


def reader_text(question: str, passage: Passage | None, title: bool = False) -> str:
    """FiD's reader row for a question and a passage (None: closed book)."""
    if passage is None:
        return f"question: {question}"
    head = f"question: {question} title: {passage.title}" if title else f"question: {question}"
    return f"{head} context: {passage.text}"


def passage_text(passage: Passage, title: bool = False) -> str:
    """The passage as the retriever embeds it."""
    return f"{passage.title} {passage.text}" if title else passage.text


def row_passages(example: QAExample, setting: str, k: int,
                 passages_by_id: Mapping[str, Passage],
                 retrieved_ids: Sequence[str] | None = None) -> list[Passage | None]:
    """The passages of the example's rows (up to k; None: the closed-book
    row); fewer than k means padding rows."""
    if k < 1:
        raise T5mtlError(f"k must be at least 1, got {k}")
    if setting not in SETTINGS:
        raise T5mtlError(f"unknown setting {setting!r}; known: {', '.join(SETTINGS)}")
    if setting == "closed_book":
        return [None]
    if setting == "gold":
        ids = [example.passage_id]
    else:
        if retrieved_ids is None:
            raise T5mtlError(f"setting 'retrieved' needs retrieved ids for question "
                             f"{example.id!r}")
        ids = [i for i in retrieved_ids[:k] if i != ""]
    for i in ids:
        if i not in passages_by_id:
            raise T5mtlError(f"unknown passage id {i!r} (question {example.id!r})")
    return [passages_by_id[i] for i in ids]


def example_texts(example: QAExample, setting: str, k: int,
                  passages_by_id: Mapping[str, Passage],
                  retrieved_ids: Sequence[str] | None = None, title: bool = False) -> dict:
    """{"reader": [rows], "query": str, "passages": [texts, "" for the
    closed-book row], "target": the first answer}; up to k rows."""
    rows = row_passages(example, setting, k, passages_by_id, retrieved_ids)
    return {"reader": [reader_text(example.question, p, title) for p in rows],
            "query": example.question,
            "passages": ["" if p is None else passage_text(p, title) for p in rows],
            "target": example.answers[0] if example.answers else ""}


def _rows(texts: Sequence[str], vocabulary, k: int, length: int,
          skip_empty: bool = False) -> np.ndarray:
    out = np.zeros((k, length), np.int32)
    if texts:
        tokens = tokenize(list(texts), vocabulary, length)
        for i, text in enumerate(texts):
            if not (skip_empty and text == ""):
                out[i] = tokens[i]
    return out


def shift_right(targets: np.ndarray) -> np.ndarray:
    """Unpacked decoder inputs: each row's targets one step right, 0 first."""
    out = np.zeros_like(targets)
    out[..., 1:] = targets[..., :-1]
    return out


def fid_batch(examples: Sequence[QAExample], vocabulary, passages_by_id: Mapping[str, Passage],
              setting: str, k: int, retrieved: Sequence[Sequence[str]] | None = None,
              lengths: Mapping[str, int] | None = None,
              title: bool = False) -> dict[str, np.ndarray]:
    """The batch of the module docstring for `examples` (b = len(examples));
    `retrieved[i]`: example i's ranked passage ids (setting "retrieved");
    `lengths`: {"inputs": l, "query": lq, "passages": lp, "targets": t}."""
    if not examples:
        raise T5mtlError("fid_batch got no examples")
    if k < 1:
        raise T5mtlError(f"k must be at least 1, got {k}")
    lengths = {**DEFAULT_LENGTHS, **(lengths or {})}
    for name, n in lengths.items():
        if name not in DEFAULT_LENGTHS or n < 2:
            raise T5mtlError(f"length {name!r} = {n}: known lengths are "
                             f"{', '.join(DEFAULT_LENGTHS)}, each at least 2")
    if retrieved is not None and len(retrieved) != len(examples):
        raise T5mtlError(f"got {len(examples)} examples but {len(retrieved)} retrieved lists")
    b = len(examples)
    enc = np.zeros((b, k, lengths["inputs"]), np.int32)
    psg = np.zeros((b, k, lengths["passages"]), np.int32)
    targets = []
    for i, ex in enumerate(examples):
        texts = example_texts(ex, setting, k, passages_by_id,
                              None if retrieved is None else retrieved[i], title)
        enc[i] = _rows(texts["reader"], vocabulary, k, lengths["inputs"])
        psg[i] = _rows(texts["passages"], vocabulary, k, lengths["passages"], skip_empty=True)
        targets.append(texts["target"])
    query = tokenize([ex.question for ex in examples], vocabulary, lengths["query"])
    tgt = tokenize(targets, vocabulary, lengths["targets"])
    return {"encoder_input_tokens": enc, "query_tokens": query, "passage_tokens": psg,
            "decoder_input_tokens": shift_right(tgt), "decoder_target_tokens": tgt,
            "decoder_loss_weights": (tgt > 0).astype(np.int32)}
