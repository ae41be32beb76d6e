"""Metrics to TensorBoard (CLU writers) and to model_dir/metrics.jsonl.

metrics.jsonl has one JSON object per logged step and split:
{"step": 100, "split": "train", "loss": 2.31, ...}. Only process 0 writes.
"""
from __future__ import annotations

import json
import math
import os
from typing import Mapping

import jax
from clu import metric_writers


class MetricsLogger:
    """Writes scalars for a split to TensorBoard (model_dir/<split>) and JSONL."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self._main = jax.process_index() == 0
        self._writers: dict[str, metric_writers.MetricWriter] = {}
        self._jsonl = open(os.path.join(model_dir, "metrics.jsonl"), "a") if self._main else None

    def _writer(self, split: str) -> metric_writers.MetricWriter:
        if split not in self._writers:
            self._writers[split] = metric_writers.create_default_writer(
                os.path.join(self.model_dir, split), just_logging=not self._main,
                asynchronous=False)
        return self._writers[split]

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in scalars.items()}
        self._writer(split).write_scalars(step, clean)
        if self._jsonl is not None:
            row = {"step": int(step), "split": split}
            row.update({k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()})
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        if self._jsonl is not None:
            self._jsonl.close()
