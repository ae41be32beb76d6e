"""`t5mtl fewshot --gin_file=gin/runs/fewshot_eval.gin --model_dir=DIR`: the
few-shot protocol (K-shot samples x seeds, finetune each, evaluate, mean ± std)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[], required=True)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--data_dir", default=None)
    parser.epilog = "Any --gin.NAME=VALUE argument overrides a gin binding."


def run(args: argparse.Namespace) -> int:
    from t5mtl import gin_config
    if args.data_dir:
        from t5mtl.data.data_dir import set_data_dir
        set_data_dir(args.data_dir)
    gin_config.parse(args.gin_file, args.gin_bindings)
    gin_config.write_config(args.model_dir)
    from t5mtl.train.fewshot import format_summary, run_few_shot
    print(format_summary(run_few_shot(model_dir=args.model_dir)))
    return 0
