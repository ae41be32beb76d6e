"""Ahead-of-time compilation of a run's train step for hardware this host
does not have: will the config fit on the pod before the pod is rented?

Targets:

* a TPU slice by its Cloud name (`v4-8`, `v4-128`, `v5p-8`, `v5e-16`,
  `v5e-256`, `v6e-16`, ...): compiled by libtpu's compiler through
  `jax.experimental.topologies` on this CPU host, no TPU attached (MaxText's
  train_compile does the same). Needs the `libtpu` package
  (`pip install libtpu==0.0.42.1`, the version jax 0.10.2 names).
* N devices of this host's CPU (`cpu_devices`): the fallback without libtpu,
  and the stand-in for a GPU count (XLA's GPU compiler needs a GPU). Memory
  is then the CPU backend's buffer assignment for the same sharded program,
  an estimate of an accelerator's.

The step compiled is the trainer's own (`make_train_step` + `jit_train_step`
with the state's shardings from the logical axis rules, the mesh over the
target's devices, the batch of the run's DataConfig), on abstract inputs:
nothing is allocated and no data is read.

Report (per device): arguments (params + optimizer state + batch shards),
outputs, the part of them aliased to donated arguments, temporaries, code;
total = arguments + outputs - aliased + temporaries + code, against the
device's HBM. FLOPs: a T5's analytic matmul FLOPs (t5mtl.models.flops) over
the devices; XLA's cost analysis counts a while loop's body once (a scanned
stack of 24 layers as one), so it is reported beside them, and alone for
other models.
When even the compiler cannot fit the program (TPU: RESOURCE_EXHAUSTED
while assigning HBM), its own message is the report ("does not fit").
Collective bytes are the sizes of the results of every all-reduce,
all-gather, reduce-scatter, all-to-all and collective-permute in the
optimized HLO, each counted as many times as it runs: inside a while loop
(scanned layers, microbatches) times its trip count (XLA's known_trip_count,
else N of the loop condition's `i < N`, as TPU programs give it).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from t5mtl.errors import T5mtlError

GIB = 1 << 30
LIBTPU_PIN = "libtpu==0.0.42.1"


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
    topology_prefix: str
    hbm_bytes: int            # per device (a megacore chip is one device)
    cores_per_chip: int       # the Cloud name counts cores for v4 / v5p, chips otherwise
    dims: int                 # 3-D torus (v4, v5p) or 2-D (v5e, v6e)


TPU_GENERATIONS = {
    "v4": TpuGeneration("v4", 32 * GIB, 2, 3),
    "v5p": TpuGeneration("v5p", 95 * GIB, 2, 3),
    "v5e": TpuGeneration("v5e", 16 * GIB, 1, 2),
    "v6e": TpuGeneration("v6e", 32 * GIB, 1, 2),
}


@dataclasses.dataclass(frozen=True)
class Target:
    name: str                 # "v5e-16" or "cpu x8"
    devices: tuple
    hbm_bytes: int | None     # per device; None: not known (CPU)
    topology: str = ""


def _torus(chips: int, dims: int) -> tuple[int, ...]:
    """Cloud TPU slice shapes: 2-D 2x2, 2x4, 4x4, 4x8, ...; 3-D 2x2x1,
    2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8, ... (powers of two, grown smallest
    dimension first)."""
    shape = [1] * dims
    if chips >= 4:
        shape[0] = shape[1] = 2
        chips //= 4
    elif chips == 2:
        shape[0] = 2
        chips = 1
    while chips > 1:
        i = int(np.argmin(shape))
        shape[i] *= 2
        chips //= 2
    if dims == 3:
        shape = sorted(shape[:2]) + [shape[2]] if shape[2] == 1 else sorted(shape)
    else:
        shape = sorted(shape)
    return tuple(shape)


def tpu_topology(name: str) -> tuple[TpuGeneration, str]:
    """"v5e-16" -> (its generation, "v5e:4x4")."""
    match = re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)", name.strip().lower())
    if not match:
        raise T5mtlError(f"TPU topology {name!r}: expected <generation>-<size> with generation "
                         f"one of {', '.join(TPU_GENERATIONS)} (e.g. v4-8, v5e-16)")
    gen = TPU_GENERATIONS[match.group(1)]
    size = int(match.group(2))
    if size % gen.cores_per_chip:
        raise T5mtlError(f"TPU topology {name!r}: {gen.topology_prefix} sizes count "
                         f"{gen.cores_per_chip} cores per chip")
    chips = size // gen.cores_per_chip
    if chips < 1 or chips & (chips - 1):
        raise T5mtlError(f"TPU topology {name!r}: {chips} chips; slices come in powers of two")
    shape = _torus(chips, gen.dims)
    return gen, f"{gen.topology_prefix}:{'x'.join(map(str, shape))}"


def tpu_target(name: str) -> Target:
    gen, topology = tpu_topology(name)
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")    # no metadata server: not on a TPU VM
    # libtpu takes /tmp/libtpu_lockfile for the chips it drives; compiling
    # drives none, so several compiles (or a stale lock) may share the host.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        from jax.experimental import topologies
        kwargs = {"chip_config_name": "megacore"} if gen.cores_per_chip == 2 else {}
        desc = topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs)
    except Exception as e:      # noqa: BLE001 - libtpu missing or refusing: say which
        raise T5mtlError(f"cannot compile for TPU {name} ({topology}) on this host: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; install "
                         f"{LIBTPU_PIN} or use --cpu_devices N") from e
    return Target(name, tuple(desc.devices), gen.hbm_bytes, topology)


def cpu_target(count: int, hbm_gib: float | None = None) -> Target:
    devices = [d for d in jax.devices() if d.platform == "cpu"]
    if len(devices) != count:
        raise T5mtlError(f"--cpu_devices {count}: this process has {len(devices)} CPU devices; "
                         f"set XLA_FLAGS=--xla_force_host_platform_device_count={count} before "
                         f"JAX starts")
    return Target(f"cpu x{count}", tuple(devices),
                  None if hbm_gib is None else int(hbm_gib * GIB))


# -- the step -------------------------------------------------------------------------

def abstract_batch(model, data, num_tasks: int) -> dict:
    """The global batch the run's converter makes, as int32 ShapeDtypeStructs
    (token features only)."""
    converter = model.feature_converter(data.pack, ("decoder_task_ids",) if num_tasks > 1 else ())
    lengths = converter.get_model_feature_lengths(dict(data.task_feature_lengths))
    bad = [k for k, f in converter.MODEL_FEATURES.items() if f.dtype.name != "int32"]
    if bad:
        raise T5mtlError(f"t5mtl compile builds token batches only; {type(model).__name__}'s "
                         f"features {bad} are not int32 ids")
    return {k: jax.ShapeDtypeStruct((data.batch_size, int(n)), np.int32)
            for k, n in lengths.items()}


def lower_train_step(model, data, tx, target: Target, mesh_shape: Sequence[int],
                     num_microbatches: int = 1, trainable_names=None, num_tasks: int = 1):
    """The trainer's jitted step lowered for `target` on abstract inputs:
    (lowered, abstract state, abstract batch, mesh)."""
    from t5mtl.train import partitioning
    from t5mtl.train.train_step import (TrainState, jit_train_step, make_train_step,
                                        train_state_shardings)
    from flax import linen as nn
    mesh = partitioning.create_mesh(mesh_shape, devices=target.devices)
    rules = partitioning.logical_axis_rules()
    if data.batch_size % (mesh.shape["data"] * mesh.shape["fsdp"]):
        raise T5mtlError(f"batch_size {data.batch_size} does not divide over the mesh's "
                         f"data x fsdp = {mesh.shape['data'] * mesh.shape['fsdp']} devices")
    key = jax.ShapeDtypeStruct((2,), np.uint32)        # no concrete array near the target
    with partitioning.mesh_context(mesh, rules):
        boxed = jax.eval_shape(model.init_boxed, key)
        param_shardings = partitioning.logical_to_shardings(
            partitioning.logical_partition_specs(boxed), mesh, rules)
        abstract_params = jax.eval_shape(lambda r: nn.unbox(model.init_boxed(r)), key)
        shardings = train_state_shardings(tx, abstract_params, param_shardings, mesh,
                                          trainable_names)
        state = jax.eval_shape(lambda p, k: TrainState.create(p, tx, k, trainable_names),
                               abstract_params, key)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         state, shardings)
    batch_sharding = partitioning.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
             for k, v in abstract_batch(model, data, num_tasks).items()}
    step = jit_train_step(
        make_train_step(functools.partial(model.loss_fn, num_tasks=num_tasks), tx,
                        num_microbatches=num_microbatches,
                        loss_denominator_fn=functools.partial(model.loss_denominator,
                                                              num_tasks=num_tasks),
                        trainable_names=trainable_names),
        shardings, batch_sharding, mesh, rules)
    return step.lower(state, batch), state, batch, mesh


# -- the report -----------------------------------------------------------------------

_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+([\w\-]+)\(")
_HEADER = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"\b(body|to_apply|calls|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIPS = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')
_CONDITION = re.compile(r"\bcondition=%?([\w.\-]+)")
_INT_CONSTANT = re.compile(r"^\s*%?([\w.\-]+)\s*=\s*[su]\d+\[\][^ ]*\s+constant\((\d+)\)")
_LESS_THAN = re.compile(r"^\s*ROOT\s.*compare\(%?[\w.\-]+,\s*%?([\w.\-]+)\),\s*direction=LT")


def _shape_bytes(text: str) -> int:
    return sum(_DTYPE_BYTES[t] * math.prod(int(d) for d in dims.split(",") if d)
               for t, dims in _SHAPE.findall(text))


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """{op: bytes of its results per run of the program} (module docstring)."""
    own: dict[str, dict[str, int]] = {}
    calls: dict[str, list[tuple[str, int | str]]] = {}
    constants: dict[str, dict[str, int]] = {}
    limits: dict[str, int] = {}       # condition computation -> N of `i < N`
    entry, current = None, None
    for line in hlo_text.splitlines():
        header = _HEADER.match(line)
        if header and "=" not in line.split("{")[0].split("(")[0]:
            current = header.group(1)
            own[current], calls[current], constants[current] = {}, [], {}
            if line.lstrip().startswith("ENTRY"):
                entry = current
            continue
        if current is None:
            continue
        constant = _INT_CONSTANT.match(line)
        if constant:
            constants[current][constant.group(1)] = int(constant.group(2))
        less = _LESS_THAN.match(line)
        if less and less.group(1) in constants[current]:
            limits[current] = constants[current][less.group(1)]
        instr = _INSTR.match(line)
        if not instr:
            continue
        shape, op = instr.groups()
        base = op[:-len("-start")] if op.endswith("-start") else op
        if base in _COLLECTIVES:
            if op.endswith("-start") and shape.startswith("("):
                # async start: (operands..., results...) - the results are the second half
                parts = _SHAPE.findall(shape)
                shape = " ".join(f"{t}[{d}]" for t, d in parts[len(parts) // 2:])
            own[current][base] = own[current].get(base, 0) + _shape_bytes(shape)
        times: int | str = 1
        if op == "while":
            # the trip count XLA knows, else `i < N` in the loop's condition
            trips, condition = _TRIPS.search(line), _CONDITION.search(line)
            times = int(trips.group(1)) if trips else (condition.group(1) if condition else 1)
        for kind, name in _CALLS.findall(line):
            calls[current].append((name, times if kind == "body" else 1))
        for group in _BRANCHES.findall(line):
            calls[current] += [(n.strip().lstrip("%"), 1) for n in group.split(",") if n.strip()]

    @functools.lru_cache(maxsize=None)
    def total(name: str) -> tuple:
        out = dict(own.get(name, {}))
        for callee, times in calls.get(name, []):
            if isinstance(times, str):
                times = limits.get(times, 1)
            for op, n in total(callee):
                out[op] = out.get(op, 0) + times * n
        return tuple(sorted(out.items()))

    return dict(total(entry)) if entry else {}


def model_flops(model, data) -> float | None:
    """Analytic FLOPs of one train step over the global batch, for T5
    encoder-decoders (t5mtl.models.flops; packed rows are full); None for
    other models."""
    from t5mtl.models.config import T5Config
    from t5mtl.models.flops import t5_train_flops
    config = getattr(model, "config", None)
    lengths = dict(data.task_feature_lengths)
    if not isinstance(config, T5Config) or set(lengths) != {"inputs", "targets"}:
        return None
    return t5_train_flops(config, data.batch_size, lengths["inputs"], lengths["targets"])


def report(compiled, target: Target, step_flops: float | None = None) -> dict:
    """Per-device memory, FLOPs and collective bytes of a compiled step;
    `step_flops` (analytic, whole batch) is split over the devices, else
    XLA's count is reported (a loop body counted once)."""
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    out = {"target": target.name, "topology": target.topology, "devices": len(target.devices),
           "hbm_bytes": target.hbm_bytes,
           "argument_bytes": int(mem.argument_size_in_bytes),
           "output_bytes": int(mem.output_size_in_bytes),
           "alias_bytes": int(mem.alias_size_in_bytes),
           "temp_bytes": int(mem.temp_size_in_bytes),
           "code_bytes": int(mem.generated_code_size_in_bytes),
           "flops": (step_flops / len(target.devices) if step_flops is not None
                     else float(cost.get("flops", 0.0))),
           "flops_source": "analytic" if step_flops is not None else "xla",
           "xla_flops": float(cost.get("flops", 0.0)),
           "collective_bytes": collective_bytes(compiled.as_text())}
    out["total_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
                          + out["temp_bytes"] + out["code_bytes"])
    out["fits"] = None if target.hbm_bytes is None else out["total_bytes"] <= target.hbm_bytes
    return out


def out_of_memory(error: BaseException) -> str | None:
    """The compiler's own "does not fit" (TPU: RESOURCE_EXHAUSTED while
    assigning HBM) as one line, or None for any other error."""
    text = str(error)
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    line = next((ln for ln in text.splitlines() if "RESOURCE_EXHAUSTED" in ln), text)
    return line[line.index("RESOURCE_EXHAUSTED"):].strip()


def _gib(n: float) -> str:
    """Bytes in GiB, or MiB below 1 GiB."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / (1 << 20):.1f} MiB"


def format_report(rep: Mapping[str, Any], mesh_shape: Sequence[int]) -> str:
    lines = [f"target: {rep['target']}" + (f" (topology {rep['topology']})" if rep["topology"]
                                            else "") + f", {rep['devices']} devices, mesh "
             f"data x fsdp x model = {' x '.join(map(str, mesh_shape))}",
             f"per device: arguments {_gib(rep['argument_bytes'])}, outputs "
             f"{_gib(rep['output_bytes'])} ({_gib(rep['alias_bytes'])} aliased to donated "
             f"arguments), temporaries {_gib(rep['temp_bytes'])}, code "
             f"{_gib(rep['code_bytes'])}",
             f"step: {rep['flops'] / 1e12:.3f} TFLOP per device ("
             + ("analytic matmul FLOPs" if rep["flops_source"] == "analytic"
                else "XLA's count, loop bodies once") + "); collectives per device: " +
             (", ".join(f"{op} {_gib(n)}" for op, n in sorted(rep["collective_bytes"].items()))
              or "none")]
    total, hbm = rep["total_bytes"], rep["hbm_bytes"]
    if hbm is None:
        lines.append(f"total: {_gib(total)} per device (no HBM size for this target: "
                     f"--hbm_gib to compare)")
    elif total <= hbm:
        lines.append(f"total: {_gib(total)} of {_gib(hbm)} HBM per device: fits "
                     f"({100 * total / hbm:.0f}%)")
    else:
        lines.append(f"total: {_gib(total)} of {_gib(hbm)} HBM per device: does not fit, "
                     f"{_gib(total - hbm)} over")
    return "\n".join(lines)
