"""`t5mtl train --gin_file=gin/runs/quickstart.gin --model_dir=DIR [--gin.X=Y ...]`."""
from __future__ import annotations

import argparse
import os

from t5mtl.errors import T5mtlError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[], required=True,
                        help="gin file (repeatable; searched in . and gin/)")
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--gin_search_path", action="append", default=[])
    parser.add_argument("--data_dir", default=None, help="where local datasets live "
                        "(default: $T5MTL_DATA_DIR)")
    parser.epilog = "Any --gin.NAME=VALUE argument overrides a gin binding."


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when a launcher (tpu_scripts) asked for one.

    T5MTL_DISTRIBUTED=auto: ``jax.distributed.initialize()`` with no
    arguments; on Cloud TPU VMs (and SLURM, ...) JAX reads the coordinator,
    process count and index from the environment it runs in.
    T5MTL_COORDINATOR=host:port with T5MTL_NUM_PROCESSES and
    T5MTL_PROCESS_ID: explicit values (``tpu_scripts --local N`` on CPU).
    T5MTL_CPU_COLLECTIVES=gloo selects the CPU collectives for either.
    """
    mode = os.environ.get("T5MTL_DISTRIBUTED", "").strip().lower()
    coordinator = os.environ.get("T5MTL_COORDINATOR")
    if mode in ("", "0", "off", "none") and not coordinator:
        return
    if mode not in ("", "auto"):
        raise T5mtlError(f"T5MTL_DISTRIBUTED={mode!r}; expected 'auto' (or unset with "
                         f"T5MTL_COORDINATOR)")
    import jax
    if os.environ.get("T5MTL_CPU_COLLECTIVES"):
        jax.config.update("jax_cpu_collectives_implementation",
                          os.environ["T5MTL_CPU_COLLECTIVES"])
    if mode == "auto":
        jax.distributed.initialize()
        return
    missing = [k for k in ("T5MTL_COORDINATOR", "T5MTL_NUM_PROCESSES", "T5MTL_PROCESS_ID")
               if not os.environ.get(k)]
    if missing:
        raise T5mtlError(f"multi-process run: {', '.join(missing)} not set (set all three, "
                         f"or T5MTL_DISTRIBUTED=auto)")
    try:
        num_processes = int(os.environ["T5MTL_NUM_PROCESSES"])
        process_id = int(os.environ["T5MTL_PROCESS_ID"])
    except ValueError as e:
        raise T5mtlError(f"T5MTL_NUM_PROCESSES / T5MTL_PROCESS_ID must be integers: {e}") from e
    jax.distributed.initialize(coordinator, num_processes, process_id)


def run(args: argparse.Namespace) -> int:
    from t5mtl import gin_config
    maybe_initialize_distributed()
    if args.data_dir:
        from t5mtl.data.data_dir import set_data_dir
        set_data_dir(args.data_dir)
    gin_config.parse(args.gin_file, args.gin_bindings, args.gin_search_path)
    from t5mtl.train.summary import summarize
    from t5mtl.train.trainer import train
    import jax
    # config.gin is written once the model_dir is known to fit this run, so a
    # refused resume leaves the old run's config.gin as it was.
    write_config = (lambda: gin_config.write_config(args.model_dir)) \
        if jax.process_index() == 0 else None
    summary = train(model_dir=args.model_dir, before_training=write_config)
    if jax.process_index() == 0 and not summary["finished"]:
        print(summarize(args.model_dir, summary))
    return 0
