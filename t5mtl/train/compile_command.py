"""`t5mtl compile --gin_file=RUN.gin --topology=v5e-16 [--gin.X=Y ...]`: the
run's train step compiled ahead of time for a TPU slice (or `--cpu_devices N`),
with its per-device memory against the chip's HBM, FLOPs and collective
bytes (t5mtl.train.aot). Nothing is allocated, no data is read, no
model_dir is written.

The model, optimizer, DataConfig, mesh_shape, num_microbatches and
trainable/frozen patterns are the gin bindings of `train` the run would use;
`--mesh data,fsdp,model` overrides `train.mesh_shape`.
"""
from __future__ import annotations

import argparse
import json
import os

from t5mtl.errors import T5mtlError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[], required=True,
                        help="the run's gin file (repeatable; searched in . and gin/)")
    parser.add_argument("--gin_search_path", action="append", default=[])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--topology", help="a TPU slice: v4-8, v4-128, v5p-8, v5e-16, v5e-256, "
                        "v6e-16, ... (needs libtpu)")
    target.add_argument("--cpu_devices", type=int,
                        help="N devices of this host's CPU (no libtpu; a GPU count's stand-in)")
    parser.add_argument("--mesh", default=None,
                        help="data,fsdp,model sizes (one may be -1); default train.mesh_shape")
    parser.add_argument("--hbm_gib", type=float, default=None,
                        help="per-device memory to compare with (default: the TPU's HBM)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.epilog = "Any --gin.NAME=VALUE argument overrides a gin binding."


def _mesh(text: str | None, bound) -> tuple[int, ...]:
    if text is None:
        return tuple(bound)
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise T5mtlError(f"--mesh {text!r}: expected three sizes data,fsdp,model (e.g. 1,-1,1)")
    return shape


def run(args: argparse.Namespace) -> int:
    if args.cpu_devices is not None:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count="
                                       f"{args.cpu_devices}").strip()
    import gin

    from t5mtl import gin_config
    from t5mtl.models import param_names
    from t5mtl.train import aot
    from t5mtl.train.optimizers import create_optimizer
    from t5mtl.train.trainer import mixture_task_names, resolve_mixture, resolve_model, train
    gin_config.parse(args.gin_file, args.gin_bindings, args.gin_search_path)
    bound = gin.get_bindings(train)
    defaults = {"mesh_shape": (-1, 1, 1), "num_microbatches": 1, "trainable_patterns": None,
                "frozen_patterns": ()}
    opts = {k: bound.get(k, v) for k, v in defaults.items()}
    if "data" not in bound:
        raise T5mtlError("the gin files bind no train.data (a DataConfig): nothing to size "
                         "the batch by")
    data = bound["data"]
    model = resolve_model(bound.get("model"), bound.get("model_config"), bound.get("loss"))
    tx = bound.get("optimizer") or create_optimizer()
    tasks = mixture_task_names(resolve_mixture(data.mixture_or_task_name))
    trainable = param_names.select(list(param_names.flatten(model.abstract_params())),
                                   opts["trainable_patterns"], opts["frozen_patterns"])
    mesh_shape = _mesh(args.mesh, opts["mesh_shape"])
    target = (aot.tpu_target(args.topology) if args.topology
              else aot.cpu_target(args.cpu_devices))
    if args.hbm_gib is not None:
        target = aot.dataclasses.replace(target, hbm_bytes=int(args.hbm_gib * aot.GIB))
    lowered, _, _, mesh = aot.lower_train_step(model, data, tx, target, mesh_shape,
                                               opts["num_microbatches"], trainable, len(tasks))
    mesh_sizes = [int(mesh.shape[a]) for a in mesh.axis_names]
    try:
        compiled = lowered.compile()
    except Exception as e:      # noqa: BLE001 - only the compiler's out-of-memory is a report
        short = aot.out_of_memory(e)
        if short is None:
            raise
        rep = {"target": target.name, "devices": len(target.devices), "mesh": mesh_sizes,
               "fits": False, "compiler": short}
        print(json.dumps(rep) if args.json else
              f"target: {target.name}, {len(target.devices)} devices, mesh data x fsdp x "
              f"model = {' x '.join(map(str, mesh_sizes))}\ndoes not fit: {short}")
        return 3
    rep = aot.report(compiled, target, aot.model_flops(model, data))
    rep["mesh"] = mesh_sizes
    if args.json:
        print(json.dumps(rep))
    else:
        print(aot.format_report(rep, rep["mesh"]))
    return 0 if rep["fits"] in (True, None) else 3
