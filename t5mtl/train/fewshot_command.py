"""`t5mtl fewshot --gin_file=gin/runs/fewshot_eval.gin --model_dir=DIR`: the
few-shot protocol (K-shot samples x seeds, finetune each, evaluate, mean ± std)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file (repeatable); required unless model_dir holds the "
                             "config.gin of an earlier run, which is parsed first")
    parser.add_argument("--ignore_run_config", action="store_true",
                        help="do not parse model_dir/config.gin first")
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--data_dir", default=None)
    parser.epilog = "Any --gin.NAME=VALUE argument overrides a gin binding."


def run(args: argparse.Namespace) -> int:
    from t5mtl import gin_config
    if args.data_dir:
        from t5mtl.data.data_dir import set_data_dir
        set_data_dir(args.data_dir)
    from t5mtl.errors import T5mtlError
    run_gin = [] if args.ignore_run_config else gin_config.run_config(args.model_dir)
    if not run_gin and not args.gin_file:
        raise T5mtlError(f"pass --gin_file (e.g. gin/runs/fewshot_eval.gin): {args.model_dir} "
                         f"has no config.gin of an earlier run")
    gin_config.parse(run_gin + list(args.gin_file), args.gin_bindings)
    gin_config.write_config(args.model_dir)
    from t5mtl.train.fewshot import format_summary, run_few_shot
    print(format_summary(run_few_shot(model_dir=args.model_dir)))
    return 0
