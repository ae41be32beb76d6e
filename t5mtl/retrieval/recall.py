"""Retrieval evaluation: recall@k, the share of questions whose gold passage
id is among the top k retrieved ids (DPR's "top-k retrieval accuracy").

    ranked = retrieve(questions, embed, index, k=20)   # [q][<=20] ids, best first
    recall_at_k(gold_ids, ranked)                       # {1: .., 5: .., 20: ..}

`embed`: texts -> float32 [n, d], e.g.
functools.partial(t5mtl.retrieval.embed.embed_texts, model, params,
vocabulary=vocab); `index`: a t5mtl.retrieval.index.PassageIndex built with
the same encoder.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from t5mtl.errors import T5mtlError

RECALL_KS = (1, 5, 20)


def recall_at_k(gold_ids: Sequence[str], ranked_ids: Sequence[Sequence[str]],
                ks: Sequence[int] = RECALL_KS) -> dict[int, float]:
    """{k: share of questions i with gold_ids[i] in ranked_ids[i][:k]}; a
    list shorter than k counts what it has."""
    if len(gold_ids) != len(ranked_ids):
        raise T5mtlError(f"got {len(gold_ids)} gold ids but {len(ranked_ids)} ranked lists")
    if not gold_ids:
        raise T5mtlError("recall_at_k got no questions")
    for k in ks:
        if k < 1:
            raise T5mtlError(f"k must be at least 1, got {k}")
    ranks = [list(r).index(g) if g in r else None for g, r in zip(gold_ids, ranked_ids)]
    return {k: sum(r is not None and r < k for r in ranks) / len(ranks) for k in ks}


def retrieve(questions: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray],
             index, k: int = max(RECALL_KS)) -> list[list[str]]:
    """Each question's top-k passage ids from `index`, best first (fewer
    when the index holds fewer passages)."""
    if k < 1:
        raise T5mtlError(f"k must be at least 1, got {k}")
    if not questions:
        raise T5mtlError("retrieve got no questions")
    vectors = np.asarray(embed(list(questions)), np.float32)
    if vectors.shape[0] != len(questions):
        raise T5mtlError(f"embed returned {vectors.shape[0]} vectors for "
                         f"{len(questions)} questions")
    _, ids = index.search(vectors, k)
    return ids
