"""HyperPrompt-Global against prompt tuning, multi-task, from one frozen base.

On a mixture of tasks the base never saw (default: seven classification
tasks, five synthetic and two GLUE), trains from the same frozen base with
the same data order, steps and optimizer (Adafactor):
  - HyperPrompt (one run over the mixture; task ids per row);
  - one shared soft prompt (PromptTuning over the mixture, class-label init);
  - with --per_task, a soft prompt per task (one run per task, same steps each);
then scores each task by rank classification over its labels on its
validation split, next to the base without adaptation and chance (the
majority class of the scored examples).

  python -m bench.hyperprompt --base ~/.cache/t5mtl/peft_base --data_dir ../shared/data

--quick: HyperPrompt alone (and chance) on two synthetic tasks, 2 steps,
4 examples scored (a smoke run for tests).
Finished runs are reused, so an interrupted comparison resumes.
"""
from __future__ import annotations

import os

from bench import comparison
from bench.peft_compare import rank_accuracy

TASKS = ("glue_cola", "glue_sst2", "synth_greater", "synth_is_sorted", "synth_palindrome",
         "synth_parity", "synth_sign")
QUICK_TASKS = ("synth_parity", "synth_sign")
INPUT_LENGTH = 128
# (learning rate, trainable patterns); Adafactor as T5. 0.3 for prompts is
# Lester et al.'s.
METHODS = {"hyperprompt": (0.03, ["attention_prefix/.*"]),
           "shared_prompt": (0.3, ["encoder_input/.*"]),
           "prompt_per_task": (0.3, ["encoder_input/.*"])}


def feature_lengths(tasks) -> dict:
    """Inputs 128; targets the longest label of any task plus EOS."""
    import seqio
    from t5mtl.data.task_info import get_task_info
    longest = 0
    for task in tasks:
        vocab = seqio.get_mixture_or_task(task).output_features["targets"].vocabulary
        longest = max([longest] + [len(vocab.encode(x)) for x in get_task_info(task).label_names])
    return {"inputs": INPUT_LENGTH, "targets": longest + 1}


def build_model(method: str, base_model, tasks):
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.peft import HyperPrompt, PromptTuning
    if method == "hyperprompt":
        return EncoderDecoderModel(base_model.config, attention_prefix=HyperPrompt(
            tuple(tasks), length=16, task_dim=32, bottleneck=32))
    return EncoderDecoderModel(base_model.config,
                               encoder_input=PromptTuning(length=20, init="class_labels"))


def train_run(run: str, base: str, method: str, tasks, args) -> str:
    """Trains `method` on `tasks` (a mixture, or one task) into `run`, once."""
    from t5mtl.data.data_config import DataConfig
    from t5mtl.train import model_dir as model_dir_lib
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    if model_dir_lib.is_model_dir(run) and os.path.exists(os.path.join(run, "done")):
        return run
    lr, trainable = METHODS[method]
    base_model = model_dir_lib.read_model_json(base).model
    train(run, model=build_model(method, base_model, tasks),
          data=DataConfig(mixture_or_task_name=list(tasks) if len(tasks) > 1 else tasks[0],
                          task_feature_lengths=feature_lengths(tasks),
                          batch_size=args.batch_size, pack=False, seed=args.seed,
                          truncation_check_examples=0 if args.quick else 200),
          num_steps=args.steps, optimizer=create_optimizer("adafactor", learning_rate=lr),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False, init_from=base,
                                       save_trainable_only=True),
          evaluation=EvalConfig(), trainable_patterns=trainable, seed=args.seed,
          log_period=max(1, args.steps // 5), show_progress=False)
    open(os.path.join(run, "done"), "w").close()
    return run


def compare(args) -> dict:
    """{row: {task: accuracy}} (cached in out/scores.json)."""
    import t5mtl
    tasks = args.tasks
    cache = comparison.ScoreCache(os.path.join(args.out, "scores.json"))
    scores, record = cache.rows, cache.record

    loaded = {}

    def score_all(row, run_of_task):
        for task in tasks:
            if task in scores.get(row, {}):
                continue
            run = run_of_task(task)
            if run not in loaded:           # one load (and one compile) per run
                loaded.clear()
                loaded[run] = t5mtl.load(run)
            m = loaded[run]
            result = rank_accuracy(m.model, m.params, task, args.num_examples)
            record(row, task, result["accuracy"])
            if task not in scores.get("chance", {}):
                record("chance", task, result["chance"])

    if not args.quick:
        score_all("none", lambda task: args.base)
    for method in ("hyperprompt",) if args.quick else ("hyperprompt", "shared_prompt"):
        run = train_run(os.path.join(args.out, method), args.base, method, tasks, args)
        score_all(method, lambda task: run)
    if args.per_task:
        score_all("prompt_per_task", lambda task: train_run(
            os.path.join(args.out, "prompt_per_task", task), args.base, "prompt_per_task",
            (task,), args))
    return scores


ROWS = [("chance", "chance (majority class)"), ("none", "no adaptation"),
        ("shared_prompt", "one shared prompt (P=20)"),
        ("prompt_per_task", "a prompt per task (P=20 each)"),
        ("hyperprompt", "HyperPrompt-Global (l=16, t=32, b=32)")]


def rows(scores: dict, tasks) -> tuple[str, list, list]:
    """(first header, columns, [(label, cells)]): each task and the mean."""
    out = []
    for key, label in ROWS:
        if key in scores:
            values = [scores[key].get(t) for t in tasks]
            out.append((label, [*values, comparison.mean(values)]))
    return "method", [*tasks, "mean"], out


def table(scores: dict, tasks) -> str:
    return comparison.markdown(*rows(scores, tasks))


def main(argv=None) -> dict:
    parser = comparison.parser(__doc__, "/tmp/t5mtl_hyperprompt", 128,
                               "smoke run: 2 tasks, 2 steps, batch 8, 4 examples")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--per_task", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.steps, args.batch_size, args.num_examples = (
            ",".join(QUICK_TASKS), 2, 8, 4)
    args.tasks = sorted(args.tasks.split(","))      # task-id order (seqio's)
    comparison.prepare(args)
    scores = compare(args)
    comparison.write_table(args, table(scores, args.tasks))
    return scores


if __name__ == "__main__":
    main()
