"""`t5mtl train --gin_file=gin/runs/quickstart.gin --model_dir=DIR [--gin.X=Y ...]`."""
from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[], required=True,
                        help="gin file (repeatable; searched in . and gin/)")
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--gin_search_path", action="append", default=[])
    parser.add_argument("--data_dir", default=None, help="where local datasets live "
                        "(default: $T5MTL_DATA_DIR)")
    parser.epilog = "Any --gin.NAME=VALUE argument overrides a gin binding."


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when the launcher set T5MTL_COORDINATOR etc."""
    coordinator = os.environ.get("T5MTL_COORDINATOR")
    if not coordinator:
        return
    import jax
    if os.environ.get("T5MTL_CPU_COLLECTIVES"):
        jax.config.update("jax_cpu_collectives_implementation",
                          os.environ["T5MTL_CPU_COLLECTIVES"])
    jax.distributed.initialize(coordinator, int(os.environ["T5MTL_NUM_PROCESSES"]),
                               int(os.environ["T5MTL_PROCESS_ID"]))


def run(args: argparse.Namespace) -> int:
    from t5mtl import gin_config
    maybe_initialize_distributed()
    if args.data_dir:
        from t5mtl.data.data_dir import set_data_dir
        set_data_dir(args.data_dir)
    gin_config.parse(args.gin_file, args.gin_bindings, args.gin_search_path)
    from t5mtl.train.trainer import summarize, train
    import jax
    if jax.process_index() == 0:
        gin_config.write_config(args.model_dir)
    summary = train(model_dir=args.model_dir)
    if jax.process_index() == 0:
        print(summarize(args.model_dir, summary))
    return 0
