"""The few-shot protocol, in the manner of CLUES (Mukherjee et al., 2021).

For each task and each K in a list, sample K training examples with each of
several seeds, finetune a model on each sample, evaluate on the task's full
validation split, and report mean ± standard deviation over the seeds.

A K-shot sample is an ordinary seqio Task: the base task's source and
preprocessors behind a filter that keeps the sampled example indices of the
(unshuffled) train split, so formatting, tokenization, postprocessing and
metrics are exactly the base task's.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from t5mtl import paths
from t5mtl.errors import T5mtlError


def sample_indices(num_examples: int, k: int, seed: int) -> np.ndarray:
    """K distinct example indices of the train split, determined by the seed."""
    if k > num_examples:
        raise T5mtlError(f"k={k} is larger than the train split ({num_examples} examples)")
    return np.sort(np.random.default_rng(seed).choice(num_examples, size=k, replace=False))


def _raw_examples(task: seqio.Task, split: str) -> list[dict]:
    return list(task.source.get_dataset(split=split, shuffle=False).as_numpy_iterator())


def register_kshot_task(base_name: str, k: int, seed: int, split: str = "train") -> str:
    """Registers `<base>_k<K>_s<seed>`: K sampled train examples of `base`.

    The sampled raw examples are fixed in memory (indices into the unshuffled
    split), then go through the base task's own preprocessors.
    """
    base = seqio.get_mixture_or_task(base_name)
    if not isinstance(base, seqio.Task):
        raise T5mtlError(f"{base_name!r} is a mixture; the few-shot protocol takes tasks")
    if split not in base.splits:
        raise T5mtlError(f"{base_name!r} has no {split!r} split to sample from "
                         f"(it has {list(base.splits)})")
    raw = _raw_examples(base, split)
    picks = [raw[i] for i in sample_indices(len(raw), k, seed)]
    columns = {key: [ex[key] for ex in picks] for key in picks[0]}

    def dataset_fn(split, shuffle_files, seed=None):
        del split, shuffle_files, seed
        return tf.data.Dataset.from_tensor_slices(columns)

    name = f"{base_name}_k{k}_s{seed}"
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(dataset_fn, splits=["train"]),
        output_features=base.output_features, preprocessors=list(base.preprocessors),
        postprocess_fn=base.postprocessor, metric_objs=list(base.metric_objs))
    return name


@gin.configurable
@dataclasses.dataclass(frozen=True)
class FewShotConfig:
    tasks: Sequence[str] = ("superglue_cb", "superglue_rte")
    ks: Sequence[int] = (8, 32)
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    num_steps: int = 100
    batch_size: int = 8
    task_feature_lengths: dict = dataclasses.field(
        default_factory=lambda: {"inputs": 256, "targets": 8})
    eval_num_examples: int | None = None     # None: the full validation split


def summarize_runs(runs: Sequence[dict]) -> dict:
    """{task: {K: {metric: (mean, std, n)}}} over the seeds of each (task, K).

    std is the sample standard deviation (ddof=1), as CLUES and most papers
    report it; NaN for a single seed.
    """
    grouped: dict = {}
    for run in runs:
        per = grouped.setdefault(run["task"], {}).setdefault(run["k"], {})
        for metric, value in run["metrics"].items():
            per.setdefault(metric, []).append(value)
    return {task: {k: {m: (float(np.mean(v)), _sample_std(v), len(v)) for m, v in ms.items()}
                   for k, ms in by_k.items()} for task, by_k in grouped.items()}


def _sample_std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def format_summary(summary: dict) -> str:
    """One row per (task, K): mean ± sample std over seeds for every metric
    ("-" for the std of a single seed)."""
    metrics = sorted({m for by_k in summary.values() for ms in by_k.values() for m in ms})
    head = f"{'task':<16} {'K':>4}  " + "  ".join(f"{m:>22}" for m in metrics)
    lines = [head]
    for task in sorted(summary):
        for k in sorted(summary[task]):
            cells = []
            for m in metrics:
                if m in summary[task][k]:
                    mean, std, n = summary[task][k][m]
                    spread = f"{std:5.1f}" if n > 1 else "    -"
                    cells.append(f"{mean:8.1f} ± {spread} (n={n})".rjust(22))
                else:
                    cells.append(" " * 22)
            lines.append(f"{task:<16} {k:>4}  " + "  ".join(cells))
    return "\n".join(lines)


def run_protocol(model_dir: str, config: FewShotConfig | None = None, **train_kwargs) -> dict:
    """Finetunes and evaluates every (task, K, seed); writes fewshot_results.json."""
    from t5mtl.infer.rank_classification import rank_classify
    from t5mtl.data.task_info import get_task_info
    from t5mtl.data.data_config import DataConfig
    from t5mtl.infer.evaluation import TaskEvaluator
    from t5mtl.train.model_dir import load_params
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    config = config or FewShotConfig()
    checkpoints = dataclasses.replace(train_kwargs.pop("checkpoints", None) or CheckpointConfig(),
                                      period=10 ** 9, keep=1)
    runs = []
    for task in config.tasks:
        labels = get_task_info(task).label_names
        for k in config.ks:
            for seed in config.seeds:
                name = register_kshot_task(task, k, seed)
                run_dir = paths.join(model_dir, name)
                train(run_dir, data=DataConfig(
                    mixture_or_task_name=name, task_feature_lengths=config.task_feature_lengths,
                    batch_size=config.batch_size, seed=seed),
                    num_steps=config.num_steps, evaluation=EvalConfig(),
                    checkpoints=checkpoints,
                    show_progress=False, **train_kwargs)
                model, params = load_params(run_dir)
                metrics = TaskEvaluator(task, config.task_feature_lengths, "validation",
                                        config.eval_num_examples).evaluate(model, params)
                metrics = dict(metrics[task])
                if labels:
                    metrics["rank_accuracy"] = rank_classify(
                        model, params, task, labels, "validation",
                        config.eval_num_examples,
                        config.task_feature_lengths["inputs"])["accuracy"]
                runs.append({"task": task, "k": k, "seed": seed, "metrics": metrics})
                print(f"{name}: " + ", ".join(f"{m}={v:.1f}" for m, v in metrics.items()))
    summary = summarize_runs(runs)
    paths.write_text(paths.join(model_dir, "fewshot_results.json"),
                     json.dumps({"runs": runs, "summary": summary}, indent=2))
    return summary


@gin.configurable(denylist=["model_dir"])
def run_few_shot(model_dir: str, config: FewShotConfig = gin.REQUIRED,
                 model=None, optimizer=None, checkpoints=None, model_config=None) -> dict:
    """The gin entry point of `t5mtl fewshot` (see gin/runs/fewshot_eval.gin).
    `model` is the model object (`model_config`, a T5Config, is the older
    spelling)."""
    paths.makedirs(model_dir)
    return run_protocol(model_dir, config, model=model, model_config=model_config,
                        optimizer=optimizer, checkpoints=checkpoints)
