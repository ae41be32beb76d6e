"""Rank classification (as FLAN and T0 evaluate classification tasks).

Each option of the label set is scored by the model's log-likelihood of that
option as the target, and the best-scoring option is the prediction. This
cannot produce an answer outside the label set, unlike free decoding, so it
measures what the model prefers rather than whether it formats answers well.
The scoring runs over a device mesh like evaluation (t5mtl.infer.sharded).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import seqio
from jax.sharding import Mesh

from t5mtl.data.batches import scoring_batch
from t5mtl.errors import T5mtlError
from t5mtl.infer import sharded
from t5mtl.models.base import BaseModel


def option_log_likelihoods(model: BaseModel, params, input_ids: Sequence[Sequence[int]],
                           option_ids: Sequence[Sequence[int]], batch_size: int = 64,
                           mesh: Mesh | None = None, rules=None,
                           task_name: str | None = None) -> np.ndarray:
    """log p(option | input) for every (input, option) pair: [n_inputs, n_options].

    Batches of pairs run over `mesh` (None: this process's first device),
    split over its data x fsdp axes; `params` may be numpy or already on it.
    With `task_name`, each batch carries `model.task_features` of that task
    (e.g. the multi-head classifier's task ids).
    """
    extra = model.task_features(task_name, batch_size) if task_name else {}
    mesh = sharded.default_mesh() if mesh is None else mesh
    params = sharded.place_params(model, params, mesh, rules)
    scorer = sharded.score_function(model, mesh, rules)
    enc_len = max(len(r) for r in input_ids)
    tgt_len = max(len(r) for r in option_ids)
    pairs = [(i, j) for i in range(len(input_ids)) for j in range(len(option_ids))]
    scores = np.zeros((len(input_ids), len(option_ids)), np.float32)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        n = len(chunk)
        chunk = chunk + [chunk[0]] * (batch_size - n)      # fixed shape: one compile
        batch = scoring_batch([input_ids[i] for i, _ in chunk], [option_ids[j] for _, j in chunk],
                              enc_len, tgt_len)
        out = scorer(params, {**batch, **extra})[:n]
        for (i, j), s in zip(chunk[:n], out):
            scores[i, j] = s
    return scores


def rank_classify(model: BaseModel, params, task_name: str, options: Sequence[str],
                  split: str = "validation", num_examples: int | None = None,
                  input_length: int = 512, mesh: Mesh | None = None, rules=None) -> dict:
    """Rank-classification accuracy of `task_name` over `options` (its label set),
    scored over `mesh` (see option_log_likelihoods).

    Returns {"accuracy": %, "predictions": [...], "targets": [...], "scores": array}.
    """
    task = seqio.get_mixture_or_task(task_name)
    if not isinstance(task, seqio.Task):
        raise T5mtlError(f"rank classification needs a task, {task_name!r} is a mixture")
    vocab = task.output_features["targets"].vocabulary
    ds = task.get_dataset({"inputs": input_length, "targets": 64}, split=split, shuffle=False,
                          num_epochs=1)
    if num_examples:
        ds = ds.take(num_examples)
    inputs, targets = [], []
    for ex in ds.as_numpy_iterator():
        inputs.append([int(t) for t in ex["inputs"]])
        targets.append(vocab.decode([int(t) for t in ex["targets"]]))
    if not inputs:
        raise T5mtlError(f"{task_name!r} has no examples in split {split!r}")
    unknown = sorted(set(targets) - set(options))
    if unknown:
        raise T5mtlError(f"{task_name!r}: targets {unknown[:5]} are not among the options "
                         f"{list(options)}")
    option_ids = [list(vocab.encode(o)) + [1] for o in options]       # + EOS
    scores = option_log_likelihoods(model, params, inputs, option_ids, mesh=mesh, rules=rules,
                                    task_name=task_name)
    predictions = [options[k] for k in scores.argmax(axis=1)]
    accuracy = 100.0 * float(np.mean([p == t for p, t in zip(predictions, targets)]))
    return {"accuracy": accuracy, "predictions": predictions, "targets": targets,
            "scores": scores}
