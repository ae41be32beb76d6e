"""Three-level generalization evaluation, as OPT-IML reports it.

A model instruction-tuned on the seen categories is evaluated on
  (i)   tasks of fully held-out categories,
  (ii)  held-out tasks of seen categories,
  (iii) held-out instances (the validation split) of the training tasks.
Each level is a registered seqio mixture (t5mtl.data.mixtures); its score is
the mean over its tasks of each task's first metric (accuracy or exact
match), reported next to the per-task scores.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from t5mtl.infer.evaluation import TaskEvaluator
from t5mtl.models.base import BaseModel

LEVELS = ("heldout_categories", "heldout_tasks", "heldout_instances")
LEVEL_LABELS = {
    "heldout_categories": "(i) held-out categories",
    "heldout_tasks": "(ii) held-out tasks of seen categories",
    "heldout_instances": "(iii) held-out instances of seen tasks",
}


def synthetic_level_mixtures() -> dict[str, str]:
    """The synthetic suite's level mixtures for the split gin binds
    (synthetic_generalization.held_out_categories, ..., as a run's config.gin
    records them; the default split when nothing is bound), registered again
    so they hold that split's tasks."""
    from t5mtl.data import mixtures
    return {level: mixtures.synthetic_generalization(level=level)
            for level in mixtures.SYNTH_EVAL_MIXTURES}


def evaluate_levels(model: BaseModel, params, level_mixtures: Mapping[str, str],
                    task_feature_lengths: Mapping[str, int], split: str = "validation",
                    num_examples: int | None = None, batch_size: int = 64,
                    mesh=None) -> dict:
    """{level: {"score": mean, "tasks": {task: score}}} for each level mixture,
    evaluated over `mesh` (None: one device; see TaskEvaluator)."""
    out = {}
    for level, mixture in level_mixtures.items():
        results = TaskEvaluator(mixture, task_feature_lengths, split, num_examples,
                                batch_size, mesh=mesh).evaluate(model, params)
        tasks = {t: next(iter(m.values())) for t, m in sorted(results.items()) if m}
        out[level] = {"score": float(np.mean(list(tasks.values()))), "tasks": tasks,
                      "mixture": mixture}
    return out


def levels_table(results_by_model: Mapping[str, Mapping[str, dict]]) -> str:
    """Rows: the three levels (with their task counts); columns: one per model."""
    models = list(results_by_model)
    rows = []
    for level in LEVELS:
        present = [r for r in results_by_model.values() if level in r]
        if not present:
            continue
        label = f"{LEVEL_LABELS[level]} ({len(present[0][level]['tasks'])} tasks)"
        rows.append((label, [f"{r[level]['score']:.1f}" if level in r else "-"
                             for r in results_by_model.values()]))
    width = max([len("level")] + [len(label) for label, _ in rows])
    col = max([8] + [len(m) for m in models])
    lines = ["level".ljust(width) + "  " + "  ".join(m.rjust(col) for m in models)]
    lines += [label.ljust(width) + "  " + "  ".join(c.rjust(col) for c in cells)
              for label, cells in rows]
    return "\n".join(lines)
