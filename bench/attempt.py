"""ATTEMPT against plain prompt tuning on the same targets, from one frozen base.

1. Source prompts: prompt tuning (P=20, sampled-vocabulary init, Adafactor
   0.3) of the base on each source task (bench.peft_compare.train_one).
2. Targets, each with the same data, steps and seed:
   - plain prompt tuning (the same recipe as the sources);
   - ATTEMPT, single-task (one target prompt, its own attention module);
   - ATTEMPT, multi-task over all targets (one target prompt per task, one
     shared attention module; the mixture's steps are shared by its tasks).
3. Rank-classification accuracy on each target's validation split, next to
   chance (its majority class) and the untouched base; and each target's
   mean attention over the sources and its own prompt (the last column),
   next to the uniform weight 1 / (sources + 1).

  python -m bench.attempt --out /tmp/t5mtl_attempt --data_dir ../shared/data
  python -m bench.attempt --quick --base BASE --out DIR    # smoke run: 2 sources, 2 steps

The base defaults to the cached peft base (gin/runs/peft_base.gin, trained
there first when missing). Finished runs are reused.
"""
from __future__ import annotations

import json
import os

from bench import comparison

SOURCES = ("synth_parity", "synth_greater", "synth_palindrome", "glue_sst2")
TARGETS = ("synth_is_sorted", "synth_sign")
METHOD = "prompt_sampled_vocab"        # bench.peft_compare's recipe: P=20, Adafactor 0.3
LENGTH = 20


def feature_lengths(tasks) -> dict:
    from bench.peft_compare import feature_lengths as one
    lengths = [one(t) for t in tasks]
    return {"inputs": lengths[0]["inputs"], "targets": max(x["targets"] for x in lengths)}


def train_attempt(run: str, base: str, sources, targets, steps: int, batch_size: int,
                  seed: int) -> str:
    """ATTEMPT on `targets` (one target prompt each) from `base`."""
    from bench.peft_compare import METHODS
    from t5mtl.data.data_config import DataConfig
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.peft import Attempt
    from t5mtl.train import model_dir as model_dir_lib
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    targets = sorted(targets)                       # the mixture's task-id order
    config = model_dir_lib.read_model_json(base).model.config
    model = EncoderDecoderModel(config, encoder_input=Attempt(
        sources=tuple(sources), length=LENGTH, num_targets=len(targets),
        tasks=tuple(targets) if len(targets) > 1 else ()))
    lr, trainable = METHODS[METHOD]
    train(run, model=model,
          data=DataConfig(mixture_or_task_name=targets if len(targets) > 1 else targets[0],
                          task_feature_lengths=feature_lengths(targets),
                          batch_size=batch_size, pack=False, seed=seed),
          num_steps=steps, optimizer=create_optimizer("adafactor", learning_rate=lr),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False,
                                       init_from=base, save_trainable_only=True),
          evaluation=EvalConfig(), trainable_patterns=trainable, seed=seed, log_period=100,
          show_progress=False)
    return run


def validation_tokens(task: str, num_examples: int, input_length: int):
    """[n, input_length] encoder ids of the first validation examples."""
    import numpy as np
    import seqio
    ds = seqio.get_mixture_or_task(task).get_dataset(
        {"inputs": input_length, "targets": 64}, split="validation", shuffle=False)
    rows = [ex["inputs"] for ex in ds.take(num_examples).as_numpy_iterator()]
    out = np.zeros((len(rows), input_length), np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def mean_attention(loaded, task: str, num_examples: int) -> list[float]:
    """The target's mean attention [sources + 1] over its validation examples."""
    import numpy as np
    from bench.peft_compare import INPUT_LENGTH
    from t5mtl.peft.attempt import attention_weights
    module = loaded.model.encoder_input
    index = module.tasks.index(task) if module.tasks else 0
    tokens = validation_tokens(task, num_examples, INPUT_LENGTH)
    weights = [attention_weights(loaded.model, loaded.params, tokens[i:i + 64],
                                 np.full((len(tokens[i:i + 64]),), index, np.int32))
               for i in range(0, len(tokens), 64)]
    return np.concatenate(weights).mean(0).tolist()


def run(args) -> dict:
    """{"accuracy": {target: {row: value}}, "attention": {mode: {target: [...]}}}."""
    import t5mtl
    from bench.peft_compare import rank_accuracy, train_one
    path = os.path.join(args.out, "results.json")
    results = json.load(open(path)) if os.path.exists(path) else {"accuracy": {},
                                                                    "attention": {}}
    results["sources"] = list(args.sources)
    sources = [train_one(os.path.join(args.out, "sources"), args.base, task, METHOD, args.seed,
                         args.source_steps, args.batch_size) for task in args.sources]
    modes = {f"attempt_single_{t}": [t] for t in args.targets}
    if len(args.targets) > 1:
        modes["attempt_multi"] = list(args.targets)
    runs = {mode: train_attempt(os.path.join(args.out, mode), args.base, sources, tasks,
                                args.steps, args.batch_size, args.seed)
            for mode, tasks in modes.items()}
    base = None
    for target in args.targets:
        row = results["accuracy"].setdefault(target, {})
        if "none" not in row:
            base = base or t5mtl.load(args.base)
            result = rank_accuracy(base.model, base.params, target, args.num_examples)
            row.update(chance=result["chance"], none=result["accuracy"])
        if "prompt" not in row:
            m = t5mtl.load(train_one(os.path.join(args.out, "baseline"), args.base, target,
                                     METHOD, args.seed, args.steps, args.batch_size))
            row["prompt"] = rank_accuracy(m.model, m.params, target, args.num_examples)[
                "accuracy"]
        for mode, tasks in modes.items():
            key = "attempt_multi" if mode == "attempt_multi" else "attempt_single"
            if target not in tasks or key in row:
                continue
            m = t5mtl.load(runs[mode])
            row[key] = rank_accuracy(m.model, m.params, target, args.num_examples)["accuracy"]
            results["attention"].setdefault(key, {})[target] = mean_attention(
                m, target, args.num_examples)
        save(results, path)
    return results


def save(results: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


ROWS = [("chance", "chance (majority class)"), ("none", "no adaptation"),
        ("prompt", f"prompt tuning, P={LENGTH}"),
        ("attempt_single", "ATTEMPT, single-task"), ("attempt_multi", "ATTEMPT, multi-task")]


def rows(results: dict) -> tuple[str, list, list]:
    """(first header, columns, [(label, cells)]): accuracy per target."""
    acc, targets = results["accuracy"], sorted(results["accuracy"])
    return "method", targets, [(label, [acc[t].get(key) for t in targets])
                               for key, label in ROWS if any(key in acc[t] for t in targets)]


def attention_rows(results: dict) -> tuple[str, list, list]:
    """(first header, columns, [(label, cells)]): each run's mean attention
    per target over the sources and the target's own prompt."""
    out = [(f"{mode.replace('_', ' ')}: {target}", per_target[target])
           for mode, per_target in sorted(results["attention"].items(), reverse=True)
           for target in sorted(per_target)]
    return "run: target", [*results["sources"], "own target prompt"], out


def tables(results: dict) -> str:
    """The accuracy table, then the attention table (uniform: 1 / (sources + 1))."""
    first, columns, weights = attention_rows(results)
    return (comparison.markdown(*rows(results))
            + f"\n\nMean attention (uniform: {1 / len(columns):.3f})\n\n"
            + comparison.markdown(first, columns, [(label, [f"{w:.3f}" for w in cells])
                                                   for label, cells in weights]))


def main(argv=None) -> str:
    parser = comparison.parser(__doc__, "/tmp/t5mtl_attempt", 256,
                               "smoke run: 2 sources, 1 target, 2 steps, 8 examples")
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--source_steps", type=int, default=200)
    args = parser.parse_args(argv)
    if args.quick:
        args.sources, args.targets = "synth_parity,synth_greater", "synth_sign"
        args.steps = args.source_steps = 2
        args.batch_size, args.num_examples = 8, 8
    args.sources, args.targets = args.sources.split(","), args.targets.split(",")
    comparison.prepare(args)
    return comparison.write_table(args, tables(run(args)))


if __name__ == "__main__":
    main()
