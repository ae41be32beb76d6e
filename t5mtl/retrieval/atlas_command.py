"""`t5mtl atlas --gin_file=gin/runs/atlas_fewshot.gin --model_dir=DIR`: Atlas
few-shot QA joint training by retrieval rounds (t5mtl.retrieval.atlas_fewshot)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[], required=True,
                        help="gin file (repeatable), e.g. gin/runs/atlas_fewshot.gin")
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--data_dir", default=None)
    parser.epilog = "Any --gin.NAME=VALUE argument overrides a gin binding."


def run(args: argparse.Namespace) -> int:
    from t5mtl import gin_config
    if args.data_dir:
        from t5mtl.data.data_dir import set_data_dir
        set_data_dir(args.data_dir)
    import t5mtl.retrieval.atlas_fewshot as atlas_fewshot
    gin_config.parse(list(args.gin_file), args.gin_bindings)
    gin_config.write_config(args.model_dir)
    atlas_fewshot.atlas_fewshot_train(args.model_dir)
    print(f"trained Atlas in {args.model_dir}; evaluate with python -m bench.atlas_fewshot")
    return 0
