"""LAVENDER evaluation: every task read off the one masked-LM head.

  QA         "[CLS] question [SEP] [MASK]": the argmax id at the [MASK] over
             the whole vocabulary (`answer_log_probs`, `qa_accuracy`)
  retrieval  "[CLS] caption [SEP] [MASK]" for every (caption, video) pair:
             score = log p(true) - log p(false) at the [MASK]
             (`retrieval_matrix` [captions, videos]); text -> video and
             video -> text recall@k of that matrix, with captions that are the
             same string relevant to every video they describe, ties counted
             against the query, and chance levels (t5mtl.infer.clip_eval)
  captioning iterative masked decoding (`Lavender.decode_captions`); token F1
             (SQuAD's: normalized words, articles dropped, bag-of-words F1,
             averaged) and corpus BLEU (sacrebleu, T5's settings:
             t5mtl.data.metrics)

Baselines: `majority_answers` (the most frequent training answer of each
question, a text-only prior) and a constant caption (the most frequent
training caption) scored like the model's.

Every batch has a fixed shape (the last one padded), so one program is
compiled per function and batch size.
"""
from __future__ import annotations

import collections
import functools
from typing import Sequence

import numpy as np

from t5mtl.data import metrics
from t5mtl.data.batches import pad_ids
from t5mtl.data.lavender_features import MASK, answer_row
from t5mtl.errors import T5mtlError
from t5mtl.infer import clip_eval


def _chunks(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield i, min(i + batch_size, n)


def _pad(array: np.ndarray, batch_size: int) -> np.ndarray:
    if len(array) == batch_size:
        return array
    return np.concatenate([array, np.zeros((batch_size - len(array),) + array.shape[1:],
                                           array.dtype)])


@functools.lru_cache(16)
def _mask_fn(model, ids: tuple[int, ...] | None):
    """The jitted `mask_log_probs` (at `ids` only), one per model and ids."""
    import jax
    if ids is None:
        return jax.jit(model.mask_log_probs)
    pick = np.asarray(ids, np.int32)
    return jax.jit(lambda p, b: model.mask_log_probs(p, b)[:, pick])


def answer_rows(questions: Sequence[Sequence[int]], length: int) -> dict[str, np.ndarray]:
    """The token features of "[CLS] question [SEP] [MASK]" rows (the weight
    and a placeholder target at the [MASK])."""
    rows = [answer_row(q, [MASK], length) for q in questions]
    tokens, targets = pad_ids([r[0] for r in rows], length), pad_ids([r[1] for r in rows],
                                                                         length)
    return {"encoder_input_tokens": tokens, "encoder_target_tokens": targets,
            "encoder_loss_weights": (targets > 0).astype(np.int32)}


def answer_log_probs(model, params, videos, questions: Sequence[Sequence[int]], length: int,
                     batch_size: int = 64, ids: Sequence[int] | None = None) -> np.ndarray:
    """float32 [n, vocab] (or [n, len(ids)]): log p at each row's [MASK];
    row i pairs videos[i] with questions[i]."""
    videos = np.asarray(videos, np.float32)
    if len(videos) != len(questions):
        raise T5mtlError(f"got {len(videos)} videos for {len(questions)} questions")
    rows = answer_rows(questions, length)
    fn = _mask_fn(model, None if ids is None else tuple(int(i) for i in ids))
    out = []
    for lo, hi in _chunks(len(videos), batch_size):
        batch = {k: _pad(v[lo:hi], batch_size) for k, v in rows.items()}
        batch[model.video_feature] = _pad(videos[lo:hi], batch_size)
        out.append(np.asarray(fn(params, batch), np.float32)[:hi - lo])
    return np.concatenate(out)


def qa_accuracy(model, params, videos, questions, answers: Sequence[int], length: int,
                batch_size: int = 64) -> tuple[float, np.ndarray]:
    """(accuracy in %, predicted ids): the argmax over the whole vocabulary."""
    pred = np.argmax(answer_log_probs(model, params, videos, questions, length, batch_size),
                     axis=-1)
    return 100.0 * float(np.mean(pred == np.asarray(answers))), pred


def retrieval_matrix(model, params, videos, captions: Sequence[Sequence[int]], length: int,
                     true_id: int, false_id: int, batch_size: int = 256) -> np.ndarray:
    """float32 [captions, videos]: log p(true) - log p(false) of each pair."""
    videos = np.asarray(videos, np.float32)
    nc, nv = len(captions), len(videos)
    ci, vi = np.divmod(np.arange(nc * nv), nv)
    scores = answer_log_probs(model, params, videos[vi], [captions[c] for c in ci], length,
                              batch_size, ids=(true_id, false_id))
    return (scores[:, 0] - scores[:, 1]).reshape(nc, nv)


def retrieval_recall(scores: np.ndarray, captions: Sequence[str],
                     ks: Sequence[int] = clip_eval.RECALL_KS) -> dict[str, float]:
    """{"t2v_R@k", "v2t_R@k", and their "_chance"} in %, from a
    [captions, videos] matrix where caption i is video i's caption."""
    scores = np.asarray(scores)
    if scores.shape[0] != len(captions) or scores.shape[1] != len(captions):
        raise T5mtlError(f"retrieval_recall: caption i must be video i's; got scores "
                         f"{list(scores.shape)} for {len(captions)} captions")
    relevant = clip_eval.caption_relevance(np.arange(len(captions)), list(captions))  # [v, c]
    out = {}
    for name, s, rel in (("t2v", scores, relevant.T), ("v2t", scores.T, relevant)):
        for k, v in clip_eval.recall_at_k(s, rel, ks).items():
            out[f"{name}_R@{k}"] = 100.0 * v
        for k, v in clip_eval.recall_chance(rel, ks).items():
            out[f"{name}_R@{k}_chance"] = 100.0 * v
    return out


def decode_captions(model, params, videos, length: int, batch_size: int = 64) -> np.ndarray:
    """int32 [n, length - 1]: iteratively decoded caption ids (0 after the end)."""
    import jax
    fn = jax.jit(model.decode_captions, static_argnums=2)
    videos = np.asarray(videos, np.float32)
    out = [np.asarray(fn(params, _pad(videos[lo:hi], batch_size), length))[:hi - lo]
           for lo, hi in _chunks(len(videos), batch_size)]
    return np.concatenate(out)


def caption_scores(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """{"token_f1", "bleu"} in % (module docstring)."""
    if len(references) != len(predictions) or not references:
        raise T5mtlError(f"caption_scores: got {len(predictions)} predictions for "
                         f"{len(references)} references")
    f1 = metrics.squad([[r] for r in references], list(predictions))["f1"]
    return {"token_f1": f1, "bleu": metrics.bleu(list(references), list(predictions))["bleu"]}


def majority_answers(questions: Sequence[str], answers: Sequence[str]) -> dict[str, str]:
    """{question: its most frequent answer} (ties: the first seen)."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for q, a in zip(questions, answers):
        counts[q][a] += 1
    return {q: c.most_common(1)[0][0] for q, c in counts.items()}
