"""Adapting one frozen base: the PEFT methods side by side on tasks it never saw.

For each task (default: a held-out synthetic classification task and two
real GLUE tasks from ../shared/data), trains from the same frozen base, with
the same data, steps and seeds:
  - prompt tuning, one row per init (random_uniform, sampled_vocab, class_labels);
  - LoRA (r=8, alpha=16, query and value);
  - full finetuning;
scores each by rank classification over the task's labels on its
validation split, and adds
  - no adaptation (the base itself);
  - an ensemble of 5 class-label prompts (seeds 0-4) in one batched pass,
    next to the mean of its members;
  - chance (the majority class of the evaluated examples).
Rows are mean ± sample std over the seeds; a seed sets the adapter's init
and the data order (train.seed and DataConfig.seed).

  python -m bench.peft_compare --base /tmp/peft/base --out /tmp/peft/compare \
      --data_dir ../shared/data

The base is a t5mtl model_dir; without one at --base it is trained there
first with gin/runs/peft_base.gin (about ten minutes on a 2-core CPU).
Finished runs are reused, so an interrupted comparison resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from bench.common import ROOT

TASKS = ("synth_sign", "glue_sst2", "glue_cola")
INITS = ("random_uniform", "sampled_vocab", "class_labels")
ENSEMBLE_SIZE = 5
INPUT_LENGTH = 128


def feature_lengths(task: str) -> dict:
    """Inputs 128; targets exactly the longest label plus its EOS, so no label
    is cut in training (rank classification scores every label whole)."""
    import seqio
    from t5mtl.data.task_info import get_task_info
    vocab = seqio.get_mixture_or_task(task).output_features["targets"].vocabulary
    longest = max(len(vocab.encode(label)) for label in get_task_info(task).label_names)
    return {"inputs": INPUT_LENGTH, "targets": longest + 1}
# Per method: (learning rate, trainable patterns); Adafactor for all, as T5.
# 0.3 for prompts is Lester et al.'s; LoRA and full finetuning use the base's.
METHODS = {
    **{f"prompt_{init}": (0.3, ["encoder_input/.*"]) for init in INITS},
    "lora": (1e-2, ["lora/.*"]),
    "full": (1e-2, None),
}


def build_model(method: str, base_model):
    """The model `method` trains: the base's architecture with its seam module."""
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.peft import LoRA, PromptTuning
    if method.startswith("prompt_"):
        return EncoderDecoderModel(base_model.config, encoder_input=PromptTuning(
            length=20, init=method[len("prompt_"):]))
    if method == "lora":
        return EncoderDecoderModel(base_model.config, weight_adapter=LoRA(rank=8, alpha=16))
    return base_model


def train_one(out: str, base: str, task: str, method: str, seed: int, steps: int,
              batch_size: int) -> str:
    from t5mtl.data.data_config import DataConfig
    from t5mtl.train import model_dir as model_dir_lib
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    run = os.path.join(out, task, method, str(seed))
    lr, trainable = METHODS[method]
    base_model = model_dir_lib.read_model_json(base).model
    train(run, model=build_model(method, base_model),
          data=DataConfig(mixture_or_task_name=task, task_feature_lengths=feature_lengths(task),
                          batch_size=batch_size, pack=False, seed=seed),
          num_steps=steps, optimizer=create_optimizer("adafactor", learning_rate=lr),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False,
                                       init_from=base,
                                       save_trainable_only=trainable is not None),
          evaluation=EvalConfig(), trainable_patterns=trainable, seed=seed, log_period=100,
          show_progress=False)
    return run


def rank_accuracy(model, params, task: str, num_examples: int) -> dict:
    from t5mtl.data.task_info import get_task_info
    from t5mtl.infer.evaluation import majority_share
    from t5mtl.infer.rank_classification import rank_classify
    import numpy as np
    from scipy.special import logsumexp
    options = list(get_task_info(task).label_names)
    result = rank_classify(model, params, task, options,
                           num_examples=num_examples, input_length=INPUT_LENGTH)
    # Option log-loss: -log of the true label's probability among the options (the
    # option scores softmax-normalized). An ensemble averages its members' option
    # scores, so by convexity of logsumexp its log-loss is at most their mean.
    scores = np.asarray(result["scores"], np.float64)
    true = scores[np.arange(len(scores)), [options.index(t) for t in result["targets"]]]
    log_loss = float(np.mean(logsumexp(scores, axis=1) - true))
    return {"accuracy": result["accuracy"], "chance": majority_share(result["targets"]),
            "log_loss": log_loss}


def compare_task(task: str, args) -> dict:
    """{row: [score per seed]} for one task (cached in out/task/scores.json)."""
    import t5mtl
    from t5mtl.peft.ensemble import load_ensemble
    path = os.path.join(args.out, task, "scores.json")
    scores = json.load(open(path)) if os.path.exists(path) else {}

    def record(row, value):
        scores.setdefault(row, []).append(value)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(scores, f, indent=1)
        os.replace(path + ".tmp", path)

    if "none" not in scores:
        base = t5mtl.load(args.base)
        result = rank_accuracy(base.model, base.params, task, args.num_examples)
        record("chance", result["chance"])
        record("none", result["accuracy"])
    for method in METHODS:
        for seed in range(len(scores.get(method, [])), args.seeds):
            run = train_one(args.out, args.base, task, method, seed, args.steps, args.batch_size)
            m = t5mtl.load(run)
            record(method, rank_accuracy(m.model, m.params, task, args.num_examples)["accuracy"])
    if "ensemble" not in scores and args.ensemble:
        members = [train_one(args.out, args.base, task, "prompt_class_labels", seed, args.steps,
                             args.batch_size) for seed in range(ENSEMBLE_SIZE)]
        each = []
        for run in members:
            m = t5mtl.load(run)
            each.append(rank_accuracy(m.model, m.params, task, args.num_examples))
        ensemble, params = load_ensemble(members)
        joint = rank_accuracy(ensemble, params, task, args.num_examples)
        record("ensemble_members_log_loss", statistics.mean(e["log_loss"] for e in each))
        record("ensemble_log_loss", joint["log_loss"])
        record("ensemble_members", statistics.mean(e["accuracy"] for e in each))
        record("ensemble", joint["accuracy"])
    return scores


ROWS = [("chance", "chance (majority class)"), ("none", "no adaptation"),
        *((f"prompt_{i}", f"prompt tuning, {i} init") for i in INITS),
        ("ensemble", f"ensemble of {ENSEMBLE_SIZE} class-label prompts"),
        ("ensemble_members", "  mean of its members"),
        ("ensemble_log_loss", "ensemble, option log-loss (nats)"),
        ("ensemble_members_log_loss", "  mean of its members' log-loss"),
        ("lora", "LoRA r=8 (query, value)"), ("full", "full finetuning")]


def cell(values, digits: int = 1) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(results: dict) -> str:
    tasks = list(results)
    lines = ["| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for key, label in ROWS:
        if any(key in results[t] for t in tasks):
            digits = 3 if key.endswith("log_loss") else 1
            lines.append(f"| {label} | " + " | ".join(cell(results[t].get(key, []), digits)
                                                      for t in tasks) + " |")
    return "\n".join(lines)


def ensure_base(base: str, data_dir: str | None) -> None:
    from t5mtl.train.model_dir import is_model_dir
    if is_model_dir(base) and os.path.exists(os.path.join(base, "checkpoints")):
        return
    cmd = [sys.executable, "-m", "t5mtl.cli", "train", "--gin_file=gin/runs/peft_base.gin",
           f"--model_dir={base}"] + ([f"--data_dir={data_dir}"] if data_dir else [])
    print("training the base:", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=os.path.expanduser("~/.cache/t5mtl/peft_base"))
    parser.add_argument("--out", default="/tmp/t5mtl_peft_compare")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_examples", type=int, default=256)
    parser.add_argument("--no_ensemble", dest="ensemble", action="store_false")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args(argv)
    from t5mtl.train.compile_cache import use_compilation_cache
    use_compilation_cache(os.path.join(args.out, "xla_cache"))
    from t5mtl.data import data_dir
    data_dir.set_data_dir(args.data_dir)
    import t5mtl.data.registry  # noqa: F401  (registers tasks and mixtures)
    ensure_base(args.base, args.data_dir)
    results = {}
    for task in args.tasks.split(","):
        results[task] = compare_task(task, args)
        print(table(results), flush=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table(results) + "\n")


if __name__ == "__main__":
    main()
