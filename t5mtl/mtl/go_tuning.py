"""Go-tuning (Xu, Dong, Liu & Li 2022): geometry-guided selection of task-aware
unlabeled text, for a masked-LM (T5: span-corruption) update before zero-shot use.

The paper's idea, as its abstract states it: rather than scale the model,
update a small T5 further with masked language modeling on a *small amount
of task-aware* unlabeled text, chosen by the geometry of the model's own
representation space; mgo-T5 does the same over several tasks at once. Only
the abstract could be read here (no full text or code of the paper was
found in the corpora searched), so the rule below is this module's, written
to the abstract's description; what it could not confirm is listed after it.

The selection rule (`select_task_aware`), given embeddings of n unlabeled
task inputs T_1..T_n and of a pool of m unlabeled texts P_1..P_m (rows of
two arrays; `embed_texts` makes them from a t5mtl T5 encoder, mean-pooled
over non-padding tokens):

  1. Every row is scaled to unit length, and distances are cosine distances,
     dist(a, b) = 1 - a.b, computed in float64.
  2. The task's centre c is the mean of the unit task rows, scaled to unit
     length (a mean of length zero is an error).
  3. The task's radius r is the `coverage` quantile (numpy's linear
     interpolation) of the task rows' distances to c: the smallest ball
     around c that holds that share of the task's own inputs (coverage 1.0:
     all of them).
  4. Candidates are the pool texts inside that ball, dist(P_j, c) <= r.
  5. Each candidate is scored by its distance to its nearest task input,
     s_j = min_i dist(P_j, T_i); candidates are ranked by s_j, ties by pool
     index, and the first `budget` are the selection (all of them when
     fewer than `budget` lie inside the ball; the count inside is
     reported).

So a selected text lies in the region the task's inputs occupy (step 4)
and next to an actual input rather than only near the centre (step 5). The
result depends only on the two arrays, `budget` and `coverage`: it is
deterministic. Multi-task (mgo-T5) selects per target task with the same
budget and trains on the selections mixed at equal rates
(`select_for_tasks`; the seqio side is t5mtl.data.go_tuning_tasks).
`select_random` is the control: the same budget drawn uniformly from the pool.

Not confirmed from the paper: the exact geometric criterion (ball, nearest
neighbours or another one), the distance, the pooling, the coverage, how
many texts were selected and from which corpus, whether the task inputs
embedded were raw or prompted, and the masking details of the update (here
T5's span corruption, t5mtl.data.span_corruption).
"""
from __future__ import annotations

import dataclasses
import random
from typing import Mapping, Sequence

import numpy as np

from t5mtl.errors import T5mtlError
# texts -> mean-pooled T5 encoder states, shared with retrieval (re-exported)
from t5mtl.retrieval.embed import (EMBED_LENGTH, embed_texts,  # noqa: F401
                                   encoder_embedding_fn, tokenize)

DEFAULT_COVERAGE = 0.9


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which pool texts a rule chose, best first.

    indices: pool row indices, in rank order.
    scores: each chosen text's score (the task-aware rule: cosine distance to
      its nearest task input; the random control: NaN).
    num_inside: pool texts inside the task's ball (the random control: the
      pool size).
    radius: the ball's radius (the random control: NaN).
    """
    indices: np.ndarray
    scores: np.ndarray
    num_inside: int
    radius: float


def unit_rows(x, name: str = "embeddings") -> np.ndarray:
    """`x` as float64 rows of length 1; a 2-D array of finite numbers without
    zero rows, else T5mtlError."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise T5mtlError(f"{name} must be a non-empty 2-D array [rows, dim], got shape "
                         f"{x.shape}")
    if not np.all(np.isfinite(x)):
        raise T5mtlError(f"{name} hold NaN or Inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise T5mtlError(f"{name} row {int(np.argmin(norms[:, 0]))} is all zeros: it has "
                         f"no direction")
    return x / norms


def cosine_distances(a, b) -> np.ndarray:
    """[len(a), len(b)]: 1 - cos of every pair of rows (float64)."""
    return 1.0 - unit_rows(a, "a") @ unit_rows(b, "b").T


def task_centre(task_embeddings) -> np.ndarray:
    """The unit mean direction of the task's unit rows (step 2)."""
    mean = unit_rows(task_embeddings, "task embeddings").mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm < 1e-12:
        raise T5mtlError("the task embeddings' unit rows average to zero: the task has no "
                         "centre")
    return mean / norm


def select_task_aware(task_embeddings, pool_embeddings, budget: int,
                      coverage: float = DEFAULT_COVERAGE) -> Selection:
    """The geometry-guided selection (the module docstring's steps 1-5)."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise T5mtlError(f"budget must be a positive number of texts, got {budget!r}")
    if not 0.0 < coverage <= 1.0:
        raise T5mtlError(f"coverage must be in (0, 1], got {coverage!r}")
    tasks = unit_rows(task_embeddings, "task embeddings")
    pool = unit_rows(pool_embeddings, "pool embeddings")
    if tasks.shape[1] != pool.shape[1]:
        raise T5mtlError(f"task embeddings have dimension {tasks.shape[1]} but pool "
                         f"embeddings {pool.shape[1]}")
    centre = task_centre(tasks)
    radius = float(np.quantile(1.0 - tasks @ centre, coverage))
    inside = np.flatnonzero(1.0 - pool @ centre <= radius)
    nearest = (1.0 - pool[inside] @ tasks.T).min(axis=1) if len(inside) else np.zeros(0)
    order = np.lexsort((inside, nearest))[:budget]        # by score, then pool index
    return Selection(indices=inside[order], scores=nearest[order], num_inside=len(inside),
                     radius=radius)


def select_random(num_pool: int, budget: int, seed: int = 0) -> Selection:
    """The control: `budget` pool indices drawn uniformly without replacement."""
    if budget < 1 or num_pool < 1:
        raise T5mtlError(f"need a positive budget and pool, got {budget} of {num_pool}")
    chosen = random.Random(seed).sample(range(num_pool), min(budget, num_pool))
    return Selection(indices=np.asarray(chosen, np.int64),
                     scores=np.full(len(chosen), np.nan), num_inside=num_pool,
                     radius=float("nan"))


def select_for_tasks(task_embeddings: Mapping[str, np.ndarray], pool_embeddings,
                     budget: int, coverage: float = DEFAULT_COVERAGE) -> dict[str, Selection]:
    """mgo-T5's selection: each target task's own, with the same budget."""
    if not task_embeddings:
        raise T5mtlError("select_for_tasks needs at least one target task")
    return {task: select_task_aware(emb, pool_embeddings, budget, coverage)
            for task, emb in sorted(task_embeddings.items())}


def task_texts(task_name: str, split: str = "train", limit: int | None = None,
               seed: int = 0, exclude: Sequence[str] = ("label",)) -> list[str]:
    """A registered task's unlabeled inputs: each example's raw text fields
    (TaskInfo.fields without `exclude`) joined by a space, before any template
    or prompt. With `limit`, a seeded uniform sample of that many, in file order."""
    import seqio
    from t5mtl.data.task_info import get_task_info
    task = seqio.get_mixture_or_task(task_name)
    if not isinstance(task, seqio.Task) or not hasattr(task.source, "iter_examples"):
        raise T5mtlError(f"{task_name!r} is not a task whose raw examples can be read "
                         f"(a file or Python source)")
    fields = [f for f in get_task_info(task_name).fields if f not in exclude]
    if not fields:
        raise T5mtlError(f"task {task_name!r} has no text fields besides {list(exclude)}")
    texts = [" ".join(str(ex[f]) for f in fields) for ex in task.source.iter_examples(split)]
    if not texts:
        raise T5mtlError(f"task {task_name!r} has no examples in split {split!r}")
    if limit is not None and limit < len(texts):
        keep = sorted(random.Random(seed).sample(range(len(texts)), limit))
        texts = [texts[i] for i in keep]
    return texts
