"""Evaluation through seqio.Evaluator: predictions by decoding, scores by log-likelihood.

seqio owns the eval datasets, postprocessors and metric functions; this
module only supplies the two model callbacks it asks for and batches the
cached dataset with a fixed batch size (the last batch padded), so each
callback compiles once. Both callbacks run over a device mesh (see
t5mtl.infer.sharded): each batch splits over the ("data", "fsdp") axes and
the params shard by their logical axis names; every process gets the whole
result, as seqio's Evaluator runs on every process over the whole eval set.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np
import seqio
from jax.sharding import Mesh

from t5mtl.data.encoder_features import EncDecTokenTypesConverter
from t5mtl.errors import T5mtlError
from t5mtl.infer import sharded
from t5mtl.models.base import BaseModel
from t5mtl.models.encoder_decoder import DecodeConfig

log = logging.getLogger(__name__)


class _QuietSeqioEvaluator(logging.Filter):
    """Drops two seqio.Evaluator warnings that are expected here: fixed
    sequence lengths (chosen so each callback compiles once) and no seqio
    loggers (t5mtl writes the metrics itself)."""

    def filter(self, record):
        msg = str(record.msg)
        return not (msg.startswith("Given sequence lengths are longer than necessary")
                    or msg.startswith("'logger_cls' is empty"))


logging.getLogger("absl").addFilter(_QuietSeqioEvaluator())

MODEL_FEATURES = ("encoder_input_tokens", "encoder_token_types", "decoder_input_tokens",
                  "decoder_target_tokens", "decoder_loss_weights")
ENCODER_FEATURES = ("encoder_input_tokens", "encoder_token_types")    # what decoding reads


def _batches(ds, batch_size: int):
    """(indices, feature dict) per batch, the last one padded with copies of row 0."""
    for index, features in ds.batch(batch_size).as_numpy_iterator():
        n = len(index)
        feats = {k: v for k, v in features.items() if k in MODEL_FEATURES}
        if n < batch_size:
            feats = {k: np.concatenate([v, np.repeat(v[:1], batch_size - n, axis=0)])
                     for k, v in feats.items()}
        yield index, n, feats


class TaskEvaluator:
    """Evaluates one seqio task or mixture's split with its registered metrics.

    `mesh` (a partitioning.create_mesh mesh; None: this process's first
    device alone) is where decoding and scoring run; `rules` are the logical
    axis rules (None: partitioning.logical_axis_rules(), gin's). A
    `batch_size` that is a multiple of the mesh's data x fsdp size wastes
    no rows.
    """

    def __init__(self, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
                 split: str = "validation", num_examples: int | None = None,
                 batch_size: int = 32, decode: DecodeConfig | None = None,
                 mesh: Mesh | None = None, rules=None):
        try:
            seqio.get_mixture_or_task(mixture_or_task_name)
        except ValueError as e:
            raise T5mtlError(f"unknown eval task or mixture {mixture_or_task_name!r}") from e
        self.name = mixture_or_task_name
        self.batch_size = batch_size
        self.mesh = sharded.default_mesh() if mesh is None else mesh
        self.rules = rules
        self.decode = decode or DecodeConfig(max_decode_length=task_feature_lengths["targets"])
        self.evaluator = seqio.Evaluator(
            mixture_or_task_name, feature_converter=EncDecTokenTypesConverter(pack=False),
            eval_split=split, sequence_length=dict(task_feature_lengths),
            num_examples=num_examples, logger_cls=(), use_memory_cache=True)
        if not self.evaluator.eval_tasks:
            raise T5mtlError(f"{mixture_or_task_name!r} has no task with metrics on split "
                             f"{split!r}")

    def _map(self, ds, fn: Callable, extra: Mapping[str, np.ndarray] | None = None) -> list:
        out = []
        for index, n, feats in _batches(ds, self.batch_size):
            values = np.asarray(fn({**feats, **(extra or {})}))[:n]
            out.extend(zip(index.tolist(), list(values)))
        return out

    def evaluate(self, model: BaseModel, params, step: int | None = None
                 ) -> dict[str, dict[str, float]]:
        """{task: {metric: value}} for every task of the mixture with metrics.

        `params`: numpy (e.g. t5mtl.load's) or jax Arrays already on the
        mesh (the trainer's state.params, used as they are).
        """
        params = sharded.place_params(model, params, self.mesh, self.rules)
        decoder = sharded.decode_function(model, self.decode, self.mesh, self.rules)
        scorer = sharded.score_function(model, self.mesh, self.rules)
        # Which task a cached dataset is: seqio calls predict_fn / score_fn
        # with one task's cached model dataset at a time.
        task_of = {id(ds): name for name, ds in self.evaluator.cached_model_datasets.items()}

        def extra(ds):
            """The model's own features for this task (model.task_features)."""
            return model.task_features(task_of[id(ds)], self.batch_size)

        def predict_fn(ds):
            preds = self._map(ds, lambda f: decoder(
                params, {k: v for k, v in f.items()
                         if k in ENCODER_FEATURES or k not in MODEL_FEATURES}),
                extra(ds))
            # Full-length rows (0 after EOS): seqio stacks them into one array
            # and its vocabulary's decode stops at EOS.
            return [(i, [int(t) for t in row]) for i, row in preds]

        def score_fn(ds):
            return [(i, float(s)) for i, s in self._map(
                ds, lambda f: scorer(params, f), extra(ds))]

        metrics, _ = self.evaluator.evaluate(compute_metrics=True, step=step,
                                             predict_fn=predict_fn, score_fn=score_fn)
        result = metrics.result()
        self._record_majority()
        return {task: {k: _scalar(v) for k, v in m.items()} for task, m in result.items()}


    def _record_majority(self) -> None:
        """MAJORITY_SHARE of each classification task, from its eval targets."""
        from t5mtl.data.task_info import get_task_info, has_task_info
        for task, ds in self.evaluator.cached_task_datasets.items():
            if not (has_task_info(task) and get_task_info(task).label_names):
                continue
            targets = [ex["targets_pretokenized"] for ex in ds.as_numpy_iterator()
                       if "targets_pretokenized" in ex]
            share = majority_share(targets)
            if share is not None:
                MAJORITY_SHARE[task] = share


def _scalar(value) -> float:
    if hasattr(value, "value"):        # clu / seqio metric value wrappers
        value = value.value
    return float(np.asarray(value))


def flatten_metrics(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{task: {metric: v}} -> {"task/metric": v} for the metric writers."""
    return {f"{task}/{name}": v for task, m in results.items() for name, v in m.items()}


def format_table(results: Mapping[str, Mapping[str, float]],
                 columns: Sequence[str] | None = None) -> str:
    """A plain-text table: one row per task, one column per metric."""
    columns = list(columns or sorted({k for m in results.values() for k in m}))
    width = max([len("task")] + [len(t) for t in results])
    lines = ["  ".join(["task".ljust(width)] + [c.rjust(10) for c in columns])]
    for task in sorted(results):
        cells = [f"{results[task][c]:10.2f}" if c in results[task] else " " * 10
                 for c in columns]
        lines.append("  ".join([task.ljust(width)] + cells))
    return "\n".join(lines)


# task -> the share (%) of its most frequent target in the split last
# evaluated here (classification tasks only): the accuracy of always
# answering the majority class, score_table's "chance".
MAJORITY_SHARE: dict[str, float] = {}


def majority_share(targets: Sequence) -> float | None:
    """100 x the frequency of the most common target; None when targets are
    not single class ids or strings (spans, reference lists, scores)."""
    if not len(targets) or not all(isinstance(t, (int, np.integer, str, bytes))
                                   and not isinstance(t, bool) for t in targets):
        return None
    counts: dict = {}
    for t in targets:
        counts[t] = counts.get(t, 0) + 1
    return 100.0 * max(counts.values()) / len(targets)


def score_table(results: dict, chance: Mapping[str, float] | None = None) -> str:
    """Per task: category, metric, score and chance; then the mean of each metric.

    Chance is the majority-class accuracy of the evaluated split (`chance`,
    else what TaskEvaluator recorded in MAJORITY_SHARE), shown in the
    accuracy rows of classification tasks; 1/len(labels) when the split's
    targets were not seen. Means are per metric, over the tasks reporting it.
    """
    from t5mtl.data.task_info import get_task_info, has_task_info
    chance = dict(MAJORITY_SHARE, **(chance or {}))
    rows = []
    for task in sorted(results):
        info = get_task_info(task) if has_task_info(task) else None
        labels = info.label_names if info is not None else ()
        for metric, value in sorted(results[task].items()):
            text = "-"
            if labels and metric.endswith("accuracy"):
                text = f"{chance.get(task, 100.0 / len(labels)):.1f}"
            rows.append((task, info.category if info else "-", metric, f"{value:.1f}", text))
    by_metric: dict[str, list[float]] = {}
    for m in results.values():
        for metric, value in m.items():
            by_metric.setdefault(metric, []).append(value)
    for metric, values in sorted(by_metric.items()):
        rows.append((f"mean ({len(values)} tasks)", "", metric,
                     f"{sum(values) / len(values):.1f}", ""))
    head = ("task", "category", "metric", "score", "chance")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(head)] + [fmt(r) for r in rows])
