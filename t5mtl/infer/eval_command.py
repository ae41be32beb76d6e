"""`t5mtl eval --model_dir DIR [--gin_file F] [--task NAME ...]`: evaluate a checkpoint.

Tasks come from --task (repeatable) or from gin's EvalConfig.tasks; results
print as one table and append to model_dir/metrics.jsonl (split "eval").
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--gin_file", action="append", default=[])
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


def run(args: argparse.Namespace) -> int:
    import t5mtl
    from t5mtl import gin_config
    from t5mtl.errors import T5mtlError
    from t5mtl.infer.evaluation import TaskEvaluator, flatten_metrics, format_table
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.train.metrics_writer import MetricsLogger
    from t5mtl.train.trainer import DataConfig, EvalConfig
    if args.data_dir:
        from t5mtl.data.data_dir import set_data_dir
        set_data_dir(args.data_dir)
    gin_config.parse(args.gin_file, args.gin_bindings)
    cfg = EvalConfig()
    if args.levels:
        return _run_levels(args, cfg)
    tasks = args.task or list(cfg.tasks)
    if not tasks:
        raise T5mtlError("nothing to evaluate: pass --task NAME or bind EvalConfig.tasks in gin")
    lengths = cfg.task_feature_lengths or DataConfig().task_feature_lengths
    m = t5mtl.load(args.model_dir, step=args.step)
    model = EncoderDecoderModel(m.config)
    results = {}
    for name in tasks:
        ev = TaskEvaluator(name, lengths, args.split or cfg.split,
                           args.num_examples or cfg.num_examples, cfg.batch_size, cfg.decode)
        results.update(ev.evaluate(model, m.params))
    if args.rank:
        _add_rank_accuracy(results, model, m.params, args.split or cfg.split,
                           args.num_examples or cfg.num_examples, lengths["inputs"])
    logger = MetricsLogger(args.model_dir)
    logger.write(int(args.step or 0), "eval", flatten_metrics(results))
    logger.close()
    print(format_table(results))
    return 0


def _run_levels(args, cfg) -> int:
    import json
    import os

    import t5mtl
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.mtl.generalization import evaluate_levels, levels_table, synthetic_level_mixtures
    from t5mtl.train.trainer import DataConfig
    m = t5mtl.load(args.model_dir, step=args.step)
    lengths = cfg.task_feature_lengths or DataConfig().task_feature_lengths
    results = evaluate_levels(EncoderDecoderModel(m.config), m.params,
                              synthetic_level_mixtures(), lengths, args.split or cfg.split,
                              args.num_examples or cfg.num_examples, cfg.batch_size)
    with open(os.path.join(args.model_dir, "generalization_levels.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(levels_table({os.path.basename(os.path.normpath(args.model_dir)): results}))
    return 0


def _add_rank_accuracy(results, model, params, split, num_examples, input_length) -> None:
    """Adds "rank_accuracy" next to the generative metrics of classification tasks."""
    from t5mtl.data.task_info import get_task_info, has_task_info
    from t5mtl.infer.rank_classification import rank_classify
    for task in results:
        if has_task_info(task) and get_task_info(task).label_names:
            results[task]["rank_accuracy"] = rank_classify(
                model, params, task, get_task_info(task).label_names, split, num_examples,
                input_length)["accuracy"]
