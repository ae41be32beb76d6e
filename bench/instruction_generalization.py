"""Does instruction tuning generalize? The three OPT-IML levels on the synthetic suite.

Trains, in one run and with the same model size, optimizer and step budget:
  - instruction-tuned: the Flan-style instruction mixture of the seen
    categories' training tasks (synth_seen_train);
  - single-task: one seen training task's zero-shot variant only;
and evaluates them, plus the untrained (random-init) model, on
  (i) held-out categories, (ii) held-out tasks of seen categories,
  (iii) held-out instances of the seen tasks (zero-shot variants).

  python -m bench.instruction_generalization --out /tmp/t5mtl_generalization

prints one table (and a markdown copy for docs/instruction_tuning.md).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax

import t5mtl
import t5mtl.data.registry  # noqa: F401  (registers tasks and mixtures)
from t5mtl.data import mixtures, templates
from t5mtl.models import get_config
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.mtl.generalization import (LEVEL_LABELS, LEVELS, evaluate_levels, levels_table,
                                      synthetic_level_mixtures)
from t5mtl.train.optimizers import create_optimizer
from t5mtl.data.data_config import DataConfig
from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train

LENGTHS = {"inputs": 128, "targets": 32}


def _train(model_dir: str, mixture: str, steps: int, model: str, batch_size: int) -> None:
    train(model_dir, model=EncoderDecoderModel(get_config(model)),
          data=DataConfig(mixture_or_task_name=mixture, task_feature_lengths=LENGTHS,
                          batch_size=batch_size),
          num_steps=steps, optimizer=create_optimizer("adafactor", learning_rate=1e-2),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False),
          evaluation=EvalConfig(), log_period=50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/t5mtl_generalization")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--model", default="t5_small_cpu")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_examples", type=int, default=64, help="eval examples per task")
    parser.add_argument("--single_task", default="synth_uppercase",
                        help="the seen training task the single-task model learns")
    args = parser.parse_args()
    splits = mixtures.generalization_splits()
    if args.single_task not in splits.train_tasks:
        raise SystemExit(f"--single_task must be a seen training task: {splits.train_tasks}")
    levels = synthetic_level_mixtures()
    runs = {
        "untrained": (mixtures.SYNTH_SEEN_TRAIN, 0),
        "single-task": (templates.variant_name(args.single_task, "zs"), args.steps),
        "instruction-tuned": (mixtures.SYNTH_SEEN_TRAIN, args.steps),
    }
    results, timings = {}, {}
    for name, (mixture, steps) in runs.items():
        model_dir = os.path.join(args.out, name)
        t0 = time.time()
        if not os.path.isdir(os.path.join(model_dir, "checkpoints", str(steps))):
            _train(model_dir, mixture, steps, args.model, args.batch_size)
        loaded = t5mtl.load(model_dir)
        results[name] = evaluate_levels(loaded.model, loaded.params,
                                        levels, LENGTHS, num_examples=args.num_examples)
        timings[name] = time.time() - t0
        print(f"{name}: " + ", ".join(f"{lv}={results[name][lv]['score']:.1f}"
                                      for lv in LEVELS), flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"results": results, "seconds": timings, "args": vars(args),
                   "splits": splits._asdict() if hasattr(splits, "_asdict") else str(splits),
                   "devices": str(jax.devices())}, f, indent=2, default=str)
    print()
    print(levels_table(results))
    print()
    print("| level | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for level in LEVELS:
        print(f"| {LEVEL_LABELS[level]} | "
              + " | ".join(f"{r[level]['score']:.1f}" for r in results.values()) + " |")
    print()
    print("per task (" + " / ".join(results) + "):")
    for level in LEVELS:
        cells = []
        for task in results["instruction-tuned"][level]["tasks"]:
            scores = " / ".join(f"{r[level]['tasks'][task]:.0f}" for r in results.values())
            cells.append(f"{task}={scores}")
        print(f"{LEVEL_LABELS[level]}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
