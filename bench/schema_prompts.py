"""Schema prompts against plain T5-format inputs: the same model trained on
the same tasks, then zero-shot on tasks neither arm saw.

Both arms start from the same base (the cached peft base; docs/peft.md) and
train the whole model for the same steps, seed and batch on the same tasks
mixed at equal rates:
  - plain:  the tasks as registered (T5 format: "rte hypothesis: ... premise: ...",
            "<instruction> <query>" for the synthetic suite);
  - schema: their schema variants ("schema_<task>": a task-type prompt and a
            learned key prompt per field, t5mtl.peft.SchemaPrompts).
Then each arm is scored on held-out tasks (default synth_add, superglue_rte:
their keys and types are trained through other tasks) and two seen ones:
rank classification over the labels for classification tasks, exact match of
greedy decoding otherwise; chance is the share of the most common target
among the scored examples. The base itself (plain inputs) is a row too
(not in --quick, which trains a fresh t5_tiny).

  python -m bench.schema_prompts --out /tmp/t5mtl_schema --data_dir ../shared/data
  python -m bench.schema_prompts --quick --data_dir ../shared/data   # smoke run

Finished runs are reused (their directories under --out).
"""
from __future__ import annotations

import os

from bench import comparison

EVAL_TASKS = ("synth_add", "superglue_rte", "synth_add_one", "superglue_cb")
HELDOUT = ("synth_add", "superglue_rte")
INPUT_LENGTH = 128
ARMS = ("plain", "schema")
QUICK_TRAIN = ("synth_add_one", "superglue_cb")


def plain_mixture(train_tasks, name: str = "schema_bench_plain") -> str:
    """The plain arm's mixture: the base tasks of the schema arm's, equal rates."""
    import seqio
    seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, list(train_tasks), default_rate=1.0)
    return name


def schema_mixture(train_tasks, name: str = "schema_bench_schema") -> str:
    import seqio
    from t5mtl.data import schema_prompts as sp
    seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, [sp.schema_task_name(t) for t in train_tasks],
                              default_rate=1.0)
    return name


def build_model(arm: str, base_model):
    from t5mtl.data.vocab import get_vocabulary
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.peft import SchemaPrompts
    if arm == "plain":
        return base_model
    return EncoderDecoderModel(base_model.config, encoder_input=SchemaPrompts(
        vocab_size=get_vocabulary().vocab_size))


def train_arm(arm: str, args, base_model, train_tasks) -> str:
    from t5mtl.data.data_config import DataConfig
    from t5mtl.train.model_dir import is_model_dir
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    run = os.path.join(args.out, arm)
    if is_model_dir(run) and os.path.exists(os.path.join(run, "checkpoints")):
        return run
    mixture = (plain_mixture if arm == "plain" else schema_mixture)(train_tasks)
    train(run, model=build_model(arm, base_model),
          data=DataConfig(mixture_or_task_name=mixture, batch_size=args.batch_size,
                          task_feature_lengths={"inputs": INPUT_LENGTH, "targets": 64},
                          seed=args.seed),
          num_steps=args.steps, optimizer=create_optimizer("adafactor", learning_rate=args.lr),
          checkpoints=CheckpointConfig(period=10 ** 9, keep=1, async_save=False,
                                       init_from=args.base),
          evaluation=EvalConfig(), seed=args.seed, log_period=max(1, args.steps // 10),
          show_progress=False)
    return run


def score(model, params, task: str, num_examples: int) -> dict:
    """{"score": %, "chance": %}: rank accuracy over the labels, or exact match."""
    from t5mtl.data.task_info import get_task_info
    from t5mtl.infer.evaluation import TaskEvaluator, majority_share
    from t5mtl.infer.rank_classification import rank_classify
    labels = get_task_info(task).label_names
    if labels:
        r = rank_classify(model, params, task, list(labels), num_examples=num_examples,
                          input_length=INPUT_LENGTH)
        return {"score": r["accuracy"], "chance": majority_share(r["targets"])}
    import seqio
    ds = seqio.get_mixture_or_task(task).get_dataset(
        {"inputs": INPUT_LENGTH, "targets": 32}, split="validation", shuffle=False).take(
        num_examples)
    targets = [ex["targets_pretokenized"].decode() for ex in ds.as_numpy_iterator()]
    metrics = TaskEvaluator(task, {"inputs": INPUT_LENGTH, "targets": 32},
                            num_examples=num_examples).evaluate(model, params)[task]
    return {"score": metrics["exact_match"], "chance": majority_share(targets)}


def run(args) -> dict:
    """{row: {task: score}}, rows chance, base, plain, schema (cached in results.json)."""
    import t5mtl
    from t5mtl.data import schema_prompts as sp
    from t5mtl.models import get_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    sp.register()
    train_tasks = args.train_tasks.split(",") if args.train_tasks else [
        t[len(sp.PREFIX):] for t in sp.train_tasks()]
    eval_tasks = args.tasks.split(",")
    leaked = set(train_tasks) & set(HELDOUT) & set(eval_tasks)
    if leaked:
        from t5mtl.errors import T5mtlError
        raise T5mtlError(f"held-out task {sorted(leaked)[0]!r} is in the training tasks")
    cache = comparison.ScoreCache(os.path.join(args.out, "results.json"))
    results, record = cache.rows, cache.record

    if args.base:
        base = t5mtl.load(args.base)
        base_model = base.model
        for task in eval_tasks:
            if task not in results.get("base", {}):
                r = score(base_model, base.params, task, args.num_examples)
                record("chance", task, r["chance"])
                record("base", task, r["score"])
    else:   # --quick: a fresh t5_tiny, trained from its random init
        base_model = EncoderDecoderModel(get_config("t5_tiny"))
    for arm in ARMS:
        todo = [t for t in eval_tasks if t not in results.get(arm, {})]
        if not todo:
            continue
        m = t5mtl.load(train_arm(arm, args, base_model, train_tasks))
        for task in todo:
            name = task if arm == "plain" else sp.schema_task_name(task)
            r = score(m.model, m.params, name, args.num_examples)
            record(arm, task, r["score"])
            results.get("chance", {}).get(task) is None and record("chance", task, r["chance"])
    return results


ROWS = (("chance", "chance (most common target)"), ("base", "base, no multi-task training"),
        ("plain", "multi-task, plain T5-format inputs"), ("schema", "multi-task, schema prompts"))


def rows(results: dict, tasks) -> tuple[str, list, list]:
    """(first header, columns, [(label, cells)]), held-out tasks marked."""
    head = [f"{t} (held out)" if t in HELDOUT else t for t in tasks]
    return "model", head, [(label, [results[key].get(t) for t in tasks])
                           for key, label in ROWS if key in results]


def table(results: dict, tasks) -> str:
    return comparison.markdown(*rows(results, tasks))


def main(argv=None) -> str:
    parser = comparison.parser(__doc__, "/tmp/t5mtl_schema", 200,
                               "smoke run: a fresh t5_tiny (no base row), 2 training tasks, "
                               "1 step, superglue_rte on 2 examples")
    parser.add_argument("--tasks", default=",".join(EVAL_TASKS))
    parser.add_argument("--train_tasks", default="",
                        help="base tasks to train on (default: schema_mtl's)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args(argv)
    if args.quick:
        args.base, args.steps, args.batch_size, args.num_examples = None, 1, 2, 2
        args.train_tasks = args.train_tasks or ",".join(QUICK_TRAIN)
        if args.tasks == parser.get_default("tasks"):
            args.tasks = "superglue_rte"
        if args.out == parser.get_default("out"):
            args.out = "/tmp/t5mtl_schema_quick"
    comparison.prepare(args, train_base=False)
    return comparison.write_table(args, table(run(args), args.tasks.split(",")))


if __name__ == "__main__":
    main()
