"""A new user's path end to end: WiC-, COPA- and MRPC-shaped tasks from their
standard files, registered by a module of the user's (--module_import), listed,
shown, trained a few steps and evaluated generatively and with --rank; the
evaluation reads the run's config.gin (which imports the module) in a fresh
process, and its numbers are checked against the Python API."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from t5mtl import cli
from tests import user_task_fixtures as fx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ["e2e_wic", "e2e_copa", "e2e_mrpc"]
LABELS = {"e2e_wic": ("different", "same"), "e2e_copa": ("choice1", "choice2"),
          "e2e_mrpc": ("not_equivalent", "equivalent")}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The user's files and module; afterwards the CLI's data directory and
    the e2e_ tasks it registered are gone (they would join ExMix and the
    other tests' mixtures in this process)."""
    import seqio

    from t5mtl.data import data_dir, task_info
    directory = str(tmp_path_factory.mktemp("user_e2e"))
    rows = fx.write_files(directory)
    fx.write_module(directory, "my_e2e_tasks", prefix="e2e")
    yield directory, rows
    data_dir.set_data_dir(None)
    for name in list(seqio.TaskRegistry.names()):
        if name.startswith("e2e_"):
            seqio.TaskRegistry.remove(name)
            task_info.remove_task_info(name)
    sys.modules.pop("my_e2e_tasks", None)


def _targets(rows, task):
    kind = task.split("_", 1)[1]
    val = rows[kind]["validation"]
    if kind == "wic":
        return ["same" if r["label"] else "different" for r in val]
    if kind == "copa":
        return [f"choice{r['label'] + 1}" for r in val]
    return ["equivalent" if r[0] else "not_equivalent" for r in val]


def _inputs(rows, task):
    kind = task.split("_", 1)[1]
    val = rows[kind]["validation"]
    if kind == "wic":
        return [f"wic word: {r['word']} sentence1: {r['sentence1']} sentence2: {r['sentence2']}"
                for r in val]
    if kind == "copa":
        return [f"copa premise: {r['premise']} what was the {r['question']}? "
                f"choice1: {r['choice1']} choice2: {r['choice2']}" for r in val]
    return [f"mrpc sentence1: {r[3]} sentence2: {r[4]}" for r in val]


@pytest.mark.slow
def test_user_tasks_list_show_train_and_evaluate(workdir, monkeypatch, capsys):
    directory, rows = workdir
    monkeypatch.chdir(directory)                 # the user's module lives here
    module = ["--module_import", "my_e2e_tasks"]
    assert cli.main(["tasks", "list", *module, "--suite", "user"]) == 0
    out = capsys.readouterr().out
    for name, category in zip(TASKS, ("word_sense", "reasoning", "paraphrase")):
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert category in line and "classification" in line
    assert cli.main(["tasks", "show", "e2e_mrpc", *module, "--data_dir", directory,
                     "--n", "1", "--split", "validation", "--inputs_length", "256"]) == 0
    out = capsys.readouterr().out
    first = rows["mrpc"]["validation"][0]
    assert f"sentence1: {first[3]!r}" in out and "label: 'equivalent'" in out
    assert "0 of 10 inputs longer than 256 tokens" in out

    run = os.path.join(directory, "run")
    args = ["train", *module, "--gin_file=gin/runs/quickstart.gin", f"--model_dir={run}",
            f"--data_dir={directory}", "--gin.get_config.name='t5_tiny'",
            f"--gin.DataConfig.mixture_or_task_name={TASKS}",
            "--gin.DataConfig.task_feature_lengths={'inputs': 256, 'targets': 16}",
            "--gin.DataConfig.batch_size=8", "--gin.EvalConfig.tasks=[]",
            "--gin.EvalConfig.num_examples=None", "--gin.train.num_steps=4",
            "--gin.train.log_period=2", "--gin.train.show_progress=False",
            "--gin.CheckpointConfig.period=4", "--gin.CheckpointConfig.async_save=False"]
    assert cli.main(args) == 0
    capsys.readouterr()
    config = open(os.path.join(run, "config.gin")).read()
    assert "import my_e2e_tasks" in config

    # A fresh process that never heard of the module: the run's config.gin
    # imports it and gives the lengths and num_examples (no --gin_file).
    env = dict(os.environ, PYTHONPATH=ROOT)
    tasks = [arg for t in TASKS for arg in ("--task", t)]
    proc = subprocess.run([sys.executable, "-m", "t5mtl.cli", "eval", f"--model_dir={run}",
                           f"--data_dir={directory}", "--rank", *tasks], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    result = next(m for m in reversed(metrics) if m["split"] == "eval")

    import t5mtl
    m = t5mtl.load(run)
    # One scoring call for every (input, label) pair and one generate call
    # for every input of the three tasks (one compile each).
    pairs = [(task, i, label) for task in TASKS for i, _ in enumerate(_inputs(rows, task))
             for label in LABELS[task]]
    texts = {task: _inputs(rows, task) for task in TASKS}
    scores = m.score([texts[t][i] for t, i, _ in pairs], [label for _, _, label in pairs])
    generated = m.generate([x for t in TASKS for x in texts[t]], max_new_tokens=16)
    for task in TASKS:
        targets, labels = _targets(rows, task), LABELS[task]
        own = np.array([s for (t, _, _), s in zip(pairs, scores) if t == task])
        ranked = [labels[k] for k in own.reshape(len(targets), len(labels)).argmax(axis=1)]
        want = 100.0 * np.mean([p == t for p, t in zip(ranked, targets)])
        assert result[f"{task}/rank_accuracy"] == pytest.approx(want, abs=1e-6), task
        start = sum(len(texts[t]) for t in TASKS[:TASKS.index(task)])
        decoded = generated[start:start + len(targets)]
        want = 100.0 * np.mean([g == t for g, t in zip(decoded, targets)])
        assert result[f"{task}/accuracy"] == pytest.approx(want, abs=1e-6), task
    # MRPC: binary F1 reported; chance is the majority class of its dev set.
    assert "e2e_mrpc/f1" in result
    mrpc_row = next(line.split() for line in proc.stdout.splitlines()
                    if line.startswith("e2e_mrpc ") and " accuracy " in line
                    and "rank" not in line)
    assert mrpc_row[-1] == f"{100 * np.mean(fx.MRPC_DEV_LABELS):.1f}" == "70.0"
