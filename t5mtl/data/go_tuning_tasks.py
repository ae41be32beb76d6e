"""Go-tuning's training data: a selection of unlabeled texts as a span-corruption task.

A selection (t5mtl.mtl.go_tuning) is kept as a JSONL file, one chosen text
per line ({"text": ..., plus whatever the writer records: pool index,
source, score}). `register_go_task` makes it a seqio Task that reads the
file when data is built (registering reads nothing) and applies T5's span
corruption (t5mtl.data.span_corruption, the masked-LM objective of T5) to
each text on its own: no concatenation across texts (concat_batch_size=1),
so every example's inputs and targets together hold exactly one selected
text, or one chunk of it when it is longer than the planned chunk.

Single-task Go-tuning trains on one such task; multi-task (the paper's
mgo-T5) on several, one per target task, mixed at equal rates (a list of
task names, which DataConfig turns into an equal-rate mixture).

Registered on demand, not at import; in gin:

    DataConfig.mixture_or_task_name = @register_go_tuning_tasks()
    register_go_tuning_tasks.selection_dir = '/tmp/go/selection'
    register_go_tuning_tasks.targets = ['glue_sst2', 'superglue_rte']

reads <selection_dir>/<target>.jsonl as task "go_<target>" (a `prefix`
other than "go" names another selection, e.g. the random control's).
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterable, Mapping, Sequence

import gin
import seqio

from t5mtl.data.files import Field, FileSource
from t5mtl.data.pretraining_tasks import register_pretraining_task
from t5mtl.data.task_info import TaskInfo
from t5mtl.errors import T5mtlError

_NAME = re.compile(r"^[A-Za-z0-9_.:]+$")


def selection_path(selection_dir: str, target: str) -> str:
    """Where a target task's selection lives: <selection_dir>/<target>.jsonl."""
    return os.path.join(selection_dir, f"{target}.jsonl")


def write_selection(path: str, rows: Iterable[Mapping]) -> int:
    """Writes the selection's rows (each with a non-empty "text") as JSONL,
    atomically; returns how many."""
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise T5mtlError(f"selection row {i} for {path!r} has no text: {row!r}")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        for row in rows:
            f.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)
    return len(rows)


def read_selection(path: str) -> list[dict]:
    """The rows write_selection wrote."""
    if not os.path.exists(path):
        raise T5mtlError(f"selection file {path!r} does not exist")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def register_go_task(name: str, path: str, vocabulary: seqio.Vocabulary | None = None,
                     description: str = "") -> seqio.Task:
    """Task `name` (replacing one of that name): span corruption over the
    "text" of each line of the selection file `path`, split "train"."""
    if not _NAME.match(name):
        raise T5mtlError(f"task name {name!r} may hold only letters, digits, '_', '.', ':'")
    source = FileSource({"train": os.path.abspath(path)}, "jsonl", {"text": Field()})
    info = TaskInfo(
        name=name, category="pretraining", schema="text_to_text", fields=("text",),
        splits=("train",), source=path,
        citation="Xu, Dong, Liu & Li, 2022. Go-tuning: Improving Zero-shot Learning "
                 "Abilities of Smaller Language Models. arXiv:2212.10461.",
        description=description or f"span corruption over the Go-tuning selection {path}")
    return register_pretraining_task(name, source, objective="span_corruption",
                                     vocabulary=vocabulary, info=info, overwrite=True,
                                     concat_batch_size=1)


@gin.configurable
def register_go_tuning_tasks(selection_dir: str = gin.REQUIRED,
                             targets: Sequence[str] = gin.REQUIRED,
                             prefix: str = "go") -> str | list[str]:
    """Registers "<prefix>_<target>" over <selection_dir>/<target>.jsonl for
    each target task; returns the one task name, or the list of them (trained
    as an equal-rate mixture: multi-task Go-tuning)."""
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise T5mtlError("register_go_tuning_tasks.targets is empty: name the target tasks")
    names = []
    for target in targets:
        name = f"{prefix}_{target}"
        register_go_task(name, selection_path(selection_dir, target),
                         description=f"span corruption over the texts selected for {target} "
                                     f"({selection_dir})")
        names.append(name)
    return names[0] if len(names) == 1 else names
