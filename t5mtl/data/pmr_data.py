"""MRC-format data for PMR (Xu et al. 2023): query-context examples, their
token layout and span labels, SQuAD v1.1 as MRC, classification as extraction.

Layout (as PMR's, read from DAMO-NLP-SG/PMR's data code):

    [CLS] query [SEP] context [SEP]      token types 0 ... 0 | 1 ... 1

Span labels are a [L, L] 0/1 matrix: (i, j) = 1 for each gold answer from
token i to token j (inclusive; several may be 1), and (0, 0), the [CLS]
span, carries query-context relevance where the task has one (Wiki Anchor
Extraction: the context mentions the anchor; classification: this query is
the gold label's description). SQuAD v1.1 leaves (0, 0) out of the loss, as
PMR's QA finetuning does (every question has an answer).

Answers are character spans of the context. The context is cut into pieces
(runs of word characters, and each other non-space character alone, much as
BERT's basic tokenizer does) and each piece is encoded on its own, so every
token knows the characters it came from: an answer becomes the tokens of the
pieces it overlaps (an answer boundary inside a piece widens to the piece),
and a predicted token span maps back to the context substring from its first
token's piece to its last one's. With a WordPiece vocabulary this is the
same tokenization as encoding the whole context.

The vocabulary is any object with `encode(str) -> list[int]` that adds no
special tokens (a seqio vocabulary, a WordPiece wrapper); [CLS] and [SEP] ids
are given separately (`MrcLayout`).

Long contexts: the query is cut to max_query_length tokens; the context
fills the rest of max_length. With doc_stride None only the first window is
kept (truncation); with doc_stride s, windows start every s context tokens
until one reaches the end (PMR's QA finetuning). In each window an answer
counts only if all of its tokens are inside: answers cut off, partly or
wholly, are dropped from that window's labels (PMR's pretraining data keeps
a partly cut answer with its end clipped, which labels a span that is not the
answer). A relevant example whose answers were all cut from a window is not
relevant in that window ((0, 0) = 0), as in PMR's pretraining data.

SQuAD v1.1 is read here from the official json (t5mtl.data.squad reads the
same file for T5's text format, without answer offsets, and imports
TensorFlow); EM/F1 are t5mtl.data.metrics.squad (the official normalization)
over `MrcExample.references`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import re
from typing import Any, Optional, Sequence

import numpy as np

from t5mtl.errors import T5mtlError

_PIECE = re.compile(r"\w+|[^\w\s]")


@dataclasses.dataclass(frozen=True)
class MrcExample:
    """A query, a context, and the answers' character spans [start, end) in
    the context. relevant: the [CLS] label (None: no relevance label).
    references: gold answer texts for EM/F1 (default: the spans' texts).
    group: what a train/eval split keeps together (article title, anchor)."""
    query: str
    context: str
    answers: tuple[tuple[int, int], ...] = ()
    relevant: Optional[bool] = None
    id: str = ""
    group: str = ""
    references: tuple[str, ...] = ()

    def __post_init__(self):
        for span in self.answers:
            if len(span) != 2 or not 0 <= span[0] < span[1] <= len(self.context):
                raise T5mtlError(f"example {self.id!r}: answer span {tuple(span)} is not a "
                                 f"non-empty span of its {len(self.context)}-character context")
        if not self.references and self.answers:
            object.__setattr__(self, "references",
                               tuple(self.context[s:e] for s, e in self.answers))


@dataclasses.dataclass(frozen=True)
class MrcLayout:
    """How examples become token ids: the vocabulary (encode(str) ->
    list[int], no special tokens), [CLS]/[SEP] ids, lengths and windows."""
    vocab: Any
    cls_id: int
    sep_id: int
    max_length: int = 384
    max_query_length: int = 64
    doc_stride: Optional[int] = None

    def __post_init__(self):
        if self.max_query_length < 0:
            raise T5mtlError(f"max_query_length must be >= 0, got {self.max_query_length}")
        if self.doc_stride is not None and self.doc_stride < 1:
            raise T5mtlError(f"doc_stride must be >= 1 or None, got {self.doc_stride}")


@dataclasses.dataclass(frozen=True)
class MrcFeatures:
    """One window of one example: token ids, token types, the gold spans
    (inclusive token positions in input_ids), the [CLS] label (None: not in
    the loss), and each context token's character span in `context`."""
    example_id: str
    window: int
    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    context_start: int
    token_chars: tuple[tuple[int, int], ...]
    spans: tuple[tuple[int, int], ...]
    cls_label: Optional[bool]
    context: str

    @property
    def context_end(self) -> int:
        """One past the last context token."""
        return self.context_start + len(self.token_chars)

    def span_chars(self, start: int, end: int) -> tuple[int, int]:
        """Token span (start, end), inclusive -> character span of the context."""
        if not self.context_start <= start <= end < self.context_end:
            raise T5mtlError(f"span ({start}, {end}) is not within the context tokens "
                             f"[{self.context_start}, {self.context_end}) of {self.example_id!r}")
        return (self.token_chars[start - self.context_start][0],
                self.token_chars[end - self.context_start][1])

    def span_text(self, start: int, end: int) -> str:
        """Token span (start, end), inclusive -> the context substring."""
        s, e = self.span_chars(start, end)
        return self.context[s:e]


def _encode(vocab: Any, text: str) -> list[int]:
    return [int(t) for t in vocab.encode(text)]


def tokenize_context(context: str, vocab: Any) -> tuple[list[int], list[tuple[int, int]]]:
    """Encodes the context piece by piece: (token ids, each token's piece's
    character span). A piece the vocabulary encodes to nothing has no token."""
    ids, chars = [], []
    for m in _PIECE.finditer(context):
        for t in _encode(vocab, m.group()):
            ids.append(t)
            chars.append(m.span())
    return ids, chars


def _window_starts(n_tokens: int, room: int, stride: Optional[int]) -> list[int]:
    starts = [0]
    if stride is not None:
        while starts[-1] + room < n_tokens:
            starts.append(starts[-1] + stride)
    return starts


def encode_mrc(example: MrcExample, layout: MrcLayout) -> list[MrcFeatures]:
    """An example -> its windows' features (one unless layout.doc_stride)."""
    query = _encode(layout.vocab, example.query)[:layout.max_query_length]
    ids, chars = tokenize_context(example.context, layout.vocab)
    room = layout.max_length - len(query) - 3
    if room < 1:
        raise T5mtlError(f"max_length={layout.max_length} leaves no room for a context after "
                         f"a {len(query)}-token query and 3 special tokens")
    answer_tokens = set()
    for s, e in example.answers:
        inside = [k for k, (a, b) in enumerate(chars) if a < e and b > s]
        if inside:
            answer_tokens.add((inside[0], inside[-1]))
    head = [layout.cls_id] + query + [layout.sep_id]
    out = []
    for w, ws in enumerate(_window_starts(len(ids), room, layout.doc_stride)):
        we = min(ws + room, len(ids))
        shift = len(head) - ws
        spans = tuple((a + shift, b + shift) for a, b in sorted(answer_tokens)
                      if a >= ws and b < we)
        cls_label = None
        if example.relevant is not None:
            cls_label = bool(example.relevant and (spans or not example.answers))
        out.append(MrcFeatures(
            example_id=example.id, window=w,
            input_ids=tuple(head + ids[ws:we] + [layout.sep_id]),
            token_type_ids=tuple([0] * len(head) + [1] * (we - ws + 1)),
            context_start=len(head), token_chars=tuple(chars[ws:we]), spans=spans,
            cls_label=cls_label, context=example.context))
    return out


def mrc_arrays(features: Sequence[MrcFeatures], length: int,
               pad_id: int = 0) -> dict[str, np.ndarray]:
    """Features -> a padded numpy batch of `length` tokens:

      input_ids [b, L] int32, token_type_ids [b, L] int32,
      attention_mask [b, L] int32 (1 on tokens), context_mask [b, L] bool,
      span_labels [b, L, L] int8 (gold spans and the [CLS] label at (0, 0)),
      cls_span [b] bool (whether (0, 0) is in the loss: cls_label not None).
    """
    b = len(features)
    arrays = {"input_ids": np.full((b, length), pad_id, np.int32),
              "token_type_ids": np.zeros((b, length), np.int32),
              "attention_mask": np.zeros((b, length), np.int32),
              "context_mask": np.zeros((b, length), bool),
              "span_labels": np.zeros((b, length, length), np.int8),
              "cls_span": np.zeros((b,), bool)}
    for r, f in enumerate(features):
        n = len(f.input_ids)
        if n > length:
            raise T5mtlError(f"example {f.example_id!r} window {f.window} has {n} tokens, "
                             f"more than length={length}")
        arrays["input_ids"][r, :n] = f.input_ids
        arrays["token_type_ids"][r, :n] = f.token_type_ids
        arrays["attention_mask"][r, :n] = 1
        arrays["context_mask"][r, f.context_start:f.context_end] = True
        for s, e in f.spans:
            arrays["span_labels"][r, s, e] = 1
        if f.cls_label is not None:
            arrays["cls_span"][r] = True
            arrays["span_labels"][r, 0, 0] = int(f.cls_label)
    return arrays


def best_answer(windows: Sequence[MrcFeatures], starts: Sequence[int], ends: Sequence[int],
                scores: Sequence[float]) -> str:
    """The answer text of one example: the best-scoring span over its
    windows (each window's best span, e.g. span_extractor.best_spans with
    k=1 and no [CLS] span). "" when no window has a finite score."""
    best, text = -math.inf, ""
    for f, s, e, score in zip(windows, starts, ends, scores):
        if math.isfinite(float(score)) and float(score) > best:
            best, text = float(score), f.span_text(int(s), int(e))
    return text


# ------------------------------------------------------------------ SQuAD

def read_squad_mrc(path: str) -> list[MrcExample]:
    """SQuAD v1.1 json -> one MrcExample per question: the question as query,
    the paragraph as context, every distinct gold answer span as an answer,
    all gold texts as references, the article title as group."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise T5mtlError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise T5mtlError(f"{path}: expected a SQuAD file with a top-level 'data' list")
    out = []
    for article in doc["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                spans = set()
                for a in qa["answers"]:
                    s, text = int(a["answer_start"]), a["text"]
                    if context[s:s + len(text)] != text:
                        raise T5mtlError(f"{path}: question {qa['id']}: answer {text!r} is not "
                                         f"at character {s} of its context")
                    spans.add((s, s + len(text)))
                out.append(MrcExample(
                    query=qa["question"], context=context, answers=tuple(sorted(spans)),
                    id=qa["id"], group=article.get("title", ""),
                    references=tuple(a["text"] for a in qa["answers"])))
    return out


def split_by_group(examples: Sequence[MrcExample], eval_fraction: float,
                   seed: int = 0) -> tuple[list[MrcExample], list[MrcExample]]:
    """(train, eval): whole groups (articles, anchors) go to eval, a
    seeded-random ceil(eval_fraction * groups) of them; order is kept."""
    if not 0 < eval_fraction < 1:
        raise T5mtlError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    groups = sorted({ex.group for ex in examples})
    random.Random(seed).shuffle(groups)
    held = set(groups[:math.ceil(eval_fraction * len(groups))])
    return ([ex for ex in examples if ex.group not in held],
            [ex for ex in examples if ex.group in held])


# ------------------------------------------------ classification as MRC

def classification_examples(text: str, label_descriptions: Sequence[str],
                            gold: Optional[int] = None,
                            example_id: str = "") -> list[MrcExample]:
    """One example per label: its description as the query, the input text as
    the context, no answer spans; relevant on the gold label's (None
    without a gold label). PMR trains the (0, 0) logit alone here (its
    valid spans: valid_span_mask(zeros, cls_span=True))."""
    if gold is not None and not 0 <= gold < len(label_descriptions):
        raise T5mtlError(f"gold label {gold} is not one of the "
                         f"{len(label_descriptions)} label descriptions")
    return [MrcExample(query=d, context=text, relevant=None if gold is None else i == gold,
                       id=f"{example_id}/{i}", group=example_id)
            for i, d in enumerate(label_descriptions)]


@dataclasses.dataclass(frozen=True)
class ClassPrediction:
    """The predicted label, its [CLS] logit, and the rationale: the best
    context span under that label's query, as text and character span."""
    label: int
    score: float
    rationale: str
    rationale_chars: tuple[int, int]


def classify_with_rationale(windows: Sequence[MrcFeatures], span_logits: np.ndarray,
                            max_span_length: Optional[int] = None) -> ClassPrediction:
    """windows: one feature per label (label order); span_logits [labels, L, L].
    The label with the highest (0, 0) logit wins (PMR); its best valid
    context span (i <= j, j - i < max_span_length) is the rationale."""
    logits = np.asarray(span_logits, np.float64)
    if logits.ndim != 3 or logits.shape[0] != len(windows):
        raise T5mtlError(f"span_logits of shape {logits.shape} do not match "
                         f"{len(windows)} label windows")
    label = int(np.argmax(logits[:, 0, 0]))
    f = windows[label]
    cs, ce = f.context_start, f.context_end
    if ce == cs:
        return ClassPrediction(label, float(logits[label, 0, 0]), "", (0, 0))
    block = logits[label, cs:ce, cs:ce]
    offset = np.arange(ce - cs)[None, :] - np.arange(ce - cs)[:, None]
    ok = offset >= 0
    if max_span_length is not None:
        ok &= offset < max_span_length
    i, j = np.unravel_index(np.argmax(np.where(ok, block, -np.inf)), block.shape)
    chars = f.span_chars(cs + int(i), cs + int(j))
    return ClassPrediction(label, float(logits[label, 0, 0]), f.context[chars[0]:chars[1]],
                           chars)
