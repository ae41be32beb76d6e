"""Metrics to TensorBoard (CLU writers) and to model_dir/metrics.jsonl.

metrics.jsonl has one JSON object per logged step and split:
{"step": 100, "split": "train", "loss": 2.31, ...}. Only process 0 writes.
Per-task train metrics are named "task/<task name>/<metric>".

A gs:// model_dir's objects cannot be appended to: the files are written in
a local staging directory and each one changed is uploaded whole after
every write (a log period), as TensorFlow's own GCS writer does at a flush.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from typing import Mapping, Sequence

import jax
import numpy as np
from clu import metric_writers

from t5mtl import paths


def period_scalars(history: Sequence[Mapping[str, np.ndarray]],
                   task_names: Sequence[str] = ()) -> dict[str, float]:
    """One log period's scalars from the train steps' metrics (on the host).

    Scalars: the mean over the period's steps. Per-task vectors ("task/...",
    one entry per task): each task's loss is its steps' losses weighted by
    its target tokens in each step (so steps without the task do not count),
    its accuracy correct / target tokens over the period, and its
    target_tokens the period's sum. Tasks without tokens in the period are
    left out.
    """
    out = {k: float(np.mean([h[k] for h in history]))
           for k in history[0] if not k.startswith("task/")}
    if "task/loss" not in history[0]:
        return out
    tokens = np.stack([np.asarray(h["task/target_tokens"], np.float64) for h in history])
    losses = np.stack([np.asarray(h["task/loss"], np.float64) for h in history])
    correct = np.stack([np.asarray(h["task/correct_tokens"], np.float64) for h in history])
    total = tokens.sum(axis=0)
    for t, name in enumerate(task_names):
        if total[t] > 0:
            out[f"task/{name}/loss"] = float((losses[:, t] * tokens[:, t]).sum() / total[t])
            out[f"task/{name}/accuracy"] = float(correct[:, t].sum() / total[t])
            out[f"task/{name}/target_tokens"] = float(total[t])
    return out


class MetricsLogger:
    """Writes scalars for a split to TensorBoard (model_dir/<split>) and JSONL."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self._main = jax.process_index() == 0
        self._writers: dict[str, metric_writers.MetricWriter] = {}
        # Where the files are written: model_dir, or a local staging directory
        # mirrored to a gs:// model_dir.
        self._staging = None
        if self._main and paths.is_cloud(model_dir):
            self._staging = tempfile.mkdtemp(prefix="t5mtl-metrics-")
        self._local = self._staging or model_dir
        self._jsonl = None
        if self._main:
            local = os.path.join(self._local, "metrics.jsonl")
            remote = paths.join(model_dir, "metrics.jsonl")
            if self._staging and paths.isfile(remote):
                paths.copy_file(remote, local)          # earlier runs' rows, appended to
            self._jsonl = open(local, "a")

    def _writer(self, split: str) -> metric_writers.MetricWriter:
        if split not in self._writers:
            self._writers[split] = metric_writers.create_default_writer(
                os.path.join(self._local, split), just_logging=not self._main,
                asynchronous=False)
        return self._writers[split]

    def _upload(self, split: str) -> None:
        """Copies metrics.jsonl and `split`'s event files to the gs:// model_dir."""
        if not self._staging:
            return
        paths.copy_file(os.path.join(self._local, "metrics.jsonl"),
                        paths.join(self.model_dir, "metrics.jsonl"))
        for name in paths.listdir(os.path.join(self._local, split)):
            paths.copy_file(os.path.join(self._local, split, name),
                            paths.join(self.model_dir, split, name))

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in scalars.items()}
        self._writer(split).write_scalars(step, clean)
        if self._jsonl is not None:
            row = {"step": int(step), "split": split}
            row.update({k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()})
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        if self._staging:
            self._writers[split].flush()
            self._upload(split)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._staging:
            for split in self._writers:
                self._upload(split)
            shutil.rmtree(self._staging, ignore_errors=True)
