"""Match-Prompt against finetuning on text-matching tasks, from one base.

From the PEFT base (gin/runs/peft_base.gin; bench/peft_compare.py trains it
when missing), with the same data, batch and number of model-training steps:
  - Match-Prompt: stage 1 trains one prompt per task (description init) with
    the model frozen, stage 2 the model on the mixture with the prompts
    fixed; the unseen task's prompt is its description's embeddings
    (match_prompt.with_task);
  - its stage 1 alone (prompts on the frozen base);
  - multi-task finetuning of the whole model on the mixture, no prompts;
  - task-specific finetuning, one model per training task;
  - no adaptation (the base) and chance (the majority class).
Scores are rank-classification accuracy over each task's labels (STS-B:
its 26 score labels 0.0-5.0) on the first --num_examples validation rows;
the unseen task is never trained on by any row.

  python -m bench.match_prompt --data_dir ../shared/data
  python -m bench.match_prompt --quick --base /path/to/tiny_base --out /tmp/mpq

Finished runs and scores are reused (under --out), so a run resumes.
"""
from __future__ import annotations

import os

from bench import comparison

TRAIN_TASKS = ("glue_stsb", "match_boolq", "match_qnli", "superglue_cb")
UNSEEN = "superglue_rte"
INPUT_LENGTH = 128
PROMPT_LENGTH = 20


def options(task: str) -> list[str]:
    """The labels rank classification chooses among."""
    from t5mtl.data.task_info import get_task_info
    labels = list(get_task_info(task).label_names)
    return labels or [f"{i / 5:.1f}" for i in range(26)]         # STS-B's score labels


def lengths(tasks) -> dict:
    import seqio
    vocab = seqio.get_mixture_or_task(tasks[0]).output_features["targets"].vocabulary
    longest = max(len(vocab.encode(o)) for t in tasks for o in options(t))
    return {"inputs": INPUT_LENGTH, "targets": longest + 1}


def train_run(run: str, args, model, tasks, init_from: str, lr: float, steps: int,
              trainable=None, frozen=(), adapter=False) -> str:
    from t5mtl.data.data_config import DataConfig
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    train(run, model=model,
          data=DataConfig(mixture_or_task_name=list(tasks) if len(tasks) > 1 else tasks[0],
                          task_feature_lengths=lengths([*tasks, args.unseen]),
                          batch_size=args.batch_size, pack=False, seed=args.seed,
                          **({"truncation_check_examples": 0} if args.quick else {})),
          num_steps=steps, optimizer=create_optimizer("adafactor", learning_rate=lr),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False,
                                       init_from=init_from, save_trainable_only=adapter),
          evaluation=EvalConfig(), trainable_patterns=trainable, frozen_patterns=frozen,
          seed=args.seed, log_period=10 ** 6, show_progress=False)
    return run


def accuracy(model, params, task: str, n: int) -> tuple[float, float]:
    """(rank accuracy %, majority-class share %) on task's first n validation rows."""
    from t5mtl.infer.evaluation import majority_share
    from t5mtl.infer.rank_classification import rank_classify
    result = rank_classify(model, params, task, options(task), num_examples=n,
                           input_length=INPUT_LENGTH)
    return result["accuracy"], majority_share(result["targets"])


def run_all(args) -> dict:
    """{row: {task: accuracy}} (cached in out/scores.json)."""
    import t5mtl
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.peft.match_prompt import TaskPrompts, with_task
    from t5mtl.train import model_dir as model_dir_lib
    tasks, unseen = sorted(args.tasks.split(",")), args.unseen
    cache = comparison.ScoreCache(os.path.join(args.out, "scores.json"))
    scores, record = cache.rows, cache.record

    def score(row, loaded, eval_tasks, with_unseen=True):
        model, params = loaded.model, loaded.params
        for task in eval_tasks:
            if task not in scores.get(row, {}):
                acc, chance = accuracy(model, params, task, args.num_examples)
                record(row, task, acc)
                record("chance", task, chance)
        if with_unseen and unseen not in scores.get(row, {}):
            if isinstance(model.encoder_input, TaskPrompts):
                model, params = with_task(model, params, unseen, loaded.vocabulary)
            acc, chance = accuracy(model, params, unseen, args.num_examples)
            record(row, unseen, acc)
            record("chance", unseen, chance)

    base = t5mtl.load(args.base)
    if not args.quick:
        score("none", base, tasks)
    prompts = EncoderDecoderModel(base.model.config,
                                  encoder_input=TaskPrompts(tasks, PROMPT_LENGTH))
    out = lambda name: os.path.join(args.out, name)
    s1 = train_run(out("stage1"), args, prompts, tasks, args.base, args.prompt_lr,
                   args.stage1_steps, trainable=["encoder_input/.*"], adapter=True)
    if not args.quick:
        score("stage1", t5mtl.load(s1), tasks)
    s2 = train_run(out("stage2"), args, model_dir_lib.read_model_json(s1).model, tasks, s1,
                   args.lr, args.steps, frozen=["encoder_input/.*"])
    score("match_prompt", t5mtl.load(s2), tasks)
    mt = train_run(out("multitask"), args, base.model, tasks, args.base, args.lr, args.steps)
    score("multitask", t5mtl.load(mt), tasks)
    for task in tasks:
        if task not in scores.get("task_specific", {}):
            # One task: the multi-task run is that task's own finetuning.
            ts = mt if len(tasks) == 1 else train_run(
                out(f"task_specific/{task}"), args, base.model, [task], args.base, args.lr,
                args.steps)
            score("task_specific", t5mtl.load(ts), [task], with_unseen=False)
    return scores


ROWS = [("chance", "chance (majority class)"), ("none", "no adaptation (the base)"),
        ("stage1", "Match-Prompt stage 1 only (prompts, frozen model)"),
        ("match_prompt", "Match-Prompt (stage 1 + stage 2)"),
        ("multitask", "multi-task finetuning, no prompts"),
        ("task_specific", "task-specific finetuning (one model per task)")]


def rows(scores: dict, tasks, unseen: str) -> tuple[str, list, list]:
    """(first header, columns, [(label, cells)]): each training task, their
    mean, the unseen task."""
    out = []
    for key, label in ROWS:
        row = scores.get(key, {})
        seen = [row.get(t) for t in tasks]
        out.append((label, [*seen, comparison.mean(seen), row.get(unseen)]))
    return "method", [*tasks, "in-domain mean", f"{unseen} (unseen)"], out


def table(scores: dict, tasks, unseen: str) -> str:
    return comparison.markdown(*rows(scores, tasks, unseen))


def main(argv=None) -> str:
    parser = comparison.parser(__doc__, "/tmp/t5mtl_match_prompt", 128,
                               "smoke run: 2 steps per stage, batch 4, 8 examples, no "
                               "'no adaptation' or 'stage 1 only' rows")
    parser.add_argument("--tasks", default=",".join(TRAIN_TASKS))
    parser.add_argument("--unseen", default=UNSEEN)
    parser.add_argument("--stage1_steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=150, help="model-training steps")
    parser.add_argument("--prompt_lr", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args(argv)
    if args.quick:
        args.stage1_steps, args.steps, args.batch_size, args.num_examples = 2, 2, 4, 8
    comparison.prepare(args, train_base=not args.quick)
    from t5mtl.data import matching_tasks
    matching_tasks.register()           # match_qnli, match_boolq
    scores = run_all(args)
    return comparison.write_table(args, table(scores, sorted(args.tasks.split(",")),
                                              args.unseen))


if __name__ == "__main__":
    main()
