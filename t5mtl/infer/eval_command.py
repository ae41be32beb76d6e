"""`t5mtl eval --model_dir DIR [--gin_file F] [--task NAME ...]`: evaluate a checkpoint.

`--adapter DIR` (repeatable) evaluates adapter directories instead: one is
that adapter on its base; several are their ensemble in one batched pass
(t5mtl.peft.ensemble: averaged scores, majority-voted generations).

gin: the run's own config.gin (model_dir's, or the first adapter's) is
parsed first (unless --ignore_run_config), then --gin_file and --gin.X=Y, so
the model is evaluated under what it was trained with (its tasks, lengths,
generalization split, --module_import modules). Tasks come from --task
(repeatable) or from gin's EvalConfig.tasks; results
print as one table and append to model_dir/metrics.jsonl (split "eval").
Decoding and scoring run over a device mesh (see --mesh_shape): each eval
batch splits over its data x fsdp axes, the params shard by their logical
axis names as in training. Launched on several processes (T5MTL_DISTRIBUTED
or T5MTL_COORDINATOR, as for `t5mtl train`), every process evaluates the
whole eval set over the one global mesh and process 0 writes the metrics.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_dir", default=None,
                        help="the checkpoint to evaluate; with --adapter, where to append "
                             "the metrics (optional)")
    parser.add_argument("--adapter", action="append", default=[],
                        help="an adapter directory (repeatable: several form an ensemble)")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file (repeatable), parsed after the run's config.gin")
    parser.add_argument("--ignore_run_config", action="store_true",
                        help="do not parse the run's config.gin first")
    parser.add_argument("--task", action="append", default=[],
                        help="a seqio task or mixture to evaluate (repeatable)")
    parser.add_argument("--split", default=None)
    parser.add_argument("--num_examples", type=int, default=None)
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--rank", action="store_true",
                        help="also report rank-classification accuracy for classification "
                             "tasks (each label's log-likelihood, best one wins)")
    parser.add_argument("--levels", choices=["synthetic"], default=None,
                        help="report the three generalization levels (held-out categories, "
                             "held-out tasks, held-out instances) of a suite in one table")
    parser.add_argument("--mesh_shape", default=None, metavar="DATA,FSDP,MODEL",
                        help="sizes of the (data, fsdp, model) mesh axes, e.g. 8,1,1 or "
                             "2,1,4; one may be -1 (the devices the others leave). Default: "
                             "train.mesh_shape when a --gin_file/--gin. binding sets it (so "
                             "the training run's gin files give the training layout, as in "
                             "t5x), else -1,1,1 (all devices on data). Eval batches split "
                             "over data x fsdp; a batch_size that is a multiple of that wastes "
                             "no rows")


def run(args: argparse.Namespace) -> int:
    from t5mtl import gin_config
    from t5mtl.data.data_config import DataConfig
    from t5mtl.errors import T5mtlError
    from t5mtl.infer.evaluation import (TaskEvaluator, flatten_metrics, format_table,
                                         score_table)
    from t5mtl.infer.sharded import place_params
    from t5mtl.train.command import maybe_initialize_distributed
    from t5mtl.train.metrics_writer import MetricsLogger
    from t5mtl.train.trainer import EvalConfig
    maybe_initialize_distributed()       # several processes, when a launcher asks
    if args.data_dir:
        from t5mtl.data.data_dir import set_data_dir
        set_data_dir(args.data_dir)
    run_dir = args.adapter[0] if args.adapter else args.model_dir
    run_gin = [] if args.ignore_run_config or run_dir is None else gin_config.run_config(run_dir)
    gin_config.parse(run_gin + list(args.gin_file), args.gin_bindings)
    cfg = EvalConfig()
    if args.levels:
        return _run_levels(args, cfg)
    tasks = args.task or list(cfg.tasks)
    if not tasks:
        raise T5mtlError("nothing to evaluate: pass --task NAME or bind EvalConfig.tasks in gin")
    lengths = cfg.task_feature_lengths or DataConfig().task_feature_lengths
    mesh = eval_mesh(args.mesh_shape)
    model, params = _load(args)
    params = place_params(model, params, mesh)          # once, for every task
    results = {}
    for name in tasks:
        ev = TaskEvaluator(name, lengths, args.split or cfg.split,
                           args.num_examples or cfg.num_examples, cfg.batch_size, cfg.decode,
                           mesh=mesh)
        results.update(ev.evaluate(model, params))
    if args.rank:
        _add_rank_accuracy(results, model, params, args.split or cfg.split,
                           args.num_examples or cfg.num_examples, lengths["inputs"], mesh)
    if args.model_dir:
        logger = MetricsLogger(args.model_dir)
        logger.write(int(args.step or 0), "eval", flatten_metrics(results))
        logger.close()
    print(format_table(results))
    print()
    print(score_table(results))
    return 0


def _load(args):
    """(model, params) of --model_dir, one --adapter, or several (an ensemble)."""
    from t5mtl.errors import T5mtlError
    from t5mtl.train.model_dir import load_params
    if len(args.adapter) > 1:
        from t5mtl.peft.ensemble import load_ensemble
        return load_ensemble(args.adapter)
    path = args.adapter[0] if args.adapter else args.model_dir
    if path is None:
        raise T5mtlError("t5mtl eval needs --model_dir DIR or --adapter DIR")
    return load_params(path, args.step)


def _run_levels(args, cfg) -> int:
    import json

    from t5mtl import paths
    from t5mtl.data.data_config import DataConfig
    from t5mtl.infer.sharded import place_params
    from t5mtl.mtl.generalization import evaluate_levels, levels_table, synthetic_level_mixtures
    mesh = eval_mesh(args.mesh_shape)
    model, params = _load(args)
    lengths = cfg.task_feature_lengths or DataConfig().task_feature_lengths
    results = evaluate_levels(model, place_params(model, params, mesh),
                              synthetic_level_mixtures(), lengths, args.split or cfg.split,
                              args.num_examples or cfg.num_examples, cfg.batch_size, mesh=mesh)
    name = "ensemble" if len(args.adapter) > 1 else (args.adapter or [args.model_dir])[0]
    if args.model_dir:
        paths.write_text(paths.join(args.model_dir, "generalization_levels.json"),
                         json.dumps(results, indent=2))
    print(levels_table({paths.basename(name): results}))
    return 0


def eval_mesh(mesh_shape: str | None):
    """The mesh for `t5mtl eval` (gin parsed): --mesh_shape "D,F,M", else gin's
    train.mesh_shape, else all devices on the data axis."""
    import gin

    from t5mtl.errors import T5mtlError
    from t5mtl.train import partitioning
    if mesh_shape is not None:
        try:
            shape = tuple(int(s) for s in mesh_shape.replace(" ", "").strip("()").split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3:
            raise T5mtlError(f"--mesh_shape {mesh_shape!r} must be three integers "
                             "DATA,FSDP,MODEL, e.g. 2,1,4")
    else:
        try:
            shape = gin.query_parameter("train.mesh_shape")
        except ValueError:                   # not bound
            shape = (-1, 1, 1)
        if not isinstance(shape, (tuple, list)):
            raise T5mtlError(f"gin's train.mesh_shape is {shape!r}, not a (data, fsdp, model) "
                             "tuple; pass --mesh_shape")
    return partitioning.create_mesh(shape)


def rank_options(tasks) -> dict[str, tuple[str, ...]]:
    """Each task's label set for --rank; an error naming the first task that has none."""
    from t5mtl.data.task_info import get_task_info, has_task_info
    from t5mtl.errors import T5mtlError
    options = {}
    for task in tasks:
        if not has_task_info(task):
            raise T5mtlError(f"--rank: task {task!r} has no TaskInfo, so no label_names to "
                             f"rank; register it with info=TaskInfo(..., label_names=(...)) "
                             f"or label_names= (docs/tasks.md)")
        labels = get_task_info(task).label_names
        if not labels:
            raise T5mtlError(f"--rank: task {task!r} has no label_names (TaskInfo.label_names "
                             f"is empty): rank classification needs the closed label set; "
                             f"drop --rank or register the task with label_names")
        options[task] = labels
    return options


def _add_rank_accuracy(results, model, params, split, num_examples, input_length,
                       mesh) -> None:
    """Adds "rank_accuracy" next to the generative metrics of every evaluated
    task; a task without label_names is an error (checked before any scoring)."""
    from t5mtl.infer.rank_classification import rank_classify
    options = rank_options(results)
    for task, labels in options.items():
        results[task]["rank_accuracy"] = rank_classify(
            model, params, task, labels, split, num_examples, input_length,
            mesh=mesh)["accuracy"]
