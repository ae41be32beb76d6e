"""Metric functions and postprocessors, as the T5 paper reports them.

Metric functions have seqio's signature `fn(targets, predictions) -> dict`
and report percentages (0-100), like T5. Postprocessors have seqio's
signature `fn(output, example=None, is_target=False)`: classification tasks
map label strings to class ids (an unknown string becomes -1 and counts as
wrong), STS-B maps strings to floats, SQuAD and multi-reference tasks take
their list of references from the example when postprocessing targets.

Simple metrics are written here; BLEU uses sacrebleu and ROUGE rouge-score.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Any, Sequence

import numpy as np


def _as_text(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8")
    if isinstance(x, np.ndarray) and x.shape == ():
        return _as_text(x.item())
    return str(x)


def _check_lengths(targets, predictions):
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    if not len(targets):
        raise ValueError("no examples to score")


# ---------------------------------------------------------------- exact match

def accuracy(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Percentage of predictions equal to their target."""
    _check_lengths(targets, predictions)
    return {"accuracy": 100.0 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}


def exact_match(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Percentage of generated strings equal to their target string."""
    _check_lengths(targets, predictions)
    hits = [_as_text(t) == _as_text(p) for t, p in zip(targets, predictions)]
    return {"exact_match": 100.0 * float(np.mean(hits))}


# --------------------------------------------------------- classification

def matthews_corrcoef(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Matthews correlation (CoLA), multiclass form; 0 when undefined."""
    _check_lengths(targets, predictions)
    labels = sorted(set(targets) | set(predictions))
    index = {label: i for i, label in enumerate(labels)}
    c = np.zeros((len(labels), len(labels)), dtype=np.float64)
    for t, p in zip(targets, predictions):
        c[index[t], index[p]] += 1
    t_sum, p_sum = c.sum(axis=1), c.sum(axis=0)
    n, correct = c.sum(), np.trace(c)
    cov_tp = correct * n - t_sum @ p_sum
    cov_tt = n * n - t_sum @ t_sum
    cov_pp = n * n - p_sum @ p_sum
    if cov_tt == 0 or cov_pp == 0:
        return {"matthews_corrcoef": 0.0}
    return {"matthews_corrcoef": 100.0 * float(cov_tp / np.sqrt(cov_tt * cov_pp))}


def binary_f1(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """F1 of the positive class (id 1), as GLUE reports for MRPC and QQP.

    A prediction that is neither 0 nor 1 (an unparseable answer, -1) counts
    as the wrong class, as T5's f1_score_with_invalid counts it.
    """
    _check_lengths(targets, predictions)
    t = np.asarray(targets, np.int64)
    p = np.asarray(predictions, np.int64)
    p = np.where((p == 0) | (p == 1), p, 1 - t)
    tp = int(np.sum((t == 1) & (p == 1)))
    fp = int(np.sum((t != 1) & (p == 1)))
    fn = int(np.sum((t == 1) & (p != 1)))
    denom = 2 * tp + fp + fn
    return {"f1": 100.0 * 2 * tp / denom if denom else 0.0}


def mean_multiclass_f1(num_classes: int):
    """Returns a metric fn: macro-averaged F1 over class ids 0..num_classes-1.

    A class never predicted and never true scores 0, as in T5 (sklearn's
    fbeta_score with labels=range(num_classes)); ids outside the range (an
    unparseable prediction, -1) only count as misses of their target class.
    """
    def fn(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
        _check_lengths(targets, predictions)
        f1s = []
        for k in range(num_classes):
            tp = sum(1 for t, p in zip(targets, predictions) if t == k and p == k)
            fp = sum(1 for t, p in zip(targets, predictions) if t != k and p == k)
            fn_ = sum(1 for t, p in zip(targets, predictions) if t == k and p != k)
            denom = 2 * tp + fp + fn_
            f1s.append(2 * tp / denom if denom else 0.0)
        return {f"mean_{num_classes}class_f1": 100.0 * float(np.mean(f1s))}
    fn.__name__ = f"mean_{num_classes}class_f1"
    return fn


# ---------------------------------------------------------------- regression

def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    _check_lengths(targets, predictions)
    return {"pearson_corrcoef": 100.0 * _pearson(np.asarray(targets, np.float64),
                                                 np.asarray(predictions, np.float64))}


def spearman_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    _check_lengths(targets, predictions)
    return {"spearman_corrcoef": 100.0 * _pearson(_ranks(np.asarray(targets, np.float64)),
                                                  _ranks(np.asarray(predictions, np.float64)))}


# ---------------------------------------------------------------- SQuAD

def normalize_squad_answer(s: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, squeeze spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _token_f1(target: str, prediction: str) -> float:
    t, p = target.split(), prediction.split()
    common = collections.Counter(t) & collections.Counter(p)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """SQuAD v1.1 exact match and token F1, best over each example's answers."""
    _check_lengths(targets, predictions)
    em, f1 = [], []
    for answers, pred in zip(targets, predictions):
        answers = [normalize_squad_answer(_as_text(a)) for a in answers]
        pred = normalize_squad_answer(_as_text(pred))
        em.append(max(float(a == pred) for a in answers))
        f1.append(max(_token_f1(a, pred) for a in answers))
    return {"em": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1))}


# ---------------------------------------------------------- generation

def bleu(targets: Sequence, predictions: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU with sacrebleu's intl tokenizer, as T5 reports it.

    `targets` holds one reference string per example, or a list of
    references per example (all examples must have the same number).
    """
    import sacrebleu

    _check_lengths(targets, predictions)
    refs = [[_as_text(t)] if isinstance(t, (str, bytes)) else [_as_text(r) for r in t]
            for t in targets]
    if len({len(r) for r in refs}) != 1:
        raise ValueError("bleu: every example needs the same number of references")
    ref_streams = [list(stream) for stream in zip(*refs)]
    score = sacrebleu.corpus_bleu(
        [_as_text(p) for p in predictions], ref_streams, smooth_method="exp",
        smooth_value=0.0, force=False, lowercase=False, tokenize="intl",
        use_effective_order=False)
    return {"bleu": float(score.score)}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _split_sentences(text: str) -> str:
    """One sentence per line, the form rougeLsum expects."""
    return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


def rouge(targets: Sequence, predictions: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/Lsum F-measure (x100) with rouge-score.

    An example's target may be a list of references; it scores against the
    best one (rouge-score's score_multi).
    """
    from rouge_score import rouge_scorer

    _check_lengths(targets, predictions)
    keys = ("rouge1", "rouge2", "rougeLsum")
    scorer = rouge_scorer.RougeScorer(list(keys))
    totals = {k: 0.0 for k in keys}
    for target, pred in zip(targets, predictions):
        refs = [target] if isinstance(target, (str, bytes)) else list(target)
        refs = [_split_sentences(_as_text(r)) for r in refs]
        scores = scorer.score_multi(refs, _split_sentences(_as_text(pred)))
        for k in keys:
            totals[k] += scores[k].fmeasure
    return {k: 100.0 * v / len(targets) for k, v in totals.items()}


# ---------------------------------------------------------- postprocessors

def string_label_to_class_id(output, example=None, is_target=False,
                             label_classes: Sequence[str] = ()) -> int:
    """The index of `output` in `label_classes`, or -1 for anything else."""
    del example, is_target
    text = _as_text(output).strip()
    return list(label_classes).index(text) if text in label_classes else -1


def string_to_float(output, example=None, is_target=False, default: float = -1.0) -> float:
    """Parses a regression prediction ("3.8"); unparseable text gives `default`."""
    del example, is_target
    try:
        return float(_as_text(output).strip())
    except ValueError:
        return default


def references_from_example(output, example=None, is_target=False,
                            key: str = "answers") -> Any:
    """For targets, the list of references in `example[key]`; else the text."""
    if is_target and example is not None and key in example:
        return [_as_text(a) for a in np.asarray(example[key]).reshape(-1)]
    return _as_text(output)


def decode_text(output, example=None, is_target=False) -> str:
    del example, is_target
    return _as_text(output)
